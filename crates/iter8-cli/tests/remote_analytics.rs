//! `--analytics-url`: the same questions asked of the analytics service over HTTP.

use iter8_api::AssessmentRequest;
use iter8_cli::Analytics;
use iter8_cli::analytics::AnalyticsError;

async fn analytics_service() -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = iter8_analytics::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..iter8_analytics::Config::default()
    };
    let app = iter8_analytics::App::new(&config).expect("app");
    let server = iter8_analytics::Server::bind(&config, app)
        .await
        .expect("bind");
    let addr = server.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

fn example() -> AssessmentRequest {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/examples/assessment-request.json");
    let text = std::fs::read_to_string(path).expect("example request");
    serde_json::from_str(&text).expect("valid example")
}

#[tokio::test]
async fn the_service_answers_like_the_engine_in_process() {
    let (url, stop) = analytics_service().await;
    let remote = Analytics::new(Some(&url)).expect("client");
    assert_eq!(remote.describe(), url);
    let request = example();
    let over_http = remote.assess(&request).await.expect("remote answer");
    let in_process = Analytics::new(None)
        .expect("in process")
        .assess(&request)
        .await
        .expect("local answer");
    assert_eq!(over_http.decision, in_process.decision);
    assert_eq!(over_http.split, in_process.split);
    let _ = stop.send(());
}

#[tokio::test]
async fn a_refused_request_names_the_field() {
    let (url, stop) = analytics_service().await;
    let mut request = example();
    request.iteration = 0;
    match Analytics::new(Some(&url))
        .expect("client")
        .assess(&request)
        .await
    {
        Err(AnalyticsError::Rejected { field, .. }) => assert_eq!(field, "iteration"),
        other => panic!("expected a rejection naming the field, got {other:?}"),
    }
    let _ = stop.send(());
}

/// The analytics service requiring `token`.
async fn secured_service(token: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = iter8_analytics::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        token: Some(iter8_analytics::auth::BearerToken::new(token)),
        ..iter8_analytics::Config::default()
    };
    let app = iter8_analytics::App::new(&config).expect("app");
    let server = iter8_analytics::Server::bind(&config, app)
        .await
        .expect("bind");
    let addr = server.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn iter8_assess_reaches_a_secured_service_with_the_token_file() {
    let (url, stop) = secured_service("cli-token").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cli-token\n").expect("token file");
    let request_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/examples/assessment-request.json");
    let assess = |with_token: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iter8"));
        cmd.args(["assess", "--json", "-f"])
            .arg(&request_file)
            .args(["--url", &url])
            .env_remove("ITER8_ANALYTICS_TOKEN_FILE");
        if with_token {
            cmd.arg("--analytics-token-file").arg(&token_file);
        }
        cmd.output()
    };
    let out = assess(true).await.expect("iter8 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: iter8_api::AssessmentResponse =
        serde_json::from_slice(&out.stdout).expect("an assessment");
    assert_eq!(answer.iteration, example().iteration);
    // Without the token the same call is refused, and says what to check.
    let out = assess(false).await.expect("iter8 runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    let _ = stop.send(());
}
