//! A fence on the controller's kube client: writes (routes, status, finalizers) leave the
//! process only while it leads.
//!
//! Losing the Lease stops the controller, but kube-runtime lets running reconciles finish,
//! and a replica cut off from the API server may not even know it lost. Those reconciles
//! must not move traffic after another replica has taken over. The fence sits below all of
//! them, in the client's tower stack: a mutating request is sent only while [`Leadership`]
//! says the Lease was renewed within the renew deadline, and is abandoned when that window
//! closes. Reads, Lease requests (the election's own) and Events pass unfenced.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request};
use tower::{BoxError, Layer, Service};

use crate::leader::Leadership;

/// A write refused because this process does not lead (or stopped leading while it waited).
#[derive(Debug, thiserror::Error)]
#[error(
    "not leading: {method} {path} refused (the Lease was not renewed within the renew deadline)"
)]
pub struct NotLeading {
    /// The refused request's method.
    pub method: Method,
    /// The refused request's path.
    pub path: String,
}

/// Builds a kube client from `config` whose writes are fenced by `leadership`.
pub fn fenced_client(
    config: kube::Config,
    leadership: Leadership,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer::new(leadership))
        .build())
}

/// The tower layer of [`Fence`].
#[derive(Clone, Debug)]
pub struct FenceLayer {
    leadership: Leadership,
}

impl FenceLayer {
    /// A fence that lets writes through while `leadership` is held.
    pub fn new(leadership: Leadership) -> Self {
        Self { leadership }
    }
}

impl<S> Layer<S> for FenceLayer {
    type Service = Fence<S>;

    fn layer(&self, inner: S) -> Fence<S> {
        Fence {
            inner,
            leadership: self.leadership.clone(),
        }
    }
}

/// Refuses mutating requests unless the Lease is held; see the module docs.
#[derive(Clone, Debug)]
pub struct Fence<S> {
    inner: S,
    leadership: Leadership,
}

impl<S, B> Service<Request<B>> for Fence<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !fenced(request.method(), request.uri().path()) {
            let sent = self.inner.call(request);
            return Box::pin(async move { sent.await.map_err(Into::into) });
        }
        let refusal = NotLeading {
            method: request.method().clone(),
            path: request.uri().path().to_string(),
        };
        let Some(left) = self.leadership.remaining() else {
            tracing::warn!(%refusal, "write fenced");
            return Box::pin(std::future::ready(Err(refusal.into())));
        };
        let sent = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(left, sent).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => {
                    tracing::warn!(%refusal, "write abandoned at the end of leadership");
                    Err(refusal.into())
                }
            }
        })
    }
}

/// Whether a request is a write the fence guards: every mutating method, except on Leases
/// (the election) and Events (reporting is harmless and helps explain a loss).
fn fenced(method: &Method, path: &str) -> bool {
    let mutating = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    mutating && !matches!(resource(path), Some("leases" | "events"))
}

/// The resource (plural) a Kubernetes API path names: `/api/v1/namespaces/ns/events/x` →
/// `events`, `/apis/g/v1/namespaces/ns/httproutes/r` → `httproutes`.
fn resource(path: &str) -> Option<&str> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match segments.next()? {
        "api" => {
            segments.next()?;
        }
        "apis" => {
            segments.next()?;
            segments.next()?;
        }
        _ => return None,
    }
    let first = segments.next()?;
    if first == "namespaces"
        && let (Some(_namespace), Some(resource)) = (segments.next(), segments.next())
    {
        return Some(resource);
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;

    #[test]
    fn the_resource_is_read_from_core_group_and_cluster_paths() {
        for (path, expected) in [
            ("/api/v1/namespaces/ns/events/e", Some("events")),
            (
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                Some("events"),
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/iter8",
                Some("leases"),
            ),
            (
                "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r",
                Some("httproutes"),
            ),
            (
                "/apis/iter8.tools/v3alpha1/namespaces/ns/experiments/e/status",
                Some("experiments"),
            ),
            ("/api/v1/namespaces/ns", Some("namespaces")),
            (
                "/apis/iter8.tools/v3alpha1/experiments",
                Some("experiments"),
            ),
            ("/version", None),
        ] {
            assert_eq!(resource(path), expected, "{path}");
        }
    }

    /// The counting service the fence tests put behind it.
    type Counted = tower::util::BoxCloneService<Request<()>, (), Infallible>;

    /// A fence in front of a service that counts what reaches it.
    fn fence(leadership: &Leadership) -> (Fence<Counted>, Arc<AtomicU32>) {
        let reached = Arc::new(AtomicU32::new(0));
        let seen = reached.clone();
        let inner = tower::service_fn(move |_: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(()) }
        });
        (
            FenceLayer::new(leadership.clone()).layer(tower::util::BoxCloneService::new(inner)),
            reached,
        )
    }

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request")
    }

    const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r";

    #[tokio::test]
    async fn without_leadership_writes_are_refused_and_reads_leases_and_events_pass() {
        let (svc, reached) = fence(&Leadership::elected());
        for method in [Method::PATCH, Method::PUT, Method::POST, Method::DELETE] {
            let err = svc
                .clone()
                .oneshot(request(method.clone(), ROUTE))
                .await
                .expect_err("fenced");
            assert!(err.is::<NotLeading>(), "{method}: {err}");
        }
        assert_eq!(reached.load(Ordering::SeqCst), 0);
        for (method, path) in [
            (Method::GET, ROUTE),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
            ),
            (Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events"),
        ] {
            svc.clone()
                .oneshot(request(method, path))
                .await
                .expect("passes");
        }
        assert_eq!(reached.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn writes_pass_while_leading_and_without_an_election() {
        for leadership in [Leadership::unconditional(), {
            let held = Leadership::elected();
            held.hold_for(Duration::from_secs(10));
            held
        }] {
            let (svc, reached) = fence(&leadership);
            svc.oneshot(request(Method::PATCH, ROUTE))
                .await
                .expect("passes");
            assert_eq!(reached.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stalled_past_the_end_of_leadership_is_abandoned() {
        let leadership = Leadership::elected();
        leadership.hold_for(Duration::from_secs(2));
        let stalled = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(())
        });
        let svc = FenceLayer::new(leadership).layer(stalled);
        let started = tokio::time::Instant::now();
        let err = svc
            .oneshot(request(Method::PATCH, ROUTE))
            .await
            .expect_err("abandoned");
        assert!(err.is::<NotLeading>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
