//! Notifications: where the controller announces an experiment's progress (its start, a
//! promotion or rollback, a failure, a gate waiting for approval, its end) and in what form.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A receiver of notifications: an HTTP endpoint the controller POSTs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationReceiver {
    /// The receiver's name, unique in the list; conditions name the receiver by it (never by
    /// its URL, which may carry a token, as Slack's incoming webhooks do).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Where to POST. The controller sends only to URLs its operator allowed
    /// (`--notification-allowed-urls`, the chart's `notifications.allowedUrls`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The body: a CloudEvents 1.0 JSON event (default) or a Slack-compatible message.
    #[serde(default)]
    pub format: NotificationFormat,
    /// What to send; by default everything but `iteration`.
    #[serde(default = "default_kinds")]
    #[schemars(length(min = 1, max = 7))]
    pub events: Vec<NotificationKind>,
    /// The key (a Secret in the experiment's namespace) the body is signed with: HMAC-SHA256,
    /// sent as `X-Iter8-Signature: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SecretKeyRef>,
    /// How long one attempt may take, e.g. `5s` (default); more than zero, at most `1m`
    /// (a longer one is refused, `InvalidTimeout`, and nothing is sent).
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: String,
    /// Attempts after a failed one (a refused connection, a timeout, a 5xx, 408 or 429
    /// answer), each after twice the previous wait, from the controller's first wait
    /// (`--notification-backoff`, 1 s) up to 30 s (default 3).
    #[serde(default = "default_retries")]
    #[schemars(range(max = 10))]
    pub retries: u32,
}

/// A key of a Secret in the experiment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in its data (default `key`).
    #[serde(default = "default_key")]
    pub key: String,
}

/// The body of a notification.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotificationFormat {
    /// A CloudEvents 1.0 event in structured mode (`application/cloudevents+json`).
    #[default]
    CloudEvents,
    /// `{"text": ...}`, as Slack's incoming webhooks (and Mattermost, Teams connectors) take.
    Slack,
}

/// What a notification announces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotificationKind {
    /// The experiment started: its first split is on the router.
    Start,
    /// An iteration completed (off by default: one per interval).
    Iteration,
    /// A candidate was promoted.
    Promote,
    /// The analytics rolled the candidate back.
    Rollback,
    /// The failure policy paused or ended the experiment (or its status outgrew the budget).
    Failure,
    /// A gate waits for approval.
    GateWaiting,
    /// The experiment ended (promoted, rolled back, inconclusive, failed or terminated).
    End,
}

impl NotificationKind {
    /// Every kind, in the order of an experiment's life.
    pub const ALL: [NotificationKind; 7] = [
        NotificationKind::Start,
        NotificationKind::Iteration,
        NotificationKind::Promote,
        NotificationKind::Rollback,
        NotificationKind::Failure,
        NotificationKind::GateWaiting,
        NotificationKind::End,
    ];

    /// The kind's name as written in the spec, e.g. `gateWaiting`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Start => "start",
            NotificationKind::Iteration => "iteration",
            NotificationKind::Promote => "promote",
            NotificationKind::Rollback => "rollback",
            NotificationKind::Failure => "failure",
            NotificationKind::GateWaiting => "gateWaiting",
            NotificationKind::End => "end",
        }
    }
}

fn default_kinds() -> Vec<NotificationKind> {
    NotificationKind::ALL
        .into_iter()
        .filter(|k| *k != NotificationKind::Iteration)
        .collect()
}
fn default_timeout() -> String {
    "5s".into()
}
fn default_retries() -> u32 {
    3
}
fn default_key() -> String {
    "key".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_with_only_name_and_url_gets_the_documented_defaults() {
        let r: NotificationReceiver =
            serde_json::from_value(serde_json::json!({"name": "ops", "url": "http://hook"}))
                .expect("valid");
        assert_eq!(r.format, NotificationFormat::CloudEvents);
        assert_eq!(
            r.events,
            [
                NotificationKind::Start,
                NotificationKind::Promote,
                NotificationKind::Rollback,
                NotificationKind::Failure,
                NotificationKind::GateWaiting,
                NotificationKind::End
            ]
        );
        assert_eq!((r.timeout.as_str(), r.retries), ("5s", 3));
        let key: SecretKeyRef =
            serde_json::from_value(serde_json::json!({"name": "hook"})).expect("valid");
        assert_eq!(key.key, "key");
    }
}
