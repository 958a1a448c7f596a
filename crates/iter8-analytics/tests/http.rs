//! The service over real HTTP: a server on a free loopback port, called with reqwest.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use iter8_analytics::app::Engine;
use iter8_analytics::{App, Config, Server};
use iter8_api::{AssessmentRequest, AssessmentResponse, ErrorResponse, InvalidRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and a client for it; shuts the server down when asked.
struct TestServer {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(config: Config) -> Self {
        Self::start_with(config, iter8_engine::assess).await
    }

    async fn start_with(mut config: Config, engine: Engine) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let app = App::with_engine(&config, engine).unwrap();
        let server = Server::bind(&config, app).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/v1/assessments"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn assess(&self, request: &Value) -> reqwest::Response {
        self.post_json(serde_json::to_vec(request).unwrap()).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn example() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/assessment-request.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts the status and that the body is an `ErrorResponse`; returns its error.
async fn expect_error(response: reqwest::Response, status: StatusCode) -> InvalidRequest {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "every error body is JSON"
    );
    let text = response.text().await.unwrap();
    let body: ErrorResponse = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not an ErrorResponse ({e}): {text}"));
    body.error
}

async fn expect_invalid(server: &TestServer, request: &Value, field: &str) -> InvalidRequest {
    let error = expect_error(
        server.assess(request).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error.field, field, "reason: {}", error.reason);
    error
}

#[tokio::test]
async fn example_request_is_assessed_with_a_decision_and_a_split_summing_to_100() {
    let server = TestServer::start(Config::default()).await;
    let response = server.assess(&example()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: AssessmentResponse = response.json().await.unwrap();
    assert_eq!(answer.iteration, 6);
    assert_eq!(answer.versions.len(), 3);
    assert_eq!(answer.split.iter().map(|w| w.weight).sum::<u32>(), 100);
    assert!(!answer.decision.reason.is_empty());
}

#[tokio::test]
async fn the_same_request_twice_gives_identical_bytes() {
    let server = TestServer::start(Config::default()).await;
    let first = server.assess(&example()).await.bytes().await.unwrap();
    let second = server.assess(&example()).await.bytes().await.unwrap();
    assert!(!first.is_empty());
    assert_eq!(first, second);
}

#[tokio::test]
async fn the_answer_matches_the_engine_called_directly() {
    let server = TestServer::start(Config::default()).await;
    let over_http = server.assess(&example()).await.bytes().await.unwrap();
    let request: AssessmentRequest = serde_json::from_value(example()).unwrap();
    let direct = serde_json::to_vec(&iter8_engine::assess(&request).unwrap()).unwrap();
    // Bytes, not parsed values: serde_json's default float parsing may be off by one ulp.
    assert_eq!(over_http, direct);
}

#[tokio::test]
async fn malformed_json_is_400_and_says_where() {
    let server = TestServer::start(Config::default()).await;
    let error = expect_error(
        server
            .post_json(r#"{"kind": "abn", "versions": [{"name": "a",}]}"#)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error.field, "versions[0]");
    assert!(error.reason.contains("line 1 column"), "{}", error.reason);

    let truncated = expect_error(
        server.post_json(r#"{"kind": "abn","#).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(truncated.field, "body");
}

#[tokio::test]
async fn trailing_garbage_after_the_document_is_400() {
    let server = TestServer::start(Config::default()).await;
    let mut body = serde_json::to_vec(&example()).unwrap();
    body.extend_from_slice(b" {}");
    let error = expect_error(server.post_json(body).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error.field, "body");
}

#[tokio::test]
async fn unknown_strategy_is_422_naming_strategy_algorithm() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["strategy"]["algorithm"] = json!("thompson");
    let error = expect_invalid(&server, &request, "strategy.algorithm").await;
    assert!(error.reason.contains("thompson"), "{}", error.reason);
}

#[tokio::test]
async fn negative_count_is_422_naming_the_counter() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][1]["metrics"]["errors"]["counter"] = json!(-3);
    expect_invalid(&server, &request, "versions[1].metrics.errors.counter").await;
}

#[tokio::test]
async fn count_beyond_two_to_the_53_is_422_naming_the_counter_and_the_limit() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][1]["metrics"]["errors"]["counter"] = json!(1e300);
    let error = expect_invalid(&server, &request, "versions[1].metrics.errors.counter").await;
    assert!(
        error.reason.contains("must be at most 2^53"),
        "{}",
        error.reason
    );
}

#[tokio::test]
async fn nan_string_where_a_number_goes_is_422_naming_the_counter() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][1]["metrics"]["errors"]["counter"] = json!("NaN");
    expect_invalid(&server, &request, "versions[1].metrics.errors.counter").await;
}

#[tokio::test]
async fn huge_exponent_is_422_naming_the_counter() {
    let server = TestServer::start(Config::default()).await;
    // serde_json refuses 1e400 rather than reading it as infinity; either way it is refused.
    let body = serde_json::to_string(&example()).unwrap().replacen(
        r#""counter":84"#,
        r#""counter":1e400"#,
        1,
    );
    assert!(body.contains("1e400"));
    let error = expect_error(
        server.post_json(body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error.field, "versions[0].metrics.errors.counter");
}

#[tokio::test]
async fn decreasing_cumulative_bucket_counts_are_422_naming_the_bucket() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][0]["metrics"]["latency"]["histogram"]["buckets"][3]["count"] = json!(100);
    expect_invalid(
        &server,
        &request,
        "versions[0].metrics.latency.histogram.buckets[3].count",
    )
    .await;
}

#[tokio::test]
async fn evidence_with_a_weight_over_100_is_422_naming_the_interval() {
    // The next request as a client would send it: the answer's evidence carried back, with
    // one recorded weight out of range.
    let server = TestServer::start(Config::default()).await;
    let first = example();
    let answer: AssessmentResponse = server.assess(&first).await.json().await.unwrap();
    let mut next = first.clone();
    next["iteration"] = json!(answer.iteration + 1);
    for v in next["versions"].as_array_mut().unwrap() {
        v.as_object_mut().unwrap().remove("history");
    }
    next["evidence"] = serde_json::to_value(&answer.evidence).unwrap();
    assert_eq!(server.assess(&next).await.status(), StatusCode::OK);
    next["evidence"]["versions"][1]["recent"][0]["weight"] = json!(150);
    let error = expect_invalid(&server, &next, "evidence.versions[1].recent[0].weight").await;
    assert!(error.reason.contains("at most 100"), "{}", error.reason);
}

#[tokio::test]
async fn weights_not_summing_to_100_are_422() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][0]["weight"] = json!(50);
    let error = expect_invalid(&server, &request, "versions[].weight").await;
    assert!(error.reason.contains("110"), "{}", error.reason);
}

#[tokio::test]
async fn criterion_on_a_metric_no_version_has_data_for_yet_is_assessed_not_refused() {
    // Review M6: an experiment created before its load starts has no data for any version;
    // that is a state of the data, not a bad request.
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["criteria"]["objectives"][0]["metric"] = json!("saturation");
    let response = server.assess(&request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: AssessmentResponse = response.json().await.unwrap();
    assert_ne!(answer.decision.action, iter8_api::Action::Promote);
}

#[tokio::test]
async fn seventeen_versions_are_422() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    let template = request["versions"][2].clone();
    let versions = request["versions"].as_array_mut().unwrap();
    while versions.len() < 17 {
        let mut v = template.clone();
        v["name"] = json!(format!("reviews-extra-{}", versions.len()));
        v["weight"] = json!(0);
        versions.push(v);
    }
    let error = expect_invalid(&server, &request, "versions").await;
    assert!(error.reason.contains("17"), "{}", error.reason);
}

#[tokio::test]
async fn histogram_with_257_buckets_is_422() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    let buckets: Vec<Value> = (1..=257)
        .map(|i| json!({"le": i * 10, "count": i}))
        .collect();
    request["versions"][0]["metrics"]["latency"]["histogram"]["buckets"] = json!(buckets);
    expect_invalid(
        &server,
        &request,
        "versions[0].metrics.latency.histogram.buckets",
    )
    .await;
}

#[tokio::test]
async fn unknown_field_is_422_naming_it() {
    let server = TestServer::start(Config::default()).await;
    let mut request = example();
    request["versions"][1]["wieght"] = json!(30);
    let error = expect_invalid(&server, &request, "versions[1].wieght").await;
    assert!(error.reason.contains("unknown field"), "{}", error.reason);
}

#[tokio::test]
async fn blank_unknown_key_is_422_naming_the_body() {
    // Found by schemathesis ("") and cargo fuzz ("  "): the field was blank.
    let server = TestServer::start(Config::default()).await;
    for key in ["", "  "] {
        let error = expect_invalid(&server, &json!({ key: null }), "body").await;
        assert!(error.reason.contains("unknown field"), "{}", error.reason);
    }
    // Found by cargo fuzz: a key ending in `.?` was named twice (`ki.ki.?`).
    let error = expect_invalid(&server, &json!({ "ki.?": 1 }), "ki.?").await;
    assert!(error.reason.contains("unknown field"), "{}", error.reason);
    // And one holding a backtick was cut at it (`n` for "n`me").
    let mut request = example();
    request["versions"][1]["n`me"] = json!(1);
    expect_invalid(&server, &request, "versions[1].n`me").await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let server = TestServer::start(Config::default()).await;
    let response = server
        .client
        .post(server.url("/v1/assessments"))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&example()).unwrap())
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(error.field, "content-type");
}

#[tokio::test]
async fn json_with_charset_parameter_is_accepted() {
    let server = TestServer::start(Config::default()).await;
    let response = server
        .client
        .post(server.url("/v1/assessments"))
        .header("content-type", "application/json; charset=utf-8")
        .body(serde_json::to_vec(&example()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let config = Config {
        body_limit: 1024,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut request = example();
    request["padding"] = json!("x".repeat(2048));
    let error = expect_error(server.assess(&request).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(error.field, "body");
    assert!(error.reason.contains("1024"), "{}", error.reason);
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let server = TestServer::start(Config::default()).await;
    let error = expect_error(server.get("/v2/assessments").await, StatusCode::NOT_FOUND).await;
    assert_eq!(error.field, "path");
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let server = TestServer::start(Config::default()).await;
    let response = server.get("/v1/assessments").await;
    assert_eq!(response.headers()["allow"], "POST");
    let error = expect_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(error.field, "method");
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let server = TestServer::start(Config::default()).await;
    for path in ["/healthz", "/readyz"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn readyz_is_503_while_shutting_down_and_requests_still_work() {
    let config = Config {
        shutdown_delay: Duration::from_secs(3),
        ..Config::default()
    };
    let mut server = TestServer::start(config).await;
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
    server.begin_shutdown();
    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = server.get("/readyz").await.status();
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error = expect_error(server.get("/readyz").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(error.reason.contains("shutting down"), "{}", error.reason);
    // Draining, not refusing: load balancers may still send work until they notice.
    assert_eq!(server.assess(&example()).await.status(), StatusCode::OK);
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_server_stops_when_shutdown_completes() {
    let mut server = TestServer::start(Config::default()).await;
    server.begin_shutdown();
    let task = &mut server.task;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stops within 5 s")
        .unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_status() {
    let server = TestServer::start(Config::default()).await;
    assert_eq!(server.assess(&example()).await.status(), StatusCode::OK);
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"iter8_analytics_http_requests_total{endpoint="/v1/assessments",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("iter8_analytics_http_request_duration_seconds_bucket"));
    assert!(text.contains("iter8_analytics_http_requests_in_flight"));
    assert!(
        text.contains(r#"iter8_analytics_engine_duration_seconds_count{outcome="assessed"} 1"#)
    );
}

#[tokio::test]
async fn unmatched_paths_share_one_metrics_label() {
    let server = TestServer::start(Config::default()).await;
    server.get("/wp-admin").await;
    server.get("/.env").await;
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"iter8_analytics_http_requests_total{endpoint="unmatched",method="GET",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(!text.contains("wp-admin"));
}

#[tokio::test]
async fn served_openapi_equals_the_checked_in_file() {
    let server = TestServer::start(Config::default()).await;
    let response = server.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let served = response.text().await.unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(iter8_analytics::openapi::CHECKED_IN_PATH);
    let checked_in = std::fs::read_to_string(path).unwrap();
    assert!(
        served == checked_in,
        "regenerate with: ITER8_UPDATE_API=1 cargo test -p iter8-analytics openapi"
    );
}

/// Takes long enough that concurrent requests overlap, then refuses.
fn slow_engine(_: &AssessmentRequest) -> Result<AssessmentResponse, InvalidRequest> {
    std::thread::sleep(Duration::from_millis(800));
    Err(InvalidRequest::new("slow", "a stand-in engine"))
}

fn panicking_engine(_: &AssessmentRequest) -> Result<AssessmentResponse, InvalidRequest> {
    panic!("a stand-in engine that panics")
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503_and_retry_after() {
    let config = Config {
        max_in_flight: NonZeroUsize::new(1).unwrap(),
        ..Config::default()
    };
    let server = TestServer::start_with(config, slow_engine).await;
    let request = example();
    let responses = futures::future::join_all((0..4).map(|_| server.assess(&request))).await;
    let mut admitted = 0;
    let mut shed = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNPROCESSABLE_ENTITY => admitted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.headers()["retry-after"], "1");
                let error = expect_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
                assert_eq!(error.field, "request");
                shed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(admitted >= 1, "at least one request gets through");
    assert!(shed >= 1, "the excess is shed, not queued");
    // Probes are outside the limit: they answer while assessments are saturated.
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_assessment_times_out_with_503() {
    let config = Config {
        request_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let server = TestServer::start_with(config, slow_engine).await;
    let error = expect_error(
        server.assess(&example()).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(error.field, "request");
    assert!(error.reason.contains("200ms"), "{}", error.reason);
}

#[tokio::test]
async fn engine_panic_is_a_500_json_and_the_server_keeps_serving() {
    let server = TestServer::start_with(Config::default(), panicking_engine).await;
    let error = expect_error(
        server.assess(&example()).await,
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert_eq!(error.field, "request");
    assert!(!error.reason.contains("panic"), "details stay in the log");
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
    let again = server.assess(&example()).await;
    assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// The number of `iter8_analytics_http_requests_total` series `/metrics` shows.
async fn request_series(server: &TestServer) -> Vec<String> {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("iter8_analytics_http_requests_total{"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn ten_thousand_invented_methods_add_one_series_not_ten_thousand() {
    let server = TestServer::start(Config::default()).await;
    for i in 0..10_000 {
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let answer = server
            .client
            .request(method, server.url("/v1/assessments"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_client_error(), "{}", answer.status());
    }
    let series = request_series(&server).await;
    assert!(series.len() <= 4, "{series:#?}");
    assert!(
        series
            .iter()
            .any(|s| s.contains(r#"method="other""#) && s.ends_with(" 10000")),
        "{series:#?}"
    );
}

/// A raw TCP connection to the server.
async fn connect(server: &TestServer) -> tokio::net::TcpStream {
    let addr = server.base.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_client_sending_its_headers_too_slowly_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = Config {
        header_read_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut slow = connect(&server).await;
    // Headers started, never finished: the tower timeout never starts for this request.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection is still open 5 s after a 500 ms header timeout"
    );
    // The server serves others as before.
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let config = Config {
        max_connections: NonZeroUsize::new(2).unwrap(),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let idle = [connect(&server).await, connect(&server).await];
    let third = server
        .client
        .get(server.url("/healthz"))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(
        third.is_err_and(|e| e.is_timeout()),
        "a third connection was served beyond the cap of 2"
    );
    let [first, _second] = idle;
    drop(first);
    let served = server
        .client
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_metrics_port_serves_metrics_and_nothing_of_the_api() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let app = App::new(&config).unwrap();
    let server = Server::bind(&config, app).await.unwrap();
    let metrics = format!("http://{}", server.metrics_addr().unwrap().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let scrape = client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    assert!(scrape.text().await.unwrap().contains("iter8_analytics_"));
    for path in ["/v1/assessments", "/healthz", "/openapi.json"] {
        let answer = client.get(format!("{metrics}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
