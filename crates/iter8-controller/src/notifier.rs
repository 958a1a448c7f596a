//! Delivery of notifications, off the reconcile path. The reconciler hands each lifecycle
//! Event to [`Notifier::notify`], which only puts a job in a bounded queue (full: the job is
//! dropped and counted) and returns. Worker tasks POST to each receiver, every attempt within
//! the receiver's timeout, retrying with exponential backoff. They never write the
//! Experiment: they record how delivery went and ask for a reconcile of it, and the
//! reconciler, the one writer of status, sets `NotificationsDelivered`. So a receiver that is
//! down, slow or refusing cannot delay or change a decision.
//!
//! An Experiment's author chooses its receivers' URLs, so the controller sends only to URLs
//! under those its operator allowed (and the chart's default receivers), follows no redirect,
//! uses no environment proxy, and reads signing keys only from the experiment's namespace.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use iter8_analytics_client::{Endpoints, describe};
use iter8_crd::{Experiment, NotificationKind, NotificationReceiver, SecretKeyRef};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::lifecycle::{Note, Stamp};
use crate::notify::{self, Delivery, Notification, SIGNATURE_HEADER};
use crate::telemetry::Telemetry;

/// How many worker tasks deliver; an experiment's notifications always go through the same
/// one, so they arrive in order, and a receiver that is down delays only a share of the rest.
const WORKERS: usize = 4;

/// The notifier's settings.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// The receivers of experiments that name none (`spec.notifications` absent).
    pub defaults: Vec<NotificationReceiver>,
    /// The URLs receivers may be at or under (the defaults' URLs are allowed too).
    pub allowed: Vec<String>,
    /// How many notifications may wait for delivery; more are dropped and counted.
    pub queue: usize,
    /// The wait before the first retry; each further one waits twice as long, up to
    /// `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            defaults: Vec::new(),
            allowed: Vec::new(),
            queue: 1024,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Errors in the notifier's settings.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// An allowed URL or a default receiver's URL is not a usable base URL.
    #[error("notification URL {0}")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("notification HTTP client: {0}")]
    Client(String),
}

/// Hands notifications to the workers and keeps how each experiment's last one went.
#[derive(Clone)]
pub struct Notifier {
    shards: Vec<mpsc::Sender<Job>>,
    defaults: Arc<Vec<NotificationReceiver>>,
    shared: Arc<Shared>,
    trigger: Arc<Mutex<Option<mpsc::Receiver<ObjectRef<Experiment>>>>>,
}

/// What the workers share with the notifier.
struct Shared {
    client: kube::Client,
    http: reqwest::Client,
    allowed: Endpoints,
    backoff: Duration,
    max_backoff: Duration,
    telemetry: Telemetry,
    deliveries: Mutex<HashMap<String, Delivery>>,
    reconcile: mpsc::Sender<ObjectRef<Experiment>>,
}

/// One notification for its receivers.
struct Job {
    key: String,
    experiment: ObjectRef<Experiment>,
    notification: Notification,
    receivers: Vec<NotificationReceiver>,
}

impl Notifier {
    /// Starts the workers (on the current Tokio runtime). `client` reads signing keys.
    pub fn new(
        client: kube::Client,
        telemetry: Telemetry,
        config: NotifierConfig,
    ) -> Result<Self, NotifierError> {
        let allowed = Endpoints::only(
            config
                .allowed
                .iter()
                .chain(config.defaults.iter().map(|r| &r.url))
                .map(String::as_str),
        )
        .map_err(|e| NotifierError::Url(e.to_string()))?;
        let http = reqwest::Client::builder()
            // A redirect, or an environment proxy, would take the body to an address nobody
            // allowed.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| NotifierError::Client(e.to_string()))?;
        let (reconcile, trigger) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            client,
            http,
            allowed,
            backoff: config.backoff,
            max_backoff: config.max_backoff,
            telemetry,
            deliveries: Mutex::default(),
            reconcile,
        });
        let per_worker = config.queue.div_ceil(WORKERS).max(1);
        let shards = (0..WORKERS)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Job>(per_worker);
                let shared = shared.clone();
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        shared.deliver(job).await;
                    }
                });
                tx
            })
            .collect();
        Ok(Self {
            shards,
            defaults: Arc::new(config.defaults),
            shared,
            trigger: Arc::new(Mutex::new(Some(trigger))),
        })
    }

    /// Queues the notifications `note` stands for, about `exp` as just written, for its
    /// receivers. Never waits: with the queue full they are dropped, counted, and reported
    /// in the condition.
    pub fn notify(&self, exp: &Experiment, note: &Note, at: &Stamp) {
        let phase = exp.status.as_ref().map(|s| s.phase).unwrap_or_default();
        for &kind in notify::kinds_for(note, phase) {
            let receivers: Vec<NotificationReceiver> =
                notify::receivers_of(exp, &self.defaults, kind)
                    .into_iter()
                    .cloned()
                    .collect();
            if receivers.is_empty() {
                continue;
            }
            let key = crate::key(exp);
            let job = Job {
                key: key.clone(),
                experiment: ObjectRef::from_obj(exp),
                notification: Notification::of(kind, exp, note, at),
                receivers,
            };
            if let Err(e) = self.shards[shard(&key)].try_send(job) {
                let job = match e {
                    mpsc::error::TrySendError::Full(job)
                    | mpsc::error::TrySendError::Closed(job) => job,
                };
                tracing::warn!(experiment = %key, kind = kind.as_str(), "notification queue full; dropped");
                self.shared.count(kind, "dropped", job.receivers.len());
                let receiver = job
                    .receivers
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.shared.record(
                    &job,
                    Delivery::Failed {
                        receiver,
                        reason: "Dropped",
                        message: format!(
                            "the {} notification was dropped: the controller's notification queue was full",
                            kind.as_str()
                        ),
                    },
                );
            }
        }
    }

    /// How the last notification about experiment `key` (`namespace/name`) went, if any was
    /// delivered or given up on yet.
    pub fn delivery(&self, key: &str) -> Option<Delivery> {
        self.shared.deliveries.lock().ok()?.get(key).cloned()
    }

    /// Forgets a deleted experiment.
    pub fn forget(&self, key: &str) {
        if let Ok(mut deliveries) = self.shared.deliveries.lock() {
            deliveries.remove(key);
        }
    }

    /// The experiments whose delivery state changed, to reconcile (once: the controller
    /// takes it when it starts).
    pub fn take_reconcile_requests(
        &self,
    ) -> Option<impl Stream<Item = ObjectRef<Experiment>> + Send + 'static> {
        let rx = self.trigger.lock().ok()?.take()?;
        Some(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        }))
    }
}

impl Shared {
    /// Sends `job` to every receiver at once, then records how it went.
    async fn deliver(&self, job: Job) {
        let job = &job;
        let outcomes = futures::future::join_all(
            job.receivers
                .iter()
                .map(|r| async move { (r, self.deliver_to(job, r).await) }),
        )
        .await;
        let mut delivery = Delivery::Delivered;
        for (receiver, outcome) in outcomes {
            let kind = job.notification.kind;
            match outcome {
                Ok(()) => self.count(kind, "sent", 1),
                Err((reason, message)) => {
                    self.count(kind, "failed", 1);
                    tracing::warn!(
                        experiment = %job.key,
                        receiver = %receiver.name,
                        kind = kind.as_str(),
                        reason,
                        %message,
                        "notification not delivered"
                    );
                    if delivery == Delivery::Delivered {
                        delivery = Delivery::Failed {
                            receiver: receiver.name.clone(),
                            reason,
                            message,
                        };
                    }
                }
            }
        }
        self.record(job, delivery);
    }

    /// One receiver: refused unless allowed; signed if it has a key; each attempt within its
    /// timeout; retried with backoff, except after a refusal a retry cannot change (4xx other
    /// than 408 and 429).
    async fn deliver_to(
        &self,
        job: &Job,
        receiver: &NotificationReceiver,
    ) -> Result<(), (&'static str, String)> {
        if !self.allowed.allows_under(&receiver.url) {
            return Err((
                "NotAllowed",
                "its URL is not at or under one the controller allows \
                 (--notification-allowed-urls); nothing was sent"
                    .into(),
            ));
        }
        let signature = match &receiver.signing_secret {
            Some(secret) => {
                let key = self
                    .signing_key(&job.experiment, secret)
                    .await
                    .map_err(|m| ("SecretUnavailable", m))?;
                Some(key)
            }
            None => None,
        };
        let timeout =
            notify::attempt_timeout(&receiver.timeout).map_err(|m| ("InvalidTimeout", m))?;
        let (content_type, body) = job.notification.body(receiver.format);
        let signature = signature.map(|key| notify::signature(&key, &body));
        let delays = notify::retry_delays(self.backoff, self.max_backoff, receiver.retries);
        let attempts = receiver.retries + 1;
        let mut failure = ("Unreachable", String::new());
        for attempt in 0..attempts {
            let mut request = self
                .http
                .post(&receiver.url)
                .timeout(timeout)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            match request.send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => {
                    let status = answer.status();
                    failure = ("Rejected", format!("answered HTTP {status}"));
                    let final_refusal = status.is_client_error()
                        && status != reqwest::StatusCode::REQUEST_TIMEOUT
                        && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
                    if final_refusal || status.is_redirection() {
                        return Err((failure.0, format!("{} (not retried)", failure.1)));
                    }
                }
                Err(e) if e.is_timeout() => {
                    failure = (
                        "Unreachable",
                        format!("no answer within {}", receiver.timeout),
                    );
                }
                Err(e) => failure = ("Unreachable", describe(&e.without_url())),
            }
            if let Some(wait) = delays.get(attempt as usize) {
                tokio::time::sleep(*wait).await;
            }
        }
        Err((failure.0, format!("{} ({attempts} attempts)", failure.1)))
    }

    /// The signing key: a key of a Secret in the experiment's own namespace, never another.
    async fn signing_key(
        &self,
        experiment: &ObjectRef<Experiment>,
        secret: &SecretKeyRef,
    ) -> Result<Vec<u8>, String> {
        let ns = experiment.namespace.as_deref().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let found = secrets
            .get_opt(&secret.name)
            .await
            .map_err(|e| format!("reading Secret {ns}/{}: {e}", secret.name))?
            .ok_or_else(|| format!("Secret {ns}/{} not found", secret.name))?;
        found
            .data
            .and_then(|mut data| data.remove(&secret.key))
            .map(|bytes| bytes.0)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| format!("Secret {ns}/{} has no key {:?}", secret.name, secret.key))
    }

    fn count(&self, kind: NotificationKind, outcome: &str, n: usize) {
        self.telemetry
            .notifications
            .with_label_values(&[kind.as_str(), outcome])
            .inc_by(n as u64);
    }

    /// Keeps `delivery` as the experiment's latest and, when it differs from the one before,
    /// asks for a reconcile so the reconciler writes the condition.
    fn record(&self, job: &Job, delivery: Delivery) {
        let Ok(mut deliveries) = self.deliveries.lock() else {
            return;
        };
        if deliveries.get(&job.key) == Some(&delivery) {
            return;
        }
        deliveries.insert(job.key.clone(), delivery);
        // Full: reconciles are queued already, and each records the latest delivery.
        let _ = self.reconcile.try_send(job.experiment.clone());
    }
}

/// The worker an experiment's notifications go through.
fn shard(key: &str) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % WORKERS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    /// A client for an API server that is never asked anything these tests need.
    fn offline_client() -> kube::Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
            http::Response::builder()
                .status(404)
                .body(kube::client::Body::empty())
        });
        kube::Client::new(service, "default")
    }

    fn experiment(receivers: serde_json::Value) -> Experiment {
        serde_json::from_value(json!({
            "apiVersion": "iter8.tools/v3alpha1", "kind": "Experiment",
            "metadata": {"name": "reviews", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "kind": "canary",
                "versions": [{"name": "stable", "backend": {"name": "s"}},
                             {"name": "next", "backend": {"name": "n"}}],
                "router": {"httpRoute": {"name": "r"}},
                "notifications": receivers
            },
            "status": {"phase": "Running", "completedIterations": 3}
        }))
        .expect("valid experiment")
    }

    fn iteration() -> (Note, Stamp) {
        (
            Note {
                warning: false,
                reason: "Iteration",
                action: "Iterate",
                message: "iteration 3".into(),
            },
            Stamp {
                now: Time(Timestamp::from_second(1_800_000_000).expect("valid")),
                generation: Some(1),
            },
        )
    }

    async fn delivery_of(notifier: &Notifier, key: &str) -> Delivery {
        for _ in 0..500 {
            if let Some(d) = notifier.delivery(key) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no delivery recorded for {key}");
    }

    /// The receiver, reason and message of the failure recorded for `key`.
    async fn failure_of(notifier: &Notifier, key: &str) -> (String, &'static str, String) {
        match delivery_of(notifier, key).await {
            Delivery::Failed {
                receiver,
                reason,
                message,
            } => (receiver, reason, message),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // A receiver that accepts connections and never answers holds the experiment's worker.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let (accepted_tx, mut accepted) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                let _ = accepted_tx.send(()).await;
            }
        });
        let telemetry = Telemetry::new().expect("metrics");
        let notifier = Notifier::new(
            offline_client(),
            telemetry.clone(),
            NotifierConfig {
                allowed: vec![url.clone()],
                // One waiting notification per worker.
                queue: WORKERS,
                ..NotifierConfig::default()
            },
        )
        .expect("notifier");
        let exp = experiment(json!([{
            "name": "slow", "url": url, "events": ["iteration"], "timeout": "1m", "retries": 0
        }]));
        let (note, at) = iteration();
        notifier.notify(&exp, &note, &at);
        accepted
            .recv()
            .await
            .expect("the worker is sending the first");
        notifier.notify(&exp, &note, &at); // waits in the queue
        notifier.notify(&exp, &note, &at); // no room
        let dropped = |outcome| {
            telemetry
                .notifications
                .with_label_values(&["iteration", outcome])
                .get()
        };
        assert_eq!(dropped("dropped"), 1);
        assert_eq!(dropped("sent") + dropped("failed"), 0, "still in flight");
        match notifier.delivery("shop/reviews") {
            Some(Delivery::Failed {
                receiver, reason, ..
            }) => assert_eq!((receiver.as_str(), reason), ("slow", "Dropped")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_receiver_nobody_allowed_is_never_contacted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let telemetry = Telemetry::new().expect("metrics");
        let notifier = Notifier::new(
            offline_client(),
            telemetry.clone(),
            NotifierConfig {
                allowed: vec![format!("http://{addr}/allowed")],
                ..NotifierConfig::default()
            },
        )
        .expect("notifier");
        let exp = experiment(json!([{
            "name": "elsewhere", "url": format!("http://{addr}/allowedX"), "events": ["iteration"]
        }]));
        let (note, at) = iteration();
        notifier.notify(&exp, &note, &at);
        let (receiver, reason, _) = failure_of(&notifier, "shop/reviews").await;
        assert_eq!((receiver.as_str(), reason), ("elsewhere", "NotAllowed"));
        assert_eq!(
            telemetry
                .notifications
                .with_label_values(&["iteration", "failed"])
                .get(),
            1
        );
        let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(connected.is_err(), "no connection was made");
    }

    #[tokio::test]
    async fn a_timeout_that_would_hold_a_worker_for_long_is_refused_before_any_attempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let telemetry = Telemetry::new().expect("metrics");
        let notifier = Notifier::new(
            offline_client(),
            telemetry.clone(),
            NotifierConfig {
                allowed: vec![url.clone()],
                ..NotifierConfig::default()
            },
        )
        .expect("notifier");
        let exp = experiment(json!([{
            "name": "patient", "url": url, "events": ["iteration"], "timeout": "1h"
        }]));
        let (note, at) = iteration();
        notifier.notify(&exp, &note, &at);
        let (receiver, reason, message) = failure_of(&notifier, "shop/reviews").await;
        assert_eq!((receiver.as_str(), reason), ("patient", "InvalidTimeout"));
        assert!(message.starts_with("timeout \"1h\": "), "{message}");
        let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(connected.is_err(), "no connection was made");
    }

    /// A receiver at `/hook` that answers every POST with `status` (and `location`, if any),
    /// counting them.
    async fn answering(
        status: axum::http::StatusCode,
        location: Option<String>,
    ) -> (String, Arc<std::sync::atomic::AtomicU32>) {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let location = location.clone();
                async move {
                    let mut headers = axum::http::HeaderMap::new();
                    if let Some(l) = location.and_then(|l| l.parse().ok()) {
                        headers.insert(axum::http::header::LOCATION, l);
                    }
                    (status, headers)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_a_client_error_is_not_retried() {
        use axum::http::StatusCode;
        // Where a redirect would take the body: allowed, yet never contacted.
        let (target, target_calls) = answering(StatusCode::NO_CONTENT, None).await;
        let (redirecting, redirect_calls) =
            answering(StatusCode::TEMPORARY_REDIRECT, Some(target.clone())).await;
        let (refusing, refuse_calls) = answering(StatusCode::BAD_REQUEST, None).await;
        let notifier = Notifier::new(
            offline_client(),
            Telemetry::new().expect("metrics"),
            NotifierConfig {
                allowed: vec![target, redirecting.clone(), refusing.clone()],
                backoff: Duration::from_millis(10),
                ..NotifierConfig::default()
            },
        )
        .expect("notifier");
        let (note, at) = iteration();
        for (url, calls, answer) in [
            (&redirecting, &redirect_calls, "307 Temporary Redirect"),
            (&refusing, &refuse_calls, "400 Bad Request"),
        ] {
            notifier.forget("shop/reviews");
            let exp = experiment(json!([{
                "name": "once", "url": url, "events": ["iteration"], "retries": 3
            }]));
            notifier.notify(&exp, &note, &at);
            let (_, reason, message) = failure_of(&notifier, "shop/reviews").await;
            assert_eq!(reason, "Rejected");
            assert_eq!(message, format!("answered HTTP {answer} (not retried)"));
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{answer}"
            );
        }
        assert_eq!(
            target_calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
    }

    #[tokio::test]
    async fn a_failing_receiver_is_retried_then_reported_and_a_success_clears_it() {
        // Answers 503 twice, then 204.
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let notifier = Notifier::new(
            offline_client(),
            Telemetry::new().expect("metrics"),
            NotifierConfig {
                allowed: vec![url.clone()],
                backoff: Duration::from_millis(10),
                ..NotifierConfig::default()
            },
        )
        .expect("notifier");
        let (note, at) = iteration();
        let once = experiment(json!([{
            "name": "flaky", "url": url, "events": ["iteration"], "retries": 1
        }]));
        notifier.notify(&once, &note, &at);
        let (_, reason, message) = failure_of(&notifier, "shop/reviews").await;
        assert_eq!(reason, "Rejected");
        assert_eq!(
            message,
            "answered HTTP 503 Service Unavailable (2 attempts)"
        );
        notifier.notify(&once, &note, &at);
        for _ in 0..500 {
            if notifier.delivery("shop/reviews") == Some(Delivery::Delivered) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(notifier.delivery("shop/reviews"), Some(Delivery::Delivered));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
