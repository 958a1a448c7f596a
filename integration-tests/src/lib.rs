//! Test harness for iter8's integration tests against a real Kubernetes
//! control plane (kube-apiserver + etcd, built by `integration-tests/setup.sh`).
//!
//! A test process gets its control plane from [`ControlPlane::shared`]:
//! * if `ITER8_TEST_KUBECONFIG` is set (as `integration-tests/run.sh` does),
//!   the control plane behind that kubeconfig is used;
//! * otherwise the `kube-env` binary (`integration-tests/.cache/bin/kube-env`,
//!   or `ITER8_KUBE_ENV_BIN`) is started once for the whole test process; it
//!   shuts itself down and removes its data when the test process exits.
//!
//! Each test works in its own namespace ([`TestNamespace`]), so tests can run
//! in parallel against one control plane.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let env = iter8_integration_tests::TestEnv::new("my-test").await?;
//! // ... use env.client and env.namespace.name() ...
//! env.cleanup().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod chart;
pub mod crds;
pub mod gateway;
pub mod partition;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod workloads;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Environment variable naming the kubeconfig of an already running control plane.
pub const KUBECONFIG_ENV: &str = "ITER8_TEST_KUBECONFIG";
/// Environment variable overriding the path of the `kube-env` binary.
pub const KUBE_ENV_BIN_ENV: &str = "ITER8_KUBE_ENV_BIN";
/// Environment variable overriding the path of the `helm` binary.
pub const HELM_BIN_ENV: &str = "ITER8_HELM_BIN";
/// Label put on every namespace the harness creates (value `"true"`).
pub const TEST_NAMESPACE_LABEL: &str = "test.iter8.tools/integration";
/// How long to wait for a self-started control plane to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
/// Lines of kube-env's log kept for error messages.
const LOG_TAIL_LINES: usize = 200;

/// Directory of what `integration-tests/setup.sh` builds and fetches.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache")
}

/// Directory of the binaries built by `integration-tests/setup.sh`.
pub fn cache_bin_dir() -> PathBuf {
    cache_dir().join("bin")
}

/// Path of the `helm` CLI built by `integration-tests/setup.sh` (or `ITER8_HELM_BIN`).
pub fn helm_binary() -> Result<PathBuf> {
    built_binary(HELM_BIN_ENV, "helm")
}

pub(crate) fn built_binary(env_var: &str, name: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(env_var) {
        Some(p) => PathBuf::from(p),
        None => cache_bin_dir().join(name),
    };
    if !path.is_file() {
        bail!(
            "{} not found at {} (run `bash integration-tests/setup.sh` first, or set {env_var})",
            name,
            path.display()
        );
    }
    Ok(path)
}

/// A Kubernetes control plane for tests: where its kubeconfig is, and the
/// `kube-env` process when this test process started it.
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    /// Kept alive for the life of the test process: kube-env exits (and
    /// cleans up) when its stdin closes, i.e. when this process ends.
    _process: Option<KubeEnvProcess>,
}

#[derive(Debug)]
struct KubeEnvProcess {
    _child: Child,
    _stdin: ChildStdin,
}

static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by all tests of this process, started on first use.
    pub fn shared() -> Result<&'static ControlPlane> {
        SHARED
            .get_or_init(|| Self::from_env_or_start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("no Kubernetes control plane for tests: {e}"))
    }

    fn from_env_or_start() -> Result<ControlPlane> {
        match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) if !path.is_empty() => {
                let kubeconfig = PathBuf::from(path);
                if !kubeconfig.is_file() {
                    bail!("{KUBECONFIG_ENV}={} is not a file", kubeconfig.display());
                }
                Ok(ControlPlane {
                    kubeconfig,
                    _process: None,
                })
            }
            _ => Self::start(),
        }
    }

    /// Start a private `kube-env` and wait until it is ready.
    fn start() -> Result<ControlPlane> {
        let bin = built_binary(KUBE_ENV_BIN_ENV, "kube-env")?;
        let data_dir = std::env::temp_dir().join(format!("iter8-kube-env-{}", unique_suffix()));
        let kubeconfig = data_dir.join("kubeconfig");
        let mut child = Command::new(&bin)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().context("kube-env stdin was not piped")?;
        let stdout = child
            .stdout
            .take()
            .context("kube-env stdout was not piped")?;
        let stderr = child
            .stderr
            .take()
            .context("kube-env stderr was not piped")?;

        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        spawn_log_reader(stderr, Arc::clone(&log));
        let (ready_tx, ready_rx) = mpsc::channel();
        spawn_stdout_reader(stdout, ready_tx, Arc::clone(&log));

        let ready = ready_rx.recv_timeout(STARTUP_TIMEOUT);
        if ready.is_err() {
            // Not ready in time, or exited: make sure it is gone, then report.
            let _ = child.kill();
            let status = child.wait().ok();
            let _ = std::fs::remove_dir_all(&data_dir);
            let tail = log_tail(&log);
            bail!(
                "kube-env did not become ready within {STARTUP_TIMEOUT:?} (exit status: {status:?}); its last output:\n{tail}"
            );
        }
        Ok(ControlPlane {
            kubeconfig,
            _process: Some(KubeEnvProcess {
                _child: child,
                _stdin: stdin,
            }),
        })
    }

    /// Path of the admin kubeconfig (for `helm --kubeconfig` and the like).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client configuration for the admin identity (system:masters).
    pub async fn config(&self) -> Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", self.kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("loading kubeconfig")?;
        Ok(config)
    }

    /// A kubeconfig for `user` authenticating with bearer `token` on this control plane's
    /// server, trusting its CA: what a workload's ServiceAccount token gives it.
    pub fn token_kubeconfig(&self, user: &str, token: &str) -> Result<String> {
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig)?)?;
        let cluster = admin["clusters"][0]["cluster"].clone();
        if !cluster["server"].is_string() {
            bail!(
                "admin kubeconfig {} has no server",
                self.kubeconfig.display()
            );
        }
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": serde_json::to_value(&cluster)?}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        });
        Ok(serde_yaml::to_string(&config)?)
    }

    /// A new admin client. Create one per test: a client belongs to the
    /// Tokio runtime it was created on, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<Client> {
        Client::try_from(self.config().await?).context("building kube client")
    }
}

fn spawn_log_reader(stream: impl Read + Send + 'static, log: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
            push_log(&log, line);
        }
    });
}

fn spawn_stdout_reader(
    stream: impl Read + Send + 'static,
    ready: mpsc::Sender<()>,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
            if line.starts_with("kube-env: ready") {
                // The receiver may have given up already; nothing to do then.
                let _ = ready.send(());
            }
            push_log(&log, line);
        }
    });
}

fn push_log(log: &Mutex<VecDeque<String>>, line: String) {
    // A poisoned lock only means another reader panicked; the buffer is fine.
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    if log.len() == LOG_TAIL_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

fn log_tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// A short suffix unique within this machine for the life of the test run:
/// process id, a per-process counter and the clock.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}{:x}", std::process::id(), n, nanos % 0x10000)
}

/// A unique, valid namespace name (RFC 1123 label) starting with `it-<prefix>`.
pub fn unique_name(prefix: &str) -> String {
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let suffix = unique_suffix();
    let max_prefix = 63 - "it--".len() - suffix.len();
    let clean = clean.trim_matches('-');
    let clean = &clean[..clean.len().min(max_prefix)];
    format!("it-{}-{suffix}", clean.trim_end_matches('-'))
}

/// A namespace of one test, labelled [`TEST_NAMESPACE_LABEL`]. Delete it with
/// [`TestNamespace::delete`]; if a test ends without doing so (a failed
/// assertion), dropping it deletes it from a helper thread.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: Config,
    deleted: bool,
}

impl TestNamespace {
    /// Create a namespace with a unique name derived from `prefix`.
    pub async fn create(
        control_plane: &ControlPlane,
        client: &Client,
        prefix: &str,
    ) -> Result<Self> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            config: control_plane.config().await?,
            deleted: false,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete the namespace (its contents go with it).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        let client = Client::try_from(self.config.clone()).context("building kube client")?;
        delete_namespace(client, &self.name).await
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<()> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting namespace {name}")),
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The test's runtime may be gone or unwinding: use a runtime of our own.
        let (name, config) = (self.name.clone(), self.config.clone());
        let worker = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a runtime to delete the namespace")?;
            runtime.block_on(async {
                let client = Client::try_from(config).context("building kube client")?;
                delete_namespace(client, &name).await
            })
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test namespace {} not deleted: {e:#}", self.name),
            Err(_) => eprintln!(
                "warning: test namespace {} not deleted: cleanup thread panicked",
                self.name
            ),
        }
    }
}

/// Everything a typical test needs: the control plane, a client, and a
/// namespace of its own.
pub struct TestEnv {
    /// The shared control plane.
    pub control_plane: &'static ControlPlane,
    /// An admin client on the current test's runtime.
    pub client: Client,
    /// The test's own namespace.
    pub namespace: TestNamespace,
}

/// The Services the tests' experiments route to (HTTPRoute backends `reviews-v1` and
/// `reviews-v2`, Istio host `reviews`). The controller moves traffic only to versions whose
/// Service exists, as a cluster running those apps would have them.
pub const FIXTURE_SERVICES: [&str; 3] = ["reviews", "reviews-v1", "reviews-v2"];

impl TestEnv {
    /// Connect to the shared control plane and create a namespace named after `test_name`,
    /// with the [`FIXTURE_SERVICES`] in it.
    pub async fn new(test_name: &str) -> Result<Self> {
        let control_plane = ControlPlane::shared()?;
        let client = control_plane.client().await?;
        let namespace = TestNamespace::create(control_plane, &client, test_name).await?;
        for name in FIXTURE_SERVICES {
            create_service(&client, namespace.name(), name).await?;
        }
        Ok(TestEnv {
            control_plane,
            client,
            namespace,
        })
    }

    /// Delete the test's namespace.
    pub async fn cleanup(self) -> Result<()> {
        self.namespace.delete().await
    }
}

/// A selector-less Service `name` on port 9080, as a version's backend.
pub async fn create_service(client: &Client, ns: &str, name: &str) -> Result<()> {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .with_context(|| format!("creating Service {ns}/{name}"))?;
    Ok(())
}

/// Polls `check` every 100 ms until it gives a value or `timeout` passes.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("CRD_cel validation");
        let b = unique_name("CRD_cel validation");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 63, "{name} too long");
            assert!(name.starts_with("it-crd-cel-validation-"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name} is not an RFC 1123 label"
            );
        }
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long} too long");
        assert!(!long.contains("--"), "{long}");
    }
}
