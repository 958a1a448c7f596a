//! Notifications as pure functions: which notifications an Event of the lifecycle stands for,
//! what they say (a CloudEvents 1.0 event or a Slack message), how a body is signed, when a
//! failed delivery is tried again, and the condition that reports delivery. No I/O: the
//! [`crate::notifier`] sends, off the reconcile path; nothing here can change a decision.

use std::time::Duration;

use iter8_api::{Decision, VersionWeight};
use iter8_crd::{
    Experiment, ExperimentStatus, NotificationFormat, NotificationKind, NotificationReceiver, Phase,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::lifecycle::{Note, Stamp};

/// The condition that says whether the last notification reached every receiver.
pub const NOTIFICATIONS_DELIVERED: &str = "NotificationsDelivered";

/// The header carrying the body's HMAC-SHA256 signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Iter8-Signature";

/// The CloudEvents `type` prefix; the kind follows, e.g. `tools.iter8.experiment.promote`.
pub const EVENT_TYPE_PREFIX: &str = "tools.iter8.experiment.";

/// The notifications an Event of the lifecycle stands for, in the order to send them. The
/// lifecycle decides; this only names what it decided. `phase` is the experiment's phase
/// after the transition (a failure policy that rolls back ends the experiment, one that
/// pauses does not).
pub fn kinds_for(note: &Note, phase: Phase) -> &'static [NotificationKind] {
    use NotificationKind::*;
    match note.reason {
        "Started" => &[Start],
        "Iteration" => &[Iteration],
        "Promoted" => &[Promote, End],
        "RolledBack" => &[Rollback, End],
        "Inconclusive" | "Completed" | "Terminated" => &[End],
        "FailurePolicy" if phase.is_terminal() => &[Failure, End],
        // Paused until a person acts.
        "FailurePolicy" | "StatusTooLarge" | "MetricChanged" => &[Failure],
        "AwaitingApproval" => &[GateWaiting],
        _ => &[],
    }
}

/// The receivers of `kind` for an experiment: its own list, or the controller's defaults when
/// it has none (an empty list means none at all).
pub fn receivers_of<'a>(
    exp: &'a Experiment,
    defaults: &'a [NotificationReceiver],
    kind: NotificationKind,
) -> Vec<&'a NotificationReceiver> {
    exp.spec
        .notifications
        .as_deref()
        .unwrap_or(defaults)
        .iter()
        .filter(|r| r.events.contains(&kind))
        .collect()
}

/// What one notification says, whatever its format.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// What it announces.
    pub kind: NotificationKind,
    /// Unique per experiment, spec generation, iteration and kind: a retry, or the same
    /// notification sent again by a restarted controller, carries the same id, so a receiver
    /// can drop repeats.
    pub id: String,
    /// The experiment's name.
    pub experiment: String,
    /// Its namespace.
    pub namespace: String,
    /// Its phase after the transition.
    pub phase: Phase,
    /// Completed iterations.
    pub iteration: u32,
    /// The latest decision, if any.
    pub decision: Option<Decision>,
    /// Why: the Event's message.
    pub reason: String,
    /// The split in force.
    pub weights: Vec<VersionWeight>,
    /// The version declared best, if any.
    pub winner: Option<String>,
    /// When (RFC 3339).
    pub time: String,
}

impl Notification {
    /// The notification of `kind` for `note`, about `exp` as just written.
    pub fn of(kind: NotificationKind, exp: &Experiment, note: &Note, at: &Stamp) -> Self {
        let status = exp.status.clone().unwrap_or_default();
        let uid = exp.meta().uid.clone().unwrap_or_else(|| crate::key(exp));
        Self {
            kind,
            id: format!(
                "{uid}.{}.{}.{}",
                exp.meta().generation.unwrap_or_default(),
                status.completed_iterations,
                kind.as_str()
            ),
            experiment: exp.name_any(),
            namespace: exp.namespace().unwrap_or_default(),
            phase: status.phase,
            iteration: status.completed_iterations,
            decision: status.decision,
            reason: note.message.clone(),
            weights: status.weights,
            winner: status.winner.map(|w| w.version),
            time: at.now.0.to_string(),
        }
    }

    /// The body and its content type in `format`.
    pub fn body(&self, format: NotificationFormat) -> (&'static str, Vec<u8>) {
        let (content_type, value) = match format {
            NotificationFormat::CloudEvents => ("application/cloudevents+json", self.cloud_event()),
            NotificationFormat::Slack => ("application/json", self.slack()),
        };
        // Serialising a Value cannot fail.
        (content_type, serde_json::to_vec(&value).unwrap_or_default())
    }

    /// A CloudEvents 1.0 event in structured mode.
    pub fn cloud_event(&self) -> Value {
        json!({
            "specversion": "1.0",
            "id": self.id,
            "source": format!(
                "/apis/iter8.tools/v3alpha1/namespaces/{}/experiments/{}",
                self.namespace, self.experiment
            ),
            "type": format!("{EVENT_TYPE_PREFIX}{}", self.kind.as_str()),
            "subject": self.experiment,
            "time": self.time,
            "datacontenttype": "application/json",
            "data": {
                "experiment": self.experiment,
                "namespace": self.namespace,
                "phase": self.phase,
                "iteration": self.iteration,
                "decision": self.decision,
                "reason": self.reason,
                "weights": self.weights,
                "winner": self.winner,
            }
        })
    }

    /// A Slack-compatible message: one line of what happened, one of why.
    pub fn slack(&self) -> Value {
        let split = self
            .weights
            .iter()
            .map(|w| format!("{}={}", w.version, w.weight))
            .collect::<Vec<_>>()
            .join(", ");
        let headline = match (self.kind, &self.decision) {
            (NotificationKind::Promote, Some(d)) => format!(
                "promoted {}",
                d.version.as_deref().unwrap_or("the candidate")
            ),
            (NotificationKind::Rollback, _) => "rolled back".to_owned(),
            (NotificationKind::Start, _) => "started".to_owned(),
            (NotificationKind::Iteration, _) => format!("iteration {}", self.iteration),
            (NotificationKind::Failure, _) => "failed".to_owned(),
            (NotificationKind::GateWaiting, _) => "waiting for approval".to_owned(),
            (NotificationKind::End, _) => format!("ended ({})", self.phase),
            (NotificationKind::Promote, None) => "promoted".to_owned(),
        };
        json!({
            "text": format!(
                "iter8 experiment {}/{} {headline} at iteration {}: {}\nsplit: {split}",
                self.namespace, self.experiment, self.iteration, self.reason
            )
        })
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body` signed with `key`: `sha256=` and the
/// lowercase hex HMAC-SHA256 (RFC 2104) of the exact bytes sent.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The waits before each retry: `first`, then twice the previous one, at most `cap`.
pub fn retry_delays(first: Duration, cap: Duration, retries: u32) -> Vec<Duration> {
    (0..retries)
        .map(|n| first.saturating_mul(2u32.saturating_pow(n)).min(cap))
        .collect()
}

/// The longest one attempt may take. A worker sends an experiment's notifications one after
/// another and serves other experiments too: an author's `timeout` must not hold it for hours.
pub const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The time one attempt may take, from a receiver's `timeout`: more than zero, at most
/// [`MAX_ATTEMPT_TIMEOUT`]; otherwise why not, naming the field.
pub fn attempt_timeout(timeout: &str) -> Result<Duration, String> {
    let parsed = iter8_crd::duration::parse(timeout).map_err(|e| format!("timeout: {e}"))?;
    if parsed.is_zero() || parsed > MAX_ATTEMPT_TIMEOUT {
        return Err(format!(
            "timeout {timeout:?}: must be more than 0s and at most {}s",
            MAX_ATTEMPT_TIMEOUT.as_secs()
        ));
    }
    Ok(parsed)
}

/// How the last notification of an experiment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every receiver answered 2xx.
    Delivered,
    /// A receiver did not take it, after its retries.
    Failed {
        /// The receiver's name.
        receiver: String,
        /// CamelCase: `NotAllowed`, `InvalidTimeout`, `SecretUnavailable`, `Unreachable`,
        /// `Rejected`, `Dropped`.
        reason: &'static str,
        /// What went wrong (never the URL: it may carry a token).
        message: String,
    },
}

/// `status` with the `NotificationsDelivered` condition saying `delivery`, or `None` when it
/// says so already (no write needed).
pub fn with_delivery(
    status: &ExperimentStatus,
    delivery: &Delivery,
    at: &Stamp,
) -> Option<ExperimentStatus> {
    let (value, reason, message) = match delivery {
        Delivery::Delivered => (
            "True",
            "Delivered",
            "the last notification reached every receiver".to_owned(),
        ),
        Delivery::Failed {
            receiver,
            reason,
            message,
        } => ("False", *reason, format!("receiver {receiver}: {message}")),
    };
    let current = status
        .conditions
        .iter()
        .find(|c| c.type_ == NOTIFICATIONS_DELIVERED);
    if current.is_some_and(|c| c.status == value && c.reason == reason && c.message == message) {
        return None;
    }
    let mut status = status.clone();
    conditions::set(
        &mut status.conditions,
        NOTIFICATIONS_DELIVERED,
        value == "True",
        reason,
        message,
        at.generation,
        &at.now,
    );
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iter8_api::Action;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn note(reason: &'static str, message: &str) -> Note {
        Note {
            warning: false,
            reason,
            action: "Iterate",
            message: message.into(),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            now: Time(Timestamp::from_second(1_800_000_000).expect("valid")),
            generation: Some(2),
        }
    }

    fn experiment(notifications: Option<Value>) -> Experiment {
        serde_json::from_value(json!({
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
            "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-1", "generation": 2},
            "spec": {
                "kind": "canary",
                "versions": [{"name": "stable", "backend": {"name": "s"}},
                             {"name": "next", "backend": {"name": "n"}}],
                "router": {"httpRoute": {"name": "r"}},
                "notifications": notifications,
            },
            "status": {
                "phase": "Completed",
                "completedIterations": 7,
                "weights": [{"version": "stable", "weight": 0}, {"version": "next", "weight": 100}],
                "decision": {"action": "promote", "version": "next", "reason": "meets every objective"},
                "winner": {"version": "next", "probability": 0.99}
            }
        }))
        .expect("valid experiment")
    }

    #[test]
    fn each_lifecycle_event_maps_to_its_notifications_in_order() {
        use NotificationKind::*;
        let table: [(&'static str, Phase, &[NotificationKind]); 13] = [
            ("Started", Phase::Running, &[Start]),
            ("Iteration", Phase::Running, &[Iteration]),
            ("Promoted", Phase::Completed, &[Promote, End]),
            ("RolledBack", Phase::Completed, &[Rollback, End]),
            ("Inconclusive", Phase::Completed, &[End]),
            ("Terminated", Phase::Aborted, &[End]),
            ("FailurePolicy", Phase::Failed, &[Failure, End]),
            ("FailurePolicy", Phase::Paused, &[Failure]),
            ("StatusTooLarge", Phase::Paused, &[Failure]),
            ("MetricChanged", Phase::Paused, &[Failure]),
            ("AwaitingApproval", Phase::Running, &[GateWaiting]),
            // A single failed attempt is retried: the failure policy decides when it matters.
            ("AnalyticsUnavailable", Phase::Running, &[]),
            ("TrafficDrift", Phase::Running, &[]),
        ];
        for (reason, phase, expected) in table {
            assert_eq!(kinds_for(&note(reason, ""), phase), expected, "{reason}");
        }
    }

    #[test]
    fn an_experiment_without_receivers_uses_the_defaults_and_an_empty_list_silences_them() {
        let defaults: Vec<NotificationReceiver> = serde_json::from_value(json!([
            {"name": "platform", "url": "http://hooks/platform"}
        ]))
        .expect("valid");
        let own = experiment(Some(json!([
            {"name": "team", "url": "http://hooks/team", "events": ["iteration", "end"]}
        ])));
        let names = |exp: &Experiment, kind| -> Vec<String> {
            receivers_of(exp, &defaults, kind)
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(&own, NotificationKind::End), ["team"]);
        assert!(names(&own, NotificationKind::Start).is_empty());
        let mut none = experiment(None);
        assert_eq!(names(&none, NotificationKind::Start), ["platform"]);
        assert!(
            names(&none, NotificationKind::Iteration).is_empty(),
            "iteration is off by default"
        );
        none.spec.notifications = Some(Vec::new());
        assert!(names(&none, NotificationKind::Start).is_empty());
    }

    /// The promotion of `experiment(None)`.
    fn promoted() -> Notification {
        Notification::of(
            NotificationKind::Promote,
            &experiment(None),
            &note("Promoted", "meets every objective"),
            &stamp(),
        )
    }

    #[test]
    fn a_cloud_event_carries_the_required_attributes_and_the_experiment_in_data() {
        let n = promoted();
        let (content_type, body) = n.body(NotificationFormat::CloudEvents);
        assert_eq!(content_type, "application/cloudevents+json");
        let event: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], "u-1.2.7.promote");
        assert_eq!(
            event["source"],
            "/apis/iter8.tools/v3alpha1/namespaces/shop/experiments/reviews"
        );
        assert_eq!(event["type"], "tools.iter8.experiment.promote");
        assert_eq!(event["subject"], "reviews");
        assert_eq!(event["time"], "2027-01-15T08:00:00Z");
        assert_eq!(event["datacontenttype"], "application/json");
        let data = &event["data"];
        assert_eq!(data["experiment"], "reviews");
        assert_eq!(data["namespace"], "shop");
        assert_eq!(data["phase"], "Completed");
        assert_eq!(data["iteration"], 7);
        assert_eq!(data["decision"]["action"], json!(Action::Promote));
        assert_eq!(data["decision"]["version"], "next");
        assert_eq!(data["reason"], "meets every objective");
        assert_eq!(
            data["weights"],
            json!([{"version": "stable", "weight": 0}, {"version": "next", "weight": 100}])
        );
        assert_eq!(data["winner"], "next");
    }

    #[test]
    fn a_slack_message_is_one_text_field_saying_what_and_why() {
        let n = promoted();
        let (content_type, body) = n.body(NotificationFormat::Slack);
        assert_eq!(content_type, "application/json");
        let message: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            message,
            json!({"text": "iter8 experiment shop/reviews promoted next at iteration 7: \
                            meets every objective\nsplit: stable=0, next=100"})
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(
            retry_delays(s(1), s(30), 7),
            [s(1), s(2), s(4), s(8), s(16), s(30), s(30)]
        );
        assert!(retry_delays(s(1), s(30), 0).is_empty());
        // No overflow, however many retries.
        assert_eq!(retry_delays(s(1), s(30), 40)[39], s(30));
    }

    #[test]
    fn an_attempt_timeout_is_more_than_zero_and_at_most_a_minute() {
        assert_eq!(attempt_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(attempt_timeout("1m"), Ok(MAX_ATTEMPT_TIMEOUT));
        for bad in ["0s", "61s", "1h", "2m"] {
            let e = attempt_timeout(bad).expect_err(bad);
            assert!(e.starts_with(&format!("timeout {bad:?}: ")), "{e}");
        }
        assert!(attempt_timeout("soon").is_err());
    }

    #[test]
    fn the_condition_says_which_receiver_failed_and_turns_true_again() {
        let status = ExperimentStatus::default();
        let failed = Delivery::Failed {
            receiver: "ops".into(),
            reason: "Unreachable",
            message: "connection refused (4 attempts)".into(),
        };
        let down = with_delivery(&status, &failed, &stamp()).expect("a change");
        let c = &down.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (NOTIFICATIONS_DELIVERED, "False", "Unreachable")
        );
        assert_eq!(c.message, "receiver ops: connection refused (4 attempts)");
        assert_eq!(
            with_delivery(&down, &failed, &stamp()),
            None,
            "no write when nothing changed"
        );
        let up = with_delivery(&down, &Delivery::Delivered, &stamp()).expect("a change");
        assert!(conditions::is_true(&up.conditions, NOTIFICATIONS_DELIVERED));
    }
}
