//! A real Prometheus (Debian's `/usr/bin/prometheus`, installed by `setup.sh`) scraping
//! in-process sample apps (`iter8-sample-app`) over HTTP: the metrics source of tests that
//! need real observations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use iter8_sample_app::{App, Config};

/// Environment variable overriding the path of the Prometheus binary.
pub const PROMETHEUS_BIN_ENV: &str = "ITER8_PROMETHEUS";

/// The Prometheus binary; missing means the machine was not set up, which is an error.
pub fn prometheus_binary() -> Result<PathBuf> {
    let path = std::env::var_os(PROMETHEUS_BIN_ENV)
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    if !path.is_file() {
        bail!(
            "{} not found: run `bash integration-tests/setup.sh` (it installs Debian's prometheus package) or set {PROMETHEUS_BIN_ENV}",
            path.display()
        );
    }
    Ok(path)
}

/// A Prometheus process scraping a fixed list of targets every second (job `sample`), with
/// its own data directory; killed and removed on drop.
pub struct Prometheus {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `targets` every second.
    pub fn start(targets: &[SocketAddr]) -> Result<Self> {
        let bin = prometheus_binary()?;
        let dir = tempfile::tempdir().context("temp dir for prometheus")?;
        let port = free_port()?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: sample\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("writing prometheus.yml")?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .context("creating prometheus.log")?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What it logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Kills it (idempotent).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs an instant query directly and returns Prometheus's JSON answer.
    pub async fn query(&self, http: &reqwest::Client, promql: &str) -> Result<serde_json::Value> {
        http.get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .context("querying prometheus")?
            .json()
            .await
            .context("prometheus answered no JSON")
    }

    /// Waits until Prometheus is ready and has scraped each of `targets` targets at least
    /// twice.
    pub async fn wait_scraped(
        &self,
        http: &reqwest::Client,
        targets: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                let up = self
                    .query(http, "count(count_over_time(up{job=\"sample\"}[1m]) >= 2)")
                    .await?;
                if up["data"]["result"][0]["value"][1] == targets.to_string().as_str() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus did not become ready and scrape {targets} targets within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port free on the loopback interface right now.
pub fn free_port() -> Result<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free port")?;
    Ok(port)
}

/// Serves a sample app on a free loopback port in this process, for the life of the runtime.
pub async fn start_app(config: Config) -> Result<SocketAddr> {
    let app = App::new(config).context("invalid sample app config")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the sample app")?;
    let addr = listener.local_addr()?;
    tokio::spawn(iter8_sample_app::serve(
        listener,
        app,
        std::future::pending(),
    ));
    Ok(addr)
}

/// Sends `n` requests to a sample app, 8 at a time; errors answered by the app count as
/// requests, failures to connect are errors.
pub async fn drive(http: &reqwest::Client, addr: SocketAddr, n: usize) -> Result<()> {
    let http = Arc::new(http.clone());
    let answers = futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            async move { http.get(format!("http://{addr}/work/{i}")).send().await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for answer in answers {
        answer.with_context(|| format!("sample app at {addr} did not answer"))?;
    }
    Ok(())
}
