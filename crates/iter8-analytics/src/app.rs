//! The HTTP API: routes, handlers and the layers that protect them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router, middleware};
use iter8_api::{AssessmentRequest, AssessmentResponse, InvalidRequest};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::{self, AuthState};
use crate::config::Config;
use crate::error::{self, ApiError};
use crate::metrics::{self, Metrics, MetricsError};
use crate::openapi;

/// The signature of the decision engine, so tests can stand in a slow or panicking one.
pub type Engine = fn(&AssessmentRequest) -> Result<AssessmentResponse, InvalidRequest>;

/// The router and the handles a server needs to run it.
pub struct App {
    /// Every route with its layers, ready for `axum::serve`.
    pub router: Router,
    /// `/metrics` alone, for a port of its own (see `Config::metrics_listen`).
    pub metrics_router: Router,
    /// Flipped when shutdown starts, so `/readyz` turns away new traffic.
    pub readiness: Readiness,
    /// The registry behind `/metrics`.
    pub metrics: Metrics,
}

/// Whether the service takes new work; shared between the server and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service as shutting down; `/readyz` answers 503 from now on.
    pub fn shut_down(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the service still takes new work.
    pub fn is_ready(&self) -> bool {
        !self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    engine: Engine,
    /// Bounds how many assessments run at once (see `Config::engine_threads`); requests beyond
    /// it wait (cheaply) for a turn.
    engine_slots: Arc<Semaphore>,
    metrics: Metrics,
    readiness: Readiness,
    openapi: Bytes,
    body_limit: usize,
}

impl App {
    /// The service with the real decision engine.
    pub fn new(config: &Config) -> Result<Self, MetricsError> {
        Self::with_engine(config, iter8_engine::assess)
    }

    /// The service with the given engine in place of the real one.
    pub fn with_engine(config: &Config, engine: Engine) -> Result<Self, MetricsError> {
        let metrics = Metrics::new()?;
        let readiness = Readiness::default();
        let state = AppState {
            engine,
            engine_slots: Arc::new(Semaphore::new(config.engine_threads())),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            openapi: Bytes::from(openapi::pretty()),
            body_limit: config.body_limit,
        };
        let timeout = config.request_timeout;
        // Only assessments are limited: probes and scrapes must answer even under overload.
        let assess_route = post(assess).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |err: BoxError| async move {
                    layer_error(&err, timeout)
                }))
                .load_shed()
                .concurrency_limit(config.max_in_flight.get())
                .timeout(timeout)
                .layer(DefaultBodyLimit::max(config.body_limit)),
        );
        let mut api = Router::new().route("/v1/assessments", assess_route);
        // The token guards the API only, and is checked before shedding, so requests without
        // it take no slot. Probes, /metrics and /openapi.json stay open: kubelet and
        // Prometheus carry no token, and none of them reveals or changes anything.
        if let Some(token) = &config.token {
            let auth = AuthState {
                token: token.clone(),
                metrics: metrics.clone(),
            };
            api = api.route_layer(middleware::from_fn_with_state(auth, auth::require_bearer));
        }
        // Outermost, so a connection without a client certificate learns nothing else.
        if config.tls_client_ca_file.is_some() {
            api = api.route_layer(middleware::from_fn_with_state(
                metrics.clone(),
                auth::require_client_certificate,
            ));
        }
        let metrics_router = Router::new()
            .route("/metrics", get(render_metrics))
            .with_state(state.clone());
        let router = Router::new()
            .merge(api)
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics))
            .route("/openapi.json", get(serve_openapi))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    // Errors worth an ERROR line are logged where they arise (ApiError); at the
                    // default level every shed 503 would be one, a log flood under overload.
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                metrics::track,
            ))
            .with_state(state);
        Ok(Self {
            router,
            metrics_router,
            readiness,
            metrics,
        })
    }
}

/// `POST /v1/assessments`: decode, run the engine off the async workers, answer.
async fn assess(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    check_content_type(request.headers())?;
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                limit: state.body_limit,
            },
            _ => ApiError::MalformedJson {
                field: "body".to_owned(),
                reason: rejection.body_text(),
            },
        })?;
    let request = decode(&body)?;

    let permit = Arc::clone(&state.engine_slots)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let (engine, metrics) = (state.engine, state.metrics.clone());
    let answer = tokio::task::spawn_blocking(move || {
        // Held until the work is really done, even if the client gave up meanwhile.
        let _permit = permit;
        let start = Instant::now();
        let result = engine(&request);
        let outcome = if result.is_ok() {
            "assessed"
        } else {
            "refused"
        };
        metrics.observe_engine(outcome, start.elapsed());
        result.map(|response| serde_json::to_vec(&response))
    })
    .await;
    match answer {
        Ok(Ok(Ok(json))) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
        }
        Ok(Ok(Err(e))) => Err(ApiError::Internal(format!("encoding the response: {e}"))),
        Ok(Err(invalid)) => Err(ApiError::Invalid(invalid)),
        Err(join) => Err(ApiError::Internal(panic_message(join))),
    }
}

/// Decodes the body, naming the path of the first value that does not fit. Public so that the
/// property tests and fuzzers decode exactly as the server does.
pub fn decode(body: &[u8]) -> Result<AssessmentRequest, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let request = serde_path_to_error::deserialize(&mut json).map_err(error::from_decode_error)?;
    // Trailing garbage after the document is malformed JSON, not an ignorable extra.
    json.end().map_err(|e| ApiError::MalformedJson {
        field: "body".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(request)
}

/// Accepts `application/json` and `application/*+json`, with parameters such as charset.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("none".to_owned()));
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.to_owned()))
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "the assessment was cancelled".to_owned();
    }
    let payload = join.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned());
    format!("the engine panicked: {text}")
}

/// Turns the refusals of the tower layers into JSON answers.
fn layer_error(err: &BoxError, timeout: Duration) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::TimedOut(timeout)
    } else {
        ApiError::Internal(format!("layer failed: {err}"))
    }
}

/// `GET /healthz`: the process answers, so it is alive.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 503 once shutdown has started.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.readiness.is_ready() {
        Ok("ready\n")
    } else {
        Err(ApiError::ShuttingDown)
    }
}

/// `GET /metrics`: the Prometheus text format.
async fn render_metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}

/// `GET /openapi.json`: the document generated at startup.
async fn serve_openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
