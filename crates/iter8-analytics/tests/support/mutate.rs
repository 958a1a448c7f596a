//! Bodies that are almost right: a valid request with one JSON value replaced, a key removed
//! or added, or a few bytes changed, so that every decoding and validation error is reached.

use arbitrary::{Result, Unstructured};
use serde_json::{Value, json};

/// The example request of the OpenAPI document and the docs.
pub const EXAMPLE: &str = include_str!("../../../../docs/examples/assessment-request.json");

/// `body` with a few edits, each at the JSON level (most) or the byte level.
pub fn body(u: &mut Unstructured, body: &[u8]) -> Result<Vec<u8>> {
    let mut document: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    for _ in 0..u.int_in_range(1..=3)? {
        edit_value(u, &mut document)?;
    }
    let mut bytes = serde_json::to_vec(&document).unwrap_or_default();
    if u.ratio(1, 8)? {
        for _ in 0..u.int_in_range(1..=4)? {
            edit_bytes(u, &mut bytes)?;
        }
    }
    Ok(bytes)
}

/// Walks to a random node and replaces it, or removes or adds a key there.
fn edit_value(u: &mut Unstructured, node: &mut Value) -> Result<()> {
    let descend = u.ratio(4, 5)?;
    match node {
        Value::Object(map) if descend && !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = u.choose(&keys)?.clone();
            match u.int_in_range(0..=9)? {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(u.choose(&ODD_KEYS)?.to_string(), replacement(u)?);
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        edit_value(u, child)?;
                    }
                }
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = u.choose_index(items.len())?;
            match u.int_in_range(0..=9)? {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    items.push(copy);
                }
                _ => edit_value(u, &mut items[i])?,
            }
        }
        _ => *node = replacement(u)?,
    }
    Ok(())
}

const ODD_KEYS: [&str; 6] = ["wieght", "", "kind", "le", "counter", "\u{0}"];

/// A value of the wrong type, out of range, or at the edge of what JSON and f64 hold.
fn replacement(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=19)? {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1.7976931348623157e308),
        5 => json!(u64::MAX),
        6 => json!(i64::MIN),
        7 => json!("NaN"),
        8 => json!("+Inf"),
        9 => json!("-Inf"),
        10 => json!([]),
        11 => json!({}),
        12 => json!("x".repeat(300)),
        13 => json!(5e-324),
        14 => json!(0.5),
        15 => json!(100),
        16 => json!(101),
        17 => json!({"counter": 1}),
        18 => json!([{"le": "+Inf", "count": 1}]),
        _ => json!(u.arbitrary::<String>()?),
    })
}

/// Overwrites, inserts or deletes a byte, or splices in a token JSON parsers find hard.
fn edit_bytes(u: &mut Unstructured, bytes: &mut Vec<u8>) -> Result<()> {
    if bytes.is_empty() {
        bytes.push(u.arbitrary()?);
        return Ok(());
    }
    let at = u.choose_index(bytes.len())?;
    match u.int_in_range(0..=3)? {
        0 => bytes[at] = u.arbitrary()?,
        1 => bytes.insert(at, u.arbitrary()?),
        2 => {
            bytes.remove(at);
        }
        _ => {
            let token = u.choose(&TOKENS)?;
            bytes.splice(at..at, token.bytes());
        }
    }
    Ok(())
}

const TOKENS: [&str; 8] = [
    "1e999",
    "-0",
    "\"\\ud800\"",
    "[[[[",
    "}",
    "NaN",
    "\u{feff}",
    ",",
];
