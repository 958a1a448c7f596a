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
