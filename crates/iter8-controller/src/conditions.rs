//! Status conditions, following the Kubernetes API conventions: one entry per type, a
//! CamelCase reason, and a transition time that moves only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The experiment is progressing normally (or finished cleanly).
pub const READY: &str = "Ready";
/// Every version traffic was about to move to had its Service, and its Deployment (if named)
/// rolled out and Available, when last checked.
pub const VERSIONS_READY: &str = "VersionsReady";
/// No approval gate holds the next split (False while one waits, with the gate named).
pub const GATE_OPEN: &str = "GateOpen";
/// The last call to the analytics service succeeded.
pub const ANALYTICS_AVAILABLE: &str = "AnalyticsAvailable";
/// The last metrics collection had data for every version and metric.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
/// The router carries the split recorded in status.
pub const TRAFFIC_APPLIED: &str = "TrafficApplied";
/// The experiment has ended.
pub const COMPLETED: &str = "Completed";

/// Sets condition `type_`, keeping its transition time when the status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Whether condition `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).expect("valid"))
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conds = Vec::new();
        set(&mut conds, READY, true, "Running", "ok", Some(1), &at(10));
        set(
            &mut conds,
            READY,
            true,
            "Running",
            "still ok",
            Some(2),
            &at(20),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "still ok");
        set(
            &mut conds,
            READY,
            false,
            "AnalyticsUnavailable",
            "down",
            Some(2),
            &at(30),
        );
        assert_eq!(conds[0].last_transition_time, at(30));
        assert!(!is_true(&conds, READY));
    }
}
