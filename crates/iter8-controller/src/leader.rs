//! Leader election over a `coordination.k8s.io` Lease, so that two or more replicas can run
//! and exactly one of them changes traffic at a time.
//!
//! The rules are client-go's (`tools/leaderelection`):
//! - the holder renews every `retry_period` and gives up once it could not renew for
//!   `renew_deadline`, which is shorter than the `lease_duration` other replicas wait;
//! - a replica judges expiry on its own monotonic clock, from when it *observed* the Lease
//!   record change, never by comparing the holder's `renewTime` with its own wall clock;
//! - every Lease request has a timeout, so a stalled connection cannot keep a holder believing
//!   it leads;
//! - writes are compare-and-swap on the Lease's resourceVersion.
//!
//! On top of that, [`Leadership`] tells the rest of the process, without I/O, whether the Lease
//! is held *now*: until the start of the last successful renewal plus `renew_deadline`. The
//! fence in [`crate::fence`] refuses route writes outside that window. Because a standby
//! observes the renewal only after it was sent and then waits a full `lease_duration`, the
//! window closes at least `lease_duration - renew_deadline` before any other replica can take
//! the Lease; that margin also covers a route write the fence let through just before.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// The three durations of an election (client-go's defaults are 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long other replicas wait, from when they saw the last renewal, before taking the
    /// Lease.
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal; shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby tries to acquire.
    pub retry_period: Duration,
}

/// Why a [`Timing`] cannot keep two leaders apart.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    /// The renew deadline leaves no margin before another replica may take over.
    #[error(
        "leader election: renew deadline {renew:?} must be shorter than the lease duration {lease:?}"
    )]
    RenewDeadlineNotShorter {
        /// The renew deadline.
        renew: Duration,
        /// The lease duration.
        lease: Duration,
    },
    /// Renewals are too rare to fit in the renew deadline.
    #[error(
        "leader election: retry period {retry:?} must be positive and shorter than the renew deadline {renew:?}"
    )]
    RetryPeriodTooLong {
        /// The retry period.
        retry: Duration,
        /// The renew deadline.
        renew: Duration,
    },
}

impl Timing {
    /// client-go's proportions for a lease duration: renew deadline 2/3 of it, retry period
    /// 2/15 of it (15 s → 10 s and 2 s).
    pub fn for_lease(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }

    /// Refuses timings under which two replicas could act as leader at once.
    pub fn validate(self) -> Result<Self, TimingError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingError::RenewDeadlineNotShorter {
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(TimingError::RetryPeriodTooLong {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(self)
    }
}

/// Whether this process may act as leader now: a cheap, shared, I/O-free check.
#[derive(Clone, Debug)]
pub struct Leadership {
    state: Arc<Mutex<Held>>,
}

#[derive(Clone, Copy, Debug)]
enum Held {
    /// No election: the only replica always leads.
    Always,
    /// Held until this instant unless renewed.
    Until(Instant),
    /// Not held.
    No,
}

impl Leadership {
    /// Leadership without an election (a single replica).
    pub fn unconditional() -> Self {
        Self {
            state: Arc::new(Mutex::new(Held::Always)),
        }
    }

    /// Leadership that starts not held, granted by an election.
    pub fn elected() -> Self {
        Self {
            state: Arc::new(Mutex::new(Held::No)),
        }
    }

    /// True while the Lease is held and was renewed within the renew deadline.
    pub fn is_held(&self) -> bool {
        self.remaining().is_some()
    }

    /// How long leadership lasts from now without another renewal; `Duration::MAX` without
    /// an election, `None` when not held.
    pub fn remaining(&self) -> Option<Duration> {
        match self.get() {
            Held::Always => Some(Duration::MAX),
            Held::Until(until) => {
                let now = Instant::now();
                (until > now).then(|| until - now)
            }
            Held::No => None,
        }
    }

    /// Holds leadership for `d` from now (tests of what reads it).
    #[cfg(test)]
    pub(crate) fn hold_for(&self, d: Duration) {
        self.set(Held::Until(Instant::now() + d));
    }

    fn get(&self) -> Held {
        // A poisoned lock only means a panic elsewhere; the value is a plain copy.
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, held: Held) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }
}

/// The Lease record as last observed, and when (on this process's monotonic clock).
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    lease_duration: Duration,
    at: Instant,
}

impl Observed {
    /// Whether another replica may take the Lease at `now`: it has no holder, or its record
    /// has not changed for a whole lease duration of *our* time since we first saw it.
    fn free_at(&self, now: Instant) -> bool {
        self.holder.is_none() || self.at + self.lease_duration <= now
    }
}

/// A lease held by one identity at a time.
#[derive(Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    leadership: Leadership,
    observed: Arc<Mutex<Option<Observed>>>,
    /// Set once a read of the Lease succeeded: from then on this replica knows who leads and
    /// could take over, so it may report ready.
    lease_read: Arc<tokio::sync::watch::Sender<bool>>,
}

impl LeaderElection {
    /// An election for lease `name` in `namespace` with client-go's proportions for
    /// `lease_duration` (see [`Timing::for_lease`]).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self::with_timing(
            client,
            namespace,
            name,
            identity,
            Timing::for_lease(lease_duration),
        )
    }

    /// An election with explicit durations (check them with [`Timing::validate`] first).
    pub fn with_timing(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            leadership: Leadership::elected(),
            observed: Arc::default(),
            lease_read: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Resolves once a read of the Lease has succeeded (at once if one already has).
    pub async fn lease_read(&self) {
        let mut read = self.lease_read.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while we wait.
        let _ = read.wait_for(|&read| read).await;
    }

    /// The handle that says whether this election's Lease is held now (for the route fence).
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => {
                    self.renewed(started);
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(%e, "leader election: lease not readable"),
                Err(_) => tracing::warn!("leader election: lease request timed out"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the lease; returns (and stops leading) once another holder has it or no renewal
    /// succeeded within the renew deadline. Each renewal is cut off at that deadline.
    pub async fn hold(&self) {
        while let Some(left) = self.leadership.remaining() {
            tokio::time::sleep(self.timing.retry_period.min(left)).await;
            let Some(left) = self.leadership.remaining() else {
                break;
            };
            let started = Instant::now();
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => self.renewed(started),
                Ok(Ok(false)) => {
                    tracing::warn!(identity = %self.identity, "lost the lease to another holder");
                    break;
                }
                Ok(Err(e)) => tracing::warn!(%e, "leader election: renewal failed"),
                Err(_) => tracing::warn!("leader election: renewal timed out"),
            }
        }
        self.leadership.set(Held::No);
        tracing::warn!(identity = %self.identity, "stopped leading");
    }

    /// Gives the lease up, so a standby takes over without waiting for it to expire. Route
    /// writes are refused from here on.
    pub async fn release(&self) {
        self.leadership.set(Held::No);
        let release = async {
            let mut lease = self.api.get_opt(&self.name).await?;
            if let Some(lease) = lease.as_mut()
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(&self.identity)
            {
                spec.holder_identity = None;
                spec.renew_time = None;
                self.api
                    .replace(&self.name, &PostParams::default(), lease)
                    .await?;
            }
            Ok::<_, kube::Error>(())
        };
        match tokio::time::timeout(self.timing.renew_deadline, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%e, "could not release the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }

    /// A renewal sent at `started` succeeded: leadership lasts until `started` plus the renew
    /// deadline (counted from the send, since the API server may have stored it any time after).
    fn renewed(&self, started: Instant) {
        self.leadership
            .set(Held::Until(started + self.timing.renew_deadline));
    }

    fn observe(&self, lease: &Lease) -> Observed {
        let spec = lease.spec.as_ref();
        let record = Observed {
            resource_version: lease.metadata.resource_version.clone(),
            holder: spec.and_then(|s| s.holder_identity.clone()),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.timing.lease_duration, Duration::from_secs),
            at: Instant::now(),
        };
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        // Unchanged: keep the time it was first seen, which is what expiry counts from.
        if let Some(seen) = observed
            .as_ref()
            .filter(|o| o.resource_version == record.resource_version && o.holder == record.holder)
        {
            return seen.clone();
        }
        *observed = Some(record.clone());
        record
    }

    /// Takes or renews the lease; `Ok(false)` when another live holder has it or a
    /// concurrent update won.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = record_seconds(self.timing.lease_duration);
        let read = self.api.get_opt(&self.name).await?;
        self.lease_read.send_replace(true);
        let Some(mut lease) = read else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if crate::conflict::is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let observed = self.observe(&lease);
        let ours = observed.holder.as_deref() == Some(&self.identity);
        if !ours && !observed.free_at(Instant::now()) {
            return Ok(false);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion read above makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(e) if crate::conflict::is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The Lease record's `leaseDurationSeconds` for `lease_duration`: rounded *up* to whole
/// seconds (at least 1), because standbys wait exactly what the record says. Truncating would
/// let a `1500ms` lease with a `1200ms` renew deadline be taken after 1 s, while the holder
/// still writes, and a sub-second lease be taken at once.
fn record_seconds(lease_duration: Duration) -> i32 {
    let whole = lease_duration
        .as_secs()
        .saturating_add(u64::from(lease_duration.subsec_nanos() > 0));
    i32::try_from(whole.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_lease_duration_never_shortens_the_standbys_wait() {
        assert_eq!(record_seconds(Duration::from_secs(15)), 15);
        assert_eq!(record_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(record_seconds(Duration::from_millis(900)), 1);
        assert_eq!(record_seconds(Duration::MAX), i32::MAX);
    }

    #[test]
    fn client_go_proportions_keep_the_renew_deadline_inside_the_lease() {
        let t = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert_eq!(t.validate(), Ok(t));
    }

    #[test]
    fn timings_that_allow_two_leaders_are_refused() {
        let lease = Duration::from_secs(15);
        let equal = Timing {
            renew_deadline: lease,
            ..Timing::for_lease(lease)
        };
        assert!(matches!(
            equal.validate(),
            Err(TimingError::RenewDeadlineNotShorter { .. })
        ));
        let slow = Timing {
            retry_period: Duration::from_secs(10),
            ..Timing::for_lease(lease)
        };
        assert!(matches!(
            slow.validate(),
            Err(TimingError::RetryPeriodTooLong { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_counts_from_when_the_record_was_seen_not_from_its_renew_time() {
        // A record whose holder's clock is far off: only our observation time matters.
        let seen = Observed {
            resource_version: Some("7".into()),
            holder: Some("other".into()),
            lease_duration: Duration::from_secs(15),
            at: Instant::now(),
        };
        assert!(!seen.free_at(Instant::now()));
        assert!(!seen.free_at(seen.at + Duration::from_millis(14_999)));
        assert!(seen.free_at(seen.at + Duration::from_secs(15)));
        let released = Observed {
            holder: None,
            ..seen.clone()
        };
        assert!(released.free_at(seen.at));
    }

    /// A kube client whose API server answers every request with `status` (and, for 404, a
    /// NotFound Status body).
    fn client_answering(status: u16) -> kube::Client {
        let service =
            tower::service_fn(move |_req: http::Request<kube::client::Body>| async move {
                let body = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": if status == 404 { "NotFound" } else { "InternalError" },
                    "code": status
                });
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            });
        kube::Client::new(service, "default")
    }

    async fn read_within(election: &LeaderElection, wait: Duration) -> bool {
        let acquiring = tokio::spawn({
            let election = election.clone();
            async move { election.acquire().await }
        });
        let read = tokio::time::timeout(wait, election.lease_read())
            .await
            .is_ok();
        acquiring.abort();
        read
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_counts_as_read_only_once_a_read_succeeded() {
        let timing = Timing::for_lease(Duration::from_secs(15));
        let unreachable =
            LeaderElection::with_timing(client_answering(500), "ns", "lease", "me", timing);
        assert!(
            !read_within(&unreachable, Duration::from_secs(60)).await,
            "an API server that fails every read leaves the replica unready"
        );
        // No Lease yet (404) is a successful read: the replica knows nobody leads.
        let readable =
            LeaderElection::with_timing(client_answering(404), "ns", "lease", "me", timing);
        assert!(read_within(&readable, Duration::from_secs(60)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_the_renew_deadline_without_a_renewal() {
        let held = Leadership::elected();
        assert!(!held.is_held());
        held.set(Held::Until(Instant::now() + Duration::from_secs(10)));
        assert!(held.is_held());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(held.is_held());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!held.is_held());
        assert!(Leadership::unconditional().is_held());
    }
}
