//! What must hold for any request body, shared by the property tests (`tests/properties.rs`)
//! and the `cargo fuzz` targets (`fuzz/`): decoding, validation and the engine never panic;
//! every refusal is a 4xx naming a field the request has, with a reason; every answer has a
//! split over the request's versions summing to 100, probabilities in [0, 1] and only finite
//! numbers.

use iter8_api::{AssessmentRequest, AssessmentResponse, InvalidRequest};
use serde_json::Value;

/// How a body fared; the property tests count these to show every path was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not JSON, or not an assessment request (400 or 422 from decoding).
    Undecodable,
    /// Decoded, then refused by `validate` (422).
    Invalid,
    /// Assessed by the engine (200).
    Assessed,
}

/// Decodes `body` as the server does, then validates and assesses it; panics when an
/// invariant fails.
pub fn check_body(body: &[u8]) -> Outcome {
    let request = match iter8_analytics::app::decode(body) {
        Ok(request) => request,
        Err(err) => {
            let status = err.status();
            assert!(
                status.is_client_error(),
                "decoding answered {status} ({err})"
            );
            let refusal = err.to_invalid_request();
            assert_names_a_reason(&refusal);
            // A 422 points into the document; a 400 names where parsing stopped.
            if status.as_u16() == 422
                && let Ok(document) = serde_json::from_slice::<Value>(body)
            {
                assert_field_in(&refusal, &document);
            }
            return Outcome::Undecodable;
        }
    };
    check_request(&request)
}

/// Validates and assesses a decoded request; panics when an invariant fails.
pub fn check_request(request: &AssessmentRequest) -> Outcome {
    if let Err(refusal) = request.validate() {
        assert_names_a_reason(&refusal);
        let document = serde_json::to_value(request).expect("a request serializes");
        assert_field_in(&refusal, &document);
        assert_eq!(
            iter8_engine::assess(request).err(),
            Some(refusal),
            "the engine refuses what validate refuses, the same way"
        );
        return Outcome::Invalid;
    }
    let response = match iter8_engine::assess(request) {
        Ok(response) => response,
        Err(refusal) => panic!("validate accepted a request the engine refused: {refusal}"),
    };
    let checked = std::panic::catch_unwind(|| check_response(request, &response));
    if let Err(panic) = checked {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        panic!(
            "{why}\nrequest: {}",
            serde_json::to_string(request).unwrap_or_default()
        );
    }
    Outcome::Assessed
}

/// The answer's shape and numbers.
fn check_response(request: &AssessmentRequest, response: &AssessmentResponse) {
    let names: Vec<&str> = request.versions.iter().map(|v| v.name.as_str()).collect();
    let split: Vec<&str> = response.split.iter().map(|w| w.version.as_str()).collect();
    assert_eq!(split, names, "the split covers every version, in order");
    let total: u32 = response.split.iter().map(|w| w.weight).sum();
    assert_eq!(total, 100, "split {:?}", response.split);
    assert_eq!(response.versions.len(), request.versions.len());
    for v in &response.versions {
        probability(
            &v.name,
            "probabilityAllCriteria",
            v.probability_all_criteria,
        );
        probability(&v.name, "winProbability", v.win_probability);
        if let Some(p) = v.probability_beats_baseline {
            probability(&v.name, "probabilityBeatsBaseline", p);
        }
        for c in &v.criteria {
            probability(&v.name, &c.criterion, c.probability);
        }
        for m in &v.metrics {
            finite(&v.name, &m.metric, m.sample_size);
            assert!(m.sample_size >= 0.0, "{}: {} sample size", v.name, m.metric);
            if let Some(x) = m.value {
                finite(&v.name, &m.metric, x);
            }
            if let Some(i) = m.credible_interval {
                finite(&v.name, &m.metric, i.lower);
                finite(&v.name, &m.metric, i.upper);
                assert!(
                    i.lower <= i.upper,
                    "{}: {} interval {i:?}",
                    v.name,
                    m.metric
                );
            }
        }
    }
    if let Some(w) = &response.winner {
        assert!(names.contains(&w.version.as_str()), "winner {w:?}");
        probability(&w.version, "winner", w.probability);
    }
    if let Some(v) = &response.decision.version {
        assert!(
            names.contains(&v.as_str()),
            "decision {:?}",
            response.decision
        );
    }
    // What the server sends must read back (JSON has no NaN: it would be written as null).
    let json = serde_json::to_vec(response).expect("a response serializes");
    let back: Result<AssessmentResponse, _> = serde_json::from_slice(&json);
    assert!(back.is_ok(), "the answer does not read back: {back:?}");
}

fn probability(version: &str, what: &str, p: f64) {
    assert!(
        (0.0..=1.0).contains(&p),
        "{version}: {what} = {p} is not a probability"
    );
}

fn finite(version: &str, what: &str, x: f64) {
    assert!(x.is_finite(), "{version}: {what} = {x} is not finite");
}

fn assert_names_a_reason(refusal: &InvalidRequest) {
    assert!(!refusal.field.trim().is_empty(), "no field: {refusal:?}");
    assert!(refusal.reason.trim().len() >= 5, "no reason: {refusal:?}");
}

/// The refusal's field is `body`, or a path into `document`: keys and indices that exist,
/// except that the last key may be one the request lacks (`criteria.rewards`, a missing
/// `quantile`), and `[]` stands for every element.
pub fn assert_field_in(refusal: &InvalidRequest, document: &Value) {
    if refusal.field == "body" {
        return;
    }
    if let Err(why) = resolve(&refusal.field, document) {
        panic!("{refusal:?} names no field of the request: {why}\n{document}");
    }
}

fn resolve(path: &str, node: &Value) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    let path = path.strip_prefix('.').unwrap_or(path);
    // An object's key may itself start with `[` (an unknown key `[count`, found by fuzzing).
    if let Some(rest) = path.strip_prefix('[').filter(|_| node.is_array()) {
        let (index, rest) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {path:?}"))?;
        let items = node
            .as_array()
            .ok_or_else(|| format!("[{index}] applied to {node}"))?;
        if index.is_empty() {
            return items.iter().try_for_each(|item| resolve(rest, item));
        }
        let i: usize = index.parse().map_err(|_| format!("bad index {index:?}"))?;
        let item = items
            .get(i)
            .ok_or_else(|| format!("index {i} of {} items", items.len()))?;
        return resolve(rest, item);
    }
    let map = node
        .as_object()
        .ok_or_else(|| format!("key {path:?} applied to {node}"))?;
    // Keys (metric names) may themselves hold dots or brackets: take the longest key that
    // the path starts with and that ends where a path segment ends.
    let key = map
        .keys()
        .filter(|k| {
            path.strip_prefix(k.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
        .max_by_key(|k| k.len());
    match key {
        Some(k) => resolve(&path[k.len()..], &map[k]),
        // Naming an absent field is fine only at the end of the path.
        None if !path.contains('.') => Ok(()),
        None => Err(format!("no key starts {path:?}")),
    }
}
