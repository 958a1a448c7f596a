//! The client against the real analytics service (token required) and against services that
//! misbehave: the token goes only to allowed endpoints, and an answer that is not an
//! assessment of the request is refused as garbage.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use iter8_analytics::auth::BearerToken;
use iter8_analytics::{App, Config, Server};
use iter8_analytics_client::{
    AnalyticsClient, AnalyticsError, ClientConfig, Endpoints, MAX_ANSWER_BYTES,
};
use iter8_api::{AssessmentRequest, AssessmentResponse};

const TOKEN: &str = "s3cret-analytics-token";

fn example_request() -> AssessmentRequest {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/assessment-request.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The real analytics service, requiring [`TOKEN`].
async fn secured_analytics() -> String {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(BearerToken::new(TOKEN)),
        ..Config::default()
    };
    let app = App::with_engine(&config, iter8_engine::assess).unwrap();
    let server = Server::bind(&config, app).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(async move { server.run(std::future::pending()).await.unwrap() });
    base
}

/// A service answering `answer` to every assessment, recording the Authorization headers it
/// was sent.
async fn fake_analytics(answer: serde_json::Value) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/v1/assessments",
        post(move |headers: HeaderMap| {
            let (record, answer) = (record.clone(), answer.clone());
            async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                record.lock().unwrap().push(auth);
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn client(endpoints: &[&str], token: Option<&str>) -> AnalyticsClient {
    let mut config = ClientConfig::new(Endpoints::only(endpoints.iter().copied()).unwrap());
    config.token = token.map(str::to_owned);
    config.timeout = Duration::from_secs(5);
    config.retries = 0;
    AnalyticsClient::new(config).unwrap()
}

/// The engine's own answer to the example request, as a correct service gives it.
fn good_answer(request: &AssessmentRequest) -> AssessmentResponse {
    iter8_engine::assess(request).unwrap()
}

#[tokio::test]
async fn a_secured_service_is_reached_with_the_token() {
    let base = secured_analytics().await;
    let request = example_request();
    let answer = client(&[&base], Some(TOKEN))
        .assess(&base, &request)
        .await
        .unwrap();
    assert_eq!(answer.iteration, request.iteration);
    let refused = client(&[&base], None).assess(&base, &request).await;
    assert!(
        matches!(refused, Err(AnalyticsError::Unauthorized { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_token_never_goes_to_an_endpoint_that_is_not_allowed() {
    let request = example_request();
    let (trusted, trusted_saw) =
        fake_analytics(serde_json::to_value(good_answer(&request)).unwrap()).await;
    let (foreign, foreign_saw) =
        fake_analytics(serde_json::to_value(good_answer(&request)).unwrap()).await;
    let client = client(&[&trusted], Some(TOKEN));
    client.assess(&trusted, &request).await.unwrap();
    let refused = client.assess(&foreign, &request).await;
    assert!(
        matches!(&refused, Err(AnalyticsError::NotAllowed { url }) if url == &foreign),
        "{refused:?}"
    );
    assert_eq!(
        *trusted_saw.lock().unwrap(),
        vec![format!("Bearer {TOKEN}")]
    );
    assert!(
        foreign_saw.lock().unwrap().is_empty(),
        "no request at all reaches an address nobody allowed"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let request = example_request();
    let (foreign, foreign_saw) =
        fake_analytics(serde_json::to_value(good_answer(&request)).unwrap()).await;
    let target = format!("{foreign}/v1/assessments");
    let app = Router::new().route(
        "/v1/assessments",
        post(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let answer = client(&[&base], Some(TOKEN)).assess(&base, &request).await;
    assert!(
        matches!(answer, Err(AnalyticsError::Garbage(_))),
        "{answer:?}"
    );
    assert!(foreign_saw.lock().unwrap().is_empty());
}

#[tokio::test]
async fn answers_that_do_not_fit_the_request_are_garbage() {
    let request = example_request();
    let good = good_answer(&request);
    type Edit = Box<dyn Fn(&mut AssessmentResponse)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "short split",
            Box::new(|a| {
                a.split.pop();
            }),
        ),
        ("reordered split", Box::new(|a| a.split.reverse())),
        (
            "renamed version",
            Box::new(|a| a.split[0].version = "other".into()),
        ),
        (
            "sum 99",
            Box::new(|a| {
                let i = a.split.iter().position(|w| w.weight > 0).unwrap();
                a.split[i].weight -= 1;
            }),
        ),
        ("sum 101", Box::new(|a| a.split[0].weight += 1)),
        ("another iteration", Box::new(|a| a.iteration += 1)),
        ("assessments reordered", Box::new(|a| a.versions.reverse())),
        (
            "unknown promoted version",
            Box::new(|a| {
                a.decision.action = iter8_api::Action::Promote;
                a.decision.version = Some("nobody".into());
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut bad = good.clone();
        edit(&mut bad);
        let (base, _) = fake_analytics(serde_json::to_value(&bad).unwrap()).await;
        let answer = client(&[&base], None).assess(&base, &request).await;
        assert!(
            matches!(answer, Err(AnalyticsError::Garbage(_))),
            "{what}: {answer:?}"
        );
    }
    let (base, _) = fake_analytics(serde_json::to_value(&good).unwrap()).await;
    let accepted = client(&[&base], None)
        .assess(&base, &request)
        .await
        .unwrap();
    assert_eq!(
        (accepted.decision, accepted.split),
        (good.decision, good.split)
    );
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_garbage() {
    let request = example_request();
    // Valid JSON (a long string), longer than the limit: it is never parsed.
    let huge = serde_json::Value::String("x".repeat(MAX_ANSWER_BYTES + 1));
    let (base, _) = fake_analytics(huge).await;
    let answer = client(&[&base], None).assess(&base, &request).await;
    match answer {
        Err(AnalyticsError::Garbage(why)) => assert!(why.contains("over"), "{why}"),
        other => panic!("expected garbage, got {other:?}"),
    }
}

/// Set (to a proxy's address) only in the child process [`an_environment_proxy_is_not_used`]
/// starts, with HTTP_PROXY and ALL_PROXY pointing at that proxy.
const PROXY_CHILD: &str = "ITER8_TEST_PROXY_CHILD";

#[tokio::test]
async fn an_environment_proxy_is_not_used() {
    // reqwest reads the proxy variables from the environment, which a test cannot set in its
    // own (multi-threaded) process: a child test process gets them instead.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(0_usize));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = proxy.accept().await {
            *count.lock().unwrap() += 1;
        }
    });
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_proxy_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env(PROXY_CHILD, "1")
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(*seen.lock().unwrap(), 0, "the proxy was contacted");
}

#[tokio::test]
#[ignore = "run by an_environment_proxy_is_not_used, with proxy variables set"]
async fn the_proxy_child() {
    if std::env::var_os(PROXY_CHILD).is_none() {
        return;
    }
    let request = example_request();
    let (base, seen) = fake_analytics(serde_json::to_value(good_answer(&request)).unwrap()).await;
    let answer = client(&[&base], Some(TOKEN)).assess(&base, &request).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the service itself was called"
    );
}
