//! Data-quality checks that stop a promotion (never a rollback): sample-ratio mismatch and
//! stale data.
//!
//! * **Sample-ratio mismatch.** The traffic each version saw in the latest interval (the
//!   current cumulative traffic minus the latest history snapshot) is compared with the split
//!   that was meant to apply during that interval. The request's current `weight` is that
//!   split: it is the weight the version has *now*, set after the previous assessment and in
//!   force while the latest interval's data was collected. A chi-square test at
//!   [`SRM_P_VALUE`] over the versions with positive weight flags a mismatch. Only the latest
//!   interval is tested, so that one old glitch does not block the experiment for good, and
//!   only when the split did not change between the two latest intervals: a router applies a
//!   new split and a metrics system scrapes on their own clocks, so the first interval after
//!   a change mixes both splits, and testing it would flag every ramp step.
//! * **Stale data.** A version with positive weight whose traffic did not grow since the
//!   latest snapshot has stale or missing data.

use iter8_api::{AssessmentRequest, Evidence};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::series::{latest_traffic, split_just_changed};

/// The p-value below which a split mismatch is flagged (the industry's usual 0.001).
pub const SRM_P_VALUE: f64 = 0.001;

/// Fewer requests than this in the latest interval are not tested for a mismatch.
const SRM_MIN_REQUESTS: f64 = 100.0;

/// Why the latest data cannot support a promotion, if it cannot.
pub fn problem(req: &AssessmentRequest, evidence: &Evidence) -> Option<String> {
    let latest: Vec<Option<(f64, u32)>> = (0..req.versions.len())
        .map(|v| latest_traffic(evidence, v))
        .collect();
    if let Some(v) = latest
        .iter()
        .position(|l| matches!(l, Some((n, w)) if *w > 0 && *n <= 0.0))
    {
        return Some(format!(
            "the data of {} did not grow since the last iteration although it has traffic; \
             stale or missing data",
            req.versions[v].name
        ));
    }
    let observed: Vec<(f64, f64)> = latest
        .iter()
        .flatten()
        .filter(|(_, w)| *w > 0)
        .map(|&(n, w)| (n, f64::from(w)))
        .collect();
    let total: f64 = observed.iter().map(|(n, _)| n).sum();
    let weights: f64 = observed.iter().map(|(_, w)| w).sum();
    if latest.iter().any(Option::is_none)
        || observed.len() < 2
        || total < SRM_MIN_REQUESTS
        || split_just_changed(evidence)
    {
        return None;
    }
    let p = srm_p_value(&observed, total, weights)?;
    (p < SRM_P_VALUE).then(|| {
        format!(
            "sample-ratio mismatch: the latest interval's traffic does not follow the split \
             (chi-square p = {p:.2e}); the routing or the metrics are off"
        )
    })
}

/// The chi-square goodness-of-fit p-value of counts against intended weights.
fn srm_p_value(observed: &[(f64, f64)], total: f64, weights: f64) -> Option<f64> {
    let statistic: f64 = observed
        .iter()
        .map(|&(n, w)| {
            let expected = total * w / weights;
            (n - expected).powi(2) / expected
        })
        .sum();
    let chi = ChiSquared::new((observed.len() - 1) as f64).ok()?;
    Some(1.0 - chi.cdf(statistic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Traffic `a` and `b` in the latest interval at an 80/20 split, which was `before` in
    /// the interval before.
    fn request_after(before: [u32; 2], a: f64, b: f64) -> AssessmentRequest {
        let version = |name: &str, weight: u32, then: u32, now: f64| {
            json!({"name": name, "weight": weight,
                   "metrics": {"requests": {"counter": 1000.0 + now}},
                   "history": [{"iteration": 1, "weight": then,
                                "metrics": {"requests": {"counter": 1000.0}}}]})
        };
        serde_json::from_value(json!({
            "kind": "canary", "iteration": 2,
            "versions": [version("a", 80, before[0], a), version("b", 20, before[1], b)],
            "ratios": [{"name": "r", "numerator": "requests", "denominator": "requests"}]
        }))
        .expect("decodes")
    }

    fn request(a: f64, b: f64) -> AssessmentRequest {
        request_after([80, 20], a, b)
    }

    fn problem(req: &AssessmentRequest) -> Option<String> {
        let (evidence, _) = crate::series::fold(req, &[], &[]);
        super::problem(req, &evidence)
    }

    #[test]
    fn the_first_interval_after_a_split_change_is_not_tested_for_a_mismatch() {
        assert_eq!(problem(&request_after([90, 10], 3500.0, 500.0)), None);
    }

    #[test]
    fn traffic_that_follows_the_split_passes() {
        assert_eq!(problem(&request(3190.0, 810.0)), None);
    }

    #[test]
    fn traffic_far_from_the_split_is_a_sample_ratio_mismatch() {
        let why = problem(&request(3500.0, 500.0)).expect("mismatch");
        assert!(why.contains("sample-ratio mismatch"), "{why}");
    }

    #[test]
    fn a_version_with_weight_but_no_new_data_is_stale() {
        let why = problem(&request(3200.0, 0.0)).expect("stale");
        assert!(why.contains("stale"), "{why}");
    }

    #[test]
    fn chi_square_p_value_matches_a_known_value() {
        // 60 vs 40 expected 50/50: statistic 4, df 1, p = 0.0455.
        let p = srm_p_value(&[(60.0, 50.0), (40.0, 50.0)], 100.0, 100.0).expect("p");
        assert!((p - 0.0455).abs() < 1e-3, "{p}");
    }
}
