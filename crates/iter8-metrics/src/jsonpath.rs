//! A small JSONPath subset for picking a value out of an HTTP provider's answer:
//! `$`, `.name`, `['name']` or `["name"]`, and `[N]` (`[-1]` for the last element).

use serde_json::Value;

/// Why a JSON path could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is not in the supported subset.
    #[error("invalid JSON path `{path}`: {reason}")]
    Syntax {
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The document has nothing at the path.
    #[error("nothing at `{0}` in the response")]
    Missing(String),
    /// The value at the path is not a number.
    #[error("the value at `{path}` is not a number: {value}")]
    NotANumber {
        /// The path.
        path: String,
        /// The value found, abbreviated.
        value: String,
    },
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array element; negative counts from the end.
    Index(i64),
}

/// A parsed JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses a path such as `$.data.result[0].value[1]`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let err = |reason: &str| PathError::Syntax {
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut rest = text
            .trim()
            .strip_prefix('$')
            .ok_or_else(|| err("must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() {
                    return Err(err("empty member name after `.`"));
                }
                steps.push(Step::Key(key.to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']').ok_or_else(|| err("unclosed `[`"))?;
                let inner = r[..close].trim();
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                if let Some(key) = quoted {
                    steps.push(Step::Key(key.to_owned()));
                } else {
                    let index = inner
                        .parse::<i64>()
                        .map_err(|_| err("an index must be an integer or a quoted name"))?;
                    steps.push(Step::Index(index));
                }
                rest = &r[close + 1..];
            } else {
                return Err(err("expected `.` or `[`"));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `doc`.
    pub fn select<'v>(&self, doc: &'v Value) -> Result<&'v Value, PathError> {
        let mut cur = doc;
        for step in &self.steps {
            let next = match (step, cur) {
                (Step::Key(k), Value::Object(map)) => map.get(k),
                (Step::Index(i), Value::Array(items)) => {
                    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
                    let at = if *i < 0 { len + i } else { *i };
                    usize::try_from(at).ok().and_then(|at| items.get(at))
                }
                _ => None,
            };
            cur = next.ok_or_else(|| PathError::Missing(self.text.clone()))?;
        }
        Ok(cur)
    }

    /// The number at this path: a JSON number or a string holding one (`"NaN"` parses, and is
    /// left for the caller's data-quality checks).
    pub fn number(&self, doc: &Value) -> Result<f64, PathError> {
        let v = self.select(doc)?;
        as_number(v).ok_or_else(|| PathError::NotANumber {
            path: self.text.clone(),
            value: abbreviate(v),
        })
    }
}

/// A JSON number, or a string holding a number (including `NaN`, `+Inf`).
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A short rendering of a JSON value for messages.
pub fn abbreviate(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prom_doc() -> Value {
        json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.0, "42.5"]}]}})
    }

    #[test]
    fn prometheus_style_path_reads_a_numeric_string() {
        let p = JsonPath::parse("$.data.result[0].value[1]").expect("parses");
        assert_eq!(p.number(&prom_doc()), Ok(42.5));
    }

    #[test]
    fn json_numbers_bracket_names_and_negative_indices_work() {
        let doc = json!({"series": [{"points": [[1, 3], [2, 7]]}], "a.b": {"count": 9}});
        let last = JsonPath::parse("$.series[0].points[-1][1]").expect("parses");
        assert_eq!(last.number(&doc), Ok(7.0));
        let dotted = JsonPath::parse("$['a.b'][\"count\"]").expect("parses");
        assert_eq!(dotted.number(&doc), Ok(9.0));
    }

    #[test]
    fn the_root_path_selects_the_document() {
        let p = JsonPath::parse("$").expect("parses");
        assert_eq!(p.number(&json!(3)), Ok(3.0));
    }

    #[test]
    fn missing_members_and_out_of_range_indices_are_missing() {
        let p = JsonPath::parse("$.data.result[3].value[1]").expect("parses");
        assert!(matches!(p.number(&prom_doc()), Err(PathError::Missing(_))));
        let p = JsonPath::parse("$.data.nothing").expect("parses");
        assert!(matches!(p.number(&prom_doc()), Err(PathError::Missing(_))));
        let p = JsonPath::parse("$.data.result[-9]").expect("parses");
        assert!(matches!(p.select(&prom_doc()), Err(PathError::Missing(_))));
    }

    #[test]
    fn non_numeric_values_are_reported() {
        let p = JsonPath::parse("$.status").expect("parses");
        assert!(matches!(
            p.number(&prom_doc()),
            Err(PathError::NotANumber { .. })
        ));
    }

    #[test]
    fn special_float_strings_parse_for_later_checks() {
        assert!(as_number(&json!("NaN")).is_some_and(f64::is_nan));
        assert_eq!(as_number(&json!("+Inf")), Some(f64::INFINITY));
        assert_eq!(as_number(&json!(true)), None);
    }

    #[test]
    fn malformed_paths_are_rejected() {
        for bad in ["data.x", "$..x", "$[abc]", "$[0", "$.", "$x"] {
            assert!(
                matches!(JsonPath::parse(bad), Err(PathError::Syntax { .. })),
                "{bad} should not parse"
            );
        }
    }
}
