//! The built-in load generator: `concurrency` workers, each with its own keep-alive HTTP/1.1
//! connection per version (as wrk does), route every request to a version by the current
//! split and record its outcome in that version's statistics.
//!
//! Iterations are bounded either by time (the caller sleeps) or by a number of requests
//! (permits handed out per iteration); either way the loops stop when the generator does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tokio::sync::{Notify, Semaphore};

use crate::split::Split;
use crate::stats::{Outcome, VersionStats};

/// What the generator sends, and where.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Each version's URL, in version order.
    pub urls: Vec<Uri>,
    /// Workers (requests in flight at once).
    pub concurrency: u32,
    /// Requests per second over all workers; unlimited when absent.
    pub rate: Option<f64>,
    /// The request method.
    pub method: Method,
    /// Headers sent with every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body.
    pub body: Bytes,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How a conversion is recognised.
    pub conversion: Conversion,
    /// Latency bucket bounds, in milliseconds.
    pub buckets_ms: Vec<f64>,
    /// Seed of the routing draws.
    pub seed: u64,
    /// Whether iterations are bounded by a number of requests (permits) rather than time.
    pub counted: bool,
}

/// How a successful response is recognised as a conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversion {
    /// A header that marks it (present, and not `0` or `false`).
    pub header: Option<HeaderName>,
    /// A top-level JSON body field that is `true` or a non-zero number.
    pub json_field: Option<String>,
}

impl Conversion {
    /// Whether the response with these headers and body is a conversion.
    pub fn matches(&self, headers: &hyper::HeaderMap, body: &[u8]) -> bool {
        let by_header = self.header.as_ref().is_some_and(|h| {
            headers
                .get(h)
                .is_some_and(|v| !matches!(v.as_bytes(), b"0" | b"false" | b""))
        });
        let by_field = self.json_field.as_ref().is_some_and(|f| {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get(f).cloned())
                .is_some_and(|v| match v {
                    serde_json::Value::Bool(b) => b,
                    serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
                    _ => false,
                })
        });
        by_header || by_field
    }

    fn needs_body(&self) -> bool {
        self.json_field.is_some()
    }
}

/// Why the generator could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A URL without a host and port the generator can connect to.
    #[error("{0}: no host to connect to")]
    NoHost(Uri),
}

struct Target {
    authority: String,
    host_header: HeaderValue,
    path: Uri,
}

struct Shared {
    config: LoadConfig,
    targets: Vec<Target>,
    split: RwLock<Split>,
    stats: Vec<Mutex<VersionStats>>,
    permits: Semaphore,
    answered: AtomicU64,
    target_answered: AtomicU64,
    iteration_done: Notify,
    stopped: AtomicBool,
}

/// A running load generator.
pub struct LoadGenerator {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl std::fmt::Debug for LoadGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGenerator")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl LoadGenerator {
    /// Starts the workers with the split `weights`; with `config.counted` they wait for
    /// [`LoadGenerator::run_requests`] to hand out requests.
    pub fn start(config: LoadConfig, weights: &[u32]) -> Result<Self, LoadError> {
        let targets = config
            .urls
            .iter()
            .map(target)
            .collect::<Result<Vec<_>, _>>()?;
        let stats = config
            .urls
            .iter()
            .map(|_| Mutex::new(VersionStats::new(&config.buckets_ms)))
            .collect();
        let concurrency = config.concurrency.max(1);
        let shared = Arc::new(Shared {
            targets,
            split: RwLock::new(Split::new(weights)),
            stats,
            permits: Semaphore::new(0),
            answered: AtomicU64::new(0),
            target_answered: AtomicU64::new(u64::MAX),
            iteration_done: Notify::new(),
            stopped: AtomicBool::new(false),
            config,
        });
        let workers = (0..concurrency)
            .map(|w| tokio::spawn(worker(shared.clone(), w, concurrency)))
            .collect();
        Ok(Self {
            shared,
            workers,
            started: Instant::now(),
        })
    }

    /// Routes requests by `weights` from now on.
    pub fn set_weights(&self, weights: &[u32]) {
        let mut split = self
            .shared
            .split
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *split = Split::new(weights);
    }

    /// Hands out `n` more requests and waits until all handed out so far are answered.
    pub async fn run_requests(&self, n: u64) {
        let target = self.shared.answered.load(Ordering::SeqCst) + n;
        self.shared.target_answered.store(target, Ordering::SeqCst);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(Semaphore::MAX_PERMITS as u64 / 2) as usize;
            self.shared.permits.add_permits(chunk);
            left -= chunk as u64;
        }
        loop {
            let done = self.shared.iteration_done.notified();
            if self.shared.answered.load(Ordering::SeqCst) >= target {
                break;
            }
            done.await;
        }
    }

    /// Requests answered (or failed) since the start.
    pub fn completed(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The cumulative statistics of every version.
    pub fn snapshot(&self) -> Vec<VersionStats> {
        self.shared
            .stats
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    /// Stops the workers (requests in flight are abandoned) and returns the final statistics.
    pub async fn stop(self) -> Vec<VersionStats> {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.permits.close();
        for w in &self.workers {
            w.abort();
        }
        for w in self.workers {
            // Aborted or finished: either way the worker is gone.
            let _ = w.await;
        }
        self.shared
            .stats
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }
}

fn target(url: &Uri) -> Result<Target, LoadError> {
    let host = url.host().ok_or_else(|| LoadError::NoHost(url.clone()))?;
    let port = url.port_u16().unwrap_or(80);
    let authority = format!("{host}:{port}");
    let host_header = HeaderValue::from_str(url.authority().map_or(host, |a| a.as_str()))
        .map_err(|_| LoadError::NoHost(url.clone()))?;
    let path = url.path_and_query().map_or_else(
        || Uri::from_static("/"),
        |p| p.as_str().parse().unwrap_or_else(|_| Uri::from_static("/")),
    );
    Ok(Target {
        authority,
        host_header,
        path,
    })
}

async fn worker(shared: Arc<Shared>, index: u32, concurrency: u32) {
    let seed = shared.config.seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut connections: Vec<Option<SendRequest<Full<Bytes>>>> =
        (0..shared.targets.len()).map(|_| None).collect();
    let mut pace = shared.config.rate.map(|rate| {
        let period = Duration::from_secs_f64(f64::from(concurrency) / rate);
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !shared.stopped.load(Ordering::Relaxed) {
        if shared.config.counted {
            match shared.permits.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
        }
        if let Some(t) = pace.as_mut() {
            t.tick().await;
        }
        let draw = rng.random_range(0..10_000u32);
        let version = shared
            .split
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pick(draw);
        let Some(version) = version else {
            // No version has traffic: nothing to send until the split changes; the request
            // handed out goes back for later.
            if shared.config.counted {
                shared.permits.add_permits(1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let outcome = send(&shared, &mut connections[version], version).await;
        shared.stats[version]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(outcome);
        let answered = shared.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if answered >= shared.target_answered.load(Ordering::SeqCst) {
            shared.iteration_done.notify_waiters();
        }
    }
}

async fn send(
    shared: &Shared,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    version: usize,
) -> Outcome {
    let config = &shared.config;
    let started = Instant::now();
    let attempt = async {
        let sender = match connection {
            Some(s) if !s.is_closed() => s,
            _ => connection.insert(connect(&shared.targets[version].authority).await?),
        };
        sender.ready().await.map_err(|_| ())?;
        let target = &shared.targets[version];
        let mut request = Request::builder()
            .method(config.method.clone())
            .uri(target.path.clone())
            .header(HOST, target.host_header.clone());
        for (name, value) in &config.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(config.body.clone()))
            .map_err(|_| ())?;
        let response = sender.send_request(request).await.map_err(|_| ())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|_| ())?.to_bytes();
        Ok::<_, ()>((parts.status, parts.headers, body))
    };
    match tokio::time::timeout(config.timeout, attempt).await {
        Ok(Ok((status, headers, body))) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let error = status.is_server_error();
            let conversion = !error
                && (config.conversion.header.is_some() || config.conversion.needs_body())
                && config.conversion.matches(&headers, &body);
            Outcome::Answered {
                latency_ms,
                error,
                conversion,
            }
        }
        Ok(Err(())) => {
            *connection = None;
            Outcome::Failed
        }
        Err(_) => {
            *connection = None;
            Outcome::TimedOut
        }
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, ()> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|_| ())?;
    // Latency measurements must not wait for Nagle.
    stream.set_nodelay(true).map_err(|_| ())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ())?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the peer closes it.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_recognised_by_header_or_json_field() {
        let by_header = Conversion {
            header: Some(HeaderName::from_static("x-conversion")),
            json_field: None,
        };
        let mut headers = hyper::HeaderMap::new();
        assert!(!by_header.matches(&headers, b""));
        headers.insert("x-conversion", HeaderValue::from_static("1"));
        assert!(by_header.matches(&headers, b""));
        headers.insert("x-conversion", HeaderValue::from_static("false"));
        assert!(!by_header.matches(&headers, b""));

        let by_field = Conversion {
            header: None,
            json_field: Some("conversion".into()),
        };
        let none = hyper::HeaderMap::new();
        assert!(by_field.matches(&none, br#"{"conversion": true}"#));
        assert!(by_field.matches(&none, br#"{"conversion": 2}"#));
        assert!(!by_field.matches(&none, br#"{"conversion": false}"#));
        assert!(!by_field.matches(&none, b"not json"));
    }
}
