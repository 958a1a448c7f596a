//! A stable digest of a Metric's spec, recorded in `status.metricDigests` when an experiment
//! first reads it, so that a Metric edited mid-run is noticed ([`crate::lifecycle::metrics_checked`]).
//!
//! The digest covers what gives the data its meaning: the metric's type and its provider (the
//! backend's address, the query or URL, method, headers, body, JSON paths). Not its
//! description, units, timeout or credentials: rewording a description (a chart upgrade of
//! the Metric library) or rotating credentials into a new Secret changes no criterion and
//! must not pause running experiments. It is taken over canonical JSON (object keys sorted
//! at every level, no whitespace), so it does not depend on the order in which fields are
//! declared or a map iterates.

use iter8_crd::MetricSpec;
use serde_json::Value;

/// How many bytes of the SHA-256 the digest keeps: 128 bits, 32 hex characters.
const DIGEST_BYTES: usize = 16;

/// The digest of `spec`: the first 128 bits of the SHA-256 of its canonical JSON, in hex.
pub fn metric_digest(spec: &MetricSpec) -> String {
    // A derived Serialize of plain data cannot fail; `Null` would only make every spec equal
    // to every other, so the fallback is never reached in practice.
    let value = serde_json::json!({"type": spec.kind, "provider": spec.provider});
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    hash.as_ref()[..DIGEST_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends `value` as JSON with the keys of every object sorted.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(value: Value) -> MetricSpec {
        serde_json::from_value(value).expect("valid metric")
    }

    fn latency() -> Value {
        json!({
            "type": "histogram",
            "prometheus": {"query": "sum by (le) (increase(latency_bucket{ {{labels}} }[{{elapsed}}s]))"}
        })
    }

    #[test]
    fn the_digest_is_32_hex_characters_and_stable_across_releases() {
        let d = metric_digest(&metric(
            json!({"type": "counter", "prometheus": {"query": "x"}}),
        ));
        assert_eq!(d.len(), 32);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        // The canonical form is `{"provider":{"prometheus":{"query":"x"}},"type":"counter"}`: a
        // change of this value would make every running experiment see its Metrics as changed.
        assert_eq!(d, "d9e3b53e18e4fcfaa484ac5a0236bf19");
    }

    #[test]
    fn descriptions_units_timeouts_and_credentials_do_not_change_the_digest() {
        let base = latency();
        let original = metric_digest(&metric(base.clone()));
        let edits: [fn(&mut Value); 4] = [
            |m| m["description"] = json!("p95 latency, reworded"),
            |m| m["units"] = json!("ms"),
            |m| m["timeoutSeconds"] = json!(5),
            |m| m["auth"] = json!({"type": "bearer", "secretName": "rotated"}),
        ];
        for edit in edits {
            let mut changed = base.clone();
            edit(&mut changed);
            assert_eq!(
                metric_digest(&metric(changed.clone())),
                original,
                "{changed}"
            );
        }
    }

    #[test]
    fn the_order_keys_are_written_in_does_not_change_the_digest() {
        let a = metric(json!({
            "type": "counter",
            "http": {"url": "http://m/q", "headers": {"b": "2", "a": "1"}, "jsonPath": "$.v"}
        }));
        let b = metric(json!({
            "http": {"jsonPath": "$.v", "headers": {"a": "1", "b": "2"}, "url": "http://m/q"},
            "type": "counter"
        }));
        assert_eq!(metric_digest(&a), metric_digest(&b));
    }

    #[test]
    fn any_change_of_what_the_metric_queries_changes_the_digest() {
        let base = latency();
        let original = metric_digest(&metric(base.clone()));
        let edits: [fn(&mut Value); 4] = [
            |m| m["prometheus"]["query"] = json!("sum(x)"),
            |m| m["prometheus"]["address"] = json!("http://other:9090"),
            |m| m["prometheus"]["query"] = json!("sum by (le) (increase(other_bucket[1m]))"),
            |m| m["type"] = json!("counter"),
        ];
        for edit in edits {
            let mut changed = base.clone();
            edit(&mut changed);
            assert_ne!(
                metric_digest(&metric(changed.clone())),
                original,
                "{changed}"
            );
        }
    }
}
