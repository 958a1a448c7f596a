//! A real gateway for end-to-end tests: Traefik (the official binary, built by
//! `integration-tests/tools/traefik/build.sh`) running as a process against the test
//! kube-apiserver with its Kubernetes Gateway API provider, proxying real HTTP to sample-app
//! processes that live in a network namespace of the test's own.
//!
//! Why a network namespace: the API server refuses loopback addresses in EndpointSlices, and
//! nothing runs pods here. Each [`Backends`] creates a namespace `iter8-<suffix>` joined to
//! the host by a veth pair on a private /30, starts one `iter8-sample-app` per version inside
//! it (all on the namespace's address, one port each), and publishes that address in an
//! EndpointSlice of each version's Service, as a cluster's endpoint controller would for pods.
//! The gateway, Prometheus and the tests reach the apps over the veth; everything is removed
//! on drop.
//!
//! Each [`Gateway`] is a Traefik of its own, scoped to one test namespace and to a
//! GatewayClass labelled for that namespace, authenticating with a token of its own
//! ServiceAccount (TokenRequest API) bound to the RBAC Traefik documents.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::process::{Process, workspace_binary};
use crate::{ControlPlane, built_binary, crds, unique_suffix, wait_until};

/// Environment variable overriding the path of the `traefik` binary.
pub const TRAEFIK_BIN_ENV: &str = "ITER8_TRAEFIK_BIN";
/// The controller name Traefik's Gateway API provider answers to.
pub const TRAEFIK_CONTROLLER_NAME: &str = "traefik.io/gateway-controller";
/// Name of the Gateway every [`Gateway`] creates in its namespace.
pub const GATEWAY_NAME: &str = "gateway";
/// Port of every sample-app Service (the apps' own ports are in the EndpointSlices).
pub const SERVICE_PORT: u16 = 8080;
/// Label selecting the GatewayClass of one [`Gateway`].
const CLASS_LABEL: &str = "test.iter8.tools/gateway";
/// Field manager of what the harness applies.
const MANAGER: &str = "iter8-integration-tests";

/// Path of the `traefik` binary built by `integration-tests/setup.sh` (or `ITER8_TRAEFIK_BIN`).
pub fn traefik_binary() -> Result<PathBuf> {
    built_binary(TRAEFIK_BIN_ENV, "traefik")
}

/// The Gateway API HTTPRoute resource.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

fn gateway_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ))
}

/// Runs `ip` with `args`; fails with its stderr when it does.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian package iproute2, installed by setup.sh)")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network namespace

/// A network namespace of this test run, joined to the host by a veth pair on a /30 of
/// 10.192.0.0/10: the host side has `host_ip`, the namespace side `inner_ip`. Deleted on drop.
#[derive(Debug)]
pub struct NetworkNamespace {
    name: String,
    host_link: String,
    /// The host's address on the veth (what the apps see as the client).
    pub host_ip: Ipv4Addr,
    /// The namespace's address: where its processes listen.
    pub inner_ip: Ipv4Addr,
}

impl NetworkNamespace {
    /// Creates a namespace with a unique name and a /30 that no interface of the host uses.
    pub fn create() -> Result<Self> {
        let suffix = unique_suffix();
        let hash = fnv(&suffix);
        let name = format!("iter8-{suffix}");
        let host_link = format!("i8h{:08x}", hash as u32);
        let inner_link = format!("i8n{:08x}", hash as u32);
        ip(&["netns", "add", &name])?;
        let mut ns = Self {
            name,
            host_link,
            host_ip: Ipv4Addr::UNSPECIFIED,
            inner_ip: Ipv4Addr::UNSPECIFIED,
        };
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
            "netns",
            &ns.name,
        ])?;
        let used = host_addresses()?;
        let subnet = (0..64u64)
            .map(|i| subnet_30(hash.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
            .find(|(host, inner)| !used.contains(host) && !used.contains(inner))
            .context("no free /30 in 10.192.0.0/10 for the test's network namespace")?;
        (ns.host_ip, ns.inner_ip) = subnet;
        let (host_cidr, inner_cidr) = (format!("{}/30", ns.host_ip), format!("{}/30", ns.inner_ip));
        ip(&["addr", "add", &host_cidr, "dev", &ns.host_link])?;
        ip(&["link", "set", &ns.host_link, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &inner_cidr,
            "dev",
            &inner_link,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &inner_link, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns` name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys its end of the veth pair, and with it the host's.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: network namespace {} not deleted: {e:#}",
                self.name
            );
        }
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

/// The IPv4 addresses configured on the host's interfaces now.
fn host_addresses() -> Result<Vec<Ipv4Addr>> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .context("running `ip -4 addr show`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse().ok())
        .collect())
}

/// The host and namespace addresses of the /30 number `n` (mod 2^20) of 10.192.0.0/10.
fn subnet_30(n: u64) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 192, 0, 0)) + ((n as u32) & 0xf_ffff) * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Sample-app backends

/// One version of the sample app behind a Service.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    /// The Service's name (what route entries name).
    pub service: String,
    /// The app's configuration (its `version` labels its metrics and answers).
    pub config: iter8_sample_app::Config,
}

/// A running sample app in the network namespace.
#[derive(Debug)]
pub struct Backend {
    /// The Service that fronts it.
    pub service: String,
    /// Its version label.
    pub version: String,
    /// Where it listens (inside the namespace, reachable from the host).
    pub addr: SocketAddr,
    process: Process,
}

/// Sample apps in a network namespace of their own, each behind a Service whose
/// EndpointSlice holds its address. The processes stop and the namespace goes on drop.
pub struct Backends {
    // Declared before `netns`: the apps stop before their namespace is deleted.
    apps: Vec<Backend>,
    netns: NetworkNamespace,
    _dir: tempfile::TempDir,
}

impl Backends {
    /// Starts one `iter8-sample-app` per spec in a new network namespace, waits until each
    /// answers, and creates its Service and EndpointSlice in `namespace`.
    pub async fn start(client: &Client, namespace: &str, specs: &[BackendSpec]) -> Result<Self> {
        let bin = workspace_binary("iter8-sample-app")?;
        let netns = NetworkNamespace::create()?;
        let dir = tempfile::tempdir().context("temp dir for the sample apps")?;
        let mut apps = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let port = 8081 + u16::try_from(i)?;
            let addr = SocketAddr::from((netns.inner_ip, port));
            let c = &spec.config;
            let buckets: Vec<String> = c.buckets_ms.iter().map(f64::to_string).collect();
            let mut command = netns.command(&bin);
            command
                .arg(format!("--listen={addr}"))
                .arg(format!("--version-label={}", c.version))
                .arg(format!("--latency-ms={}", c.latency_ms))
                .arg(format!("--latency-sigma={}", c.latency_sigma))
                .arg(format!("--error-rate={}", c.error_rate))
                .arg(format!("--conversion-rate={}", c.conversion_rate))
                .arg(format!("--seed={}", c.seed))
                .arg(format!("--buckets-ms={}", buckets.join(",")));
            let process = Process::spawn(&format!("app-{}", spec.service), command, dir.path())?;
            apps.push(Backend {
                service: spec.service.clone(),
                version: c.version.clone(),
                addr,
                process,
            });
        }
        let backends = Self {
            apps,
            netns,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        for app in &backends.apps {
            wait_until(
                &format!("sample app {} at {}", app.service, app.addr),
                Duration::from_secs(30),
                async || {
                    let ok = http
                        .get(format!("http://{}/healthz", app.addr))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    Ok(ok.then_some(()))
                },
            )
            .await
            .with_context(|| app.process.log())?;
            publish_service(client, namespace, &app.service, app.addr).await?;
        }
        Ok(backends)
    }

    /// The apps, in the order of the specs.
    pub fn apps(&self) -> &[Backend] {
        &self.apps
    }

    /// The apps' addresses (Prometheus' scrape targets).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.apps.iter().map(|a| a.addr).collect()
    }

    /// The network namespace they run in.
    pub fn netns(&self) -> &NetworkNamespace {
        &self.netns
    }

    /// What each app counted as served (`iter8_sample_requests_total`), in app order: the
    /// traffic as the apps themselves measured it.
    pub async fn served(&self, http: &reqwest::Client) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(self.apps.len());
        for app in &self.apps {
            let text = http
                .get(format!("http://{}/metrics", app.addr))
                .send()
                .await
                .with_context(|| format!("reading the metrics of {}", app.service))?
                .text()
                .await?;
            let value = text
                .lines()
                .find(|l| l.starts_with("iter8_sample_requests_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .with_context(|| {
                    format!("{} exposes no iter8_sample_requests_total", app.service)
                })?;
            out.push(value as u64);
        }
        Ok(out)
    }

    /// The apps' logs (for failure messages).
    pub fn logs(&self) -> String {
        self.apps
            .iter()
            .map(|a| a.process.log())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A selector-less Service `name` (port [`SERVICE_PORT`], named `http`) and an EndpointSlice
/// with `addr`, as the endpoint controller would publish a ready pod.
async fn publish_service(client: &Client, ns: &str, name: &str, addr: SocketAddr) -> Result<()> {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP",
                            "targetPort": addr.port()}]}
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .with_context(|| format!("creating Service {name}"))?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-netns"), "labels": {
            "kubernetes.io/service-name": name,
            "endpointslice.kubernetes.io/managed-by": MANAGER,
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}]
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &slice)
        .await
        .with_context(|| format!("creating the EndpointSlice of {name}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The gateway

/// A Traefik process serving the Gateway [`GATEWAY_NAME`] of one namespace on a loopback port.
/// Stopped, and its cluster-scoped objects deleted, by [`Gateway::stop`] or on drop.
pub struct Gateway {
    process: Process,
    port: u16,
    client: Client,
    class: String,
    binding: String,
    /// Set once [`Gateway::stop`] deleted the cluster-scoped objects: drop has nothing to do.
    cleaned_up: bool,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Installs the Gateway API CRDs, creates Traefik's ServiceAccount and RBAC, a GatewayClass
    /// of its own and Gateway [`GATEWAY_NAME`] in `namespace`, starts Traefik with a token of
    /// that ServiceAccount and waits until it has programmed the Gateway.
    pub async fn start(
        control_plane: &ControlPlane,
        client: &Client,
        namespace: &str,
    ) -> Result<Self> {
        let bin = traefik_binary()?;
        crds::install(client, &crds::gateway_api_crds(), None).await?;
        let port = crate::prometheus::free_port()?;
        let class = format!("iter8-it-{namespace}");
        let binding = format!("iter8-it-traefik-{namespace}");
        let ssa = PatchParams::apply(MANAGER).force();

        // RBAC as Traefik's documentation lists it for the Gateway API provider.
        let role: ClusterRole = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "iter8-it-traefik"},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["gateway.networking.k8s.io"],
                 "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes",
                               "referencegrants", "backendtlspolicies", "tcproutes", "tlsroutes"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["gateway.networking.k8s.io"],
                 "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status",
                               "grpcroutes/status", "backendtlspolicies/status",
                               "tcproutes/status", "tlsroutes/status"],
                 "verbs": ["update"]}
            ]
        }))?;
        Api::<ClusterRole>::all(client.clone())
            .patch("iter8-it-traefik", &ssa, &Patch::Apply(&role))
            .await
            .context("applying Traefik's ClusterRole")?;
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "traefik"}}))?;
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .context("creating Traefik's ServiceAccount")?;
        let rb: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "iter8-it-traefik"},
            "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": namespace}]
        }))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(&binding, &ssa, &Patch::Apply(&rb))
            .await
            .context("binding Traefik's ClusterRole")?;
        let token = service_account_token(client, namespace, "traefik").await?;

        // The class this Traefik alone selects, and the Gateway on its entry point's port.
        let classes: Api<DynamicObject> =
            Api::all_with(client.clone(), &gateway_resource("GatewayClass"));
        let gateway_class: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": class, "labels": {CLASS_LABEL: namespace}},
            "spec": {"controllerName": TRAEFIK_CONTROLLER_NAME}
        }))?;
        classes
            .patch(&class, &ssa, &Patch::Apply(&gateway_class))
            .await
            .context("applying the GatewayClass")?;
        let gateways: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &gateway_resource("Gateway"));
        let gateway: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME},
            "spec": {"gatewayClassName": class, "listeners": [
                {"name": "web", "port": port, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "Same"}}}
            ]}
        }))?;
        gateways
            .create(&PostParams::default(), &gateway)
            .await
            .context("creating the Gateway")?;

        let dir = tempfile::tempdir().context("temp dir for traefik")?;
        let kubeconfig = dir.path().join("traefik.kubeconfig");
        std::fs::write(
            &kubeconfig,
            control_plane.token_kubeconfig("traefik", &token)?,
        )?;
        let mut command = Command::new(&bin);
        command
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .arg("--global.checkNewVersion=false")
            .arg("--global.sendAnonymousUsage=false")
            .arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
            .arg("--entryPoints.web.transport.lifeCycle.graceTimeOut=1s")
            // Apply route changes at once (the default waits up to 2 s between reloads).
            .arg("--providers.providersThrottleDuration=100ms")
            .arg("--providers.kubernetesGateway=true")
            .arg(format!(
                "--providers.kubernetesGateway.namespaces={namespace}"
            ))
            .arg(format!(
                "--providers.kubernetesGateway.labelSelector={CLASS_LABEL}={namespace}"
            ))
            .arg("--log.level=INFO")
            .arg("--log.noColor=true");
        let process = Process::spawn("traefik", command, dir.path())?;
        let mut gw = Self {
            process,
            port,
            client: client.clone(),
            class,
            binding,
            cleaned_up: false,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            ensure!(gw.process.is_running(), "traefik exited:\n{}", gw.log());
            let g = gateways.get(GATEWAY_NAME).await?;
            if condition_true(&g.data["status"]["conditions"], "Programmed") {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                bail!(
                    "Traefik did not program the Gateway within 60 s:\n{}",
                    gw.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The gateway's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The parentRefs entry of a route attached to this gateway.
    pub fn parent_ref(&self) -> Value {
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME})
    }

    /// What Traefik logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops Traefik and deletes its cluster-scoped objects (the namespace holds the rest).
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.process.terminate();
        delete_cluster_objects(&self.client, &self.class, &self.binding).await?;
        self.cleaned_up = true;
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A failed test leaves them to this best effort (they name the test's namespace, so
        // they never clash with another test's).
        if self.cleaned_up {
            return;
        }
        let (client, class, binding) = (
            self.client.clone(),
            self.class.clone(),
            self.binding.clone(),
        );
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(delete_cluster_objects(&client, &class, &binding))
        })
        .join();
    }
}

async fn delete_cluster_objects(client: &Client, class: &str, binding: &str) -> Result<()> {
    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &gateway_resource("GatewayClass"));
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for result in [
        classes
            .delete(class, &DeleteParams::background())
            .await
            .map(|_| ()),
        bindings
            .delete(binding, &DeleteParams::background())
            .await
            .map(|_| ()),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A token of ServiceAccount `name` in `namespace`, valid for an hour (TokenRequest API).
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> Result<String> {
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?
        .status
        .and_then(|s| s.token)
        .with_context(|| format!("no token in the TokenRequest of ServiceAccount {name}"))
}

/// Whether `conditions` (a Kubernetes condition list) has `type_` with status True.
fn condition_true(conditions: &Value, type_: &str) -> bool {
    conditions.as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

/// Creates HTTPRoute `name` attached to `gateway`, matching every path, with `backends`
/// (Service name, weight) on port [`SERVICE_PORT`], and waits until Traefik accepted it.
pub async fn create_route(
    client: &Client,
    namespace: &str,
    gateway: &Gateway,
    name: &str,
    backends: &[(&str, u32)],
) -> Result<()> {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(service, weight)| json!({"name": service, "port": SERVICE_PORT, "weight": weight}))
        .collect();
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &http_route_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [gateway.parent_ref()],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "backendRefs": refs}]
        }
    }))?;
    routes.create(&PostParams::default(), &route).await?;
    let accepted = wait_until(
        &format!("Traefik to accept HTTPRoute {name}"),
        Duration::from_secs(30),
        async || {
            let r = routes.get(name).await?;
            let accepted = r.data["status"]["parents"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| condition_true(&p["conditions"], "Accepted"))
            });
            Ok(accepted.then_some(()))
        },
    )
    .await;
    match accepted {
        Ok(()) => Ok(()),
        Err(e) => {
            let status = routes.get(name).await.map(|r| r.data["status"].clone());
            Err(e.context(format!("route status: {status:?}\n{}", gateway.log())))
        }
    }
}

/// The weights of HTTPRoute `name`'s first rule, by backend Service name (an absent weight
/// is 1, as the Gateway API defines).
pub async fn route_weights(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, u32>> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &http_route_resource());
    let route = routes.get(name).await?;
    Ok(route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .context("the route has no backendRefs")?
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["weight"].as_u64().map_or(1, |w| w as u32),
            )
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Load through the gateway, and what the apps measured

/// Requests sent through a URL by a background task, `concurrency` at a time, until
/// stopped; counts answers by the `x-version` header the sample app sets.
pub struct Load {
    task: JoinHandle<()>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    failures: Arc<AtomicU64>,
}

impl Load {
    /// Starts sending GET `<url>/work/<n>` requests, `concurrency` in flight.
    pub fn start(url: &str, concurrency: usize) -> Self {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::new();
        let (url, c, f) = (url.to_string(), counts.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let workers = (0..concurrency).map(|w| {
                let (http, url, c, f) = (http.clone(), url.clone(), c.clone(), f.clone());
                async move {
                    for n in 0u64.. {
                        match http.get(format!("{url}/work/{w}-{n}")).send().await {
                            Ok(r) => {
                                let version = r
                                    .headers()
                                    .get("x-version")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("none")
                                    .to_string();
                                let _ = r.bytes().await;
                                *c.lock().expect("not poisoned").entry(version).or_default() += 1;
                            }
                            Err(_) => {
                                f.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            });
            futures::future::join_all(workers).await;
        });
        Self {
            task,
            counts,
            failures,
        }
    }

    /// Answers so far by version (`none`: an answer without the header, e.g. the gateway's
    /// own 404 or 503).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("not poisoned").clone()
    }

    /// Requests that got no answer at all.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Stops sending.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One reading: when, the weights the route carried, and what each app had served.
#[derive(Clone, Debug)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// The route's weights, in app order.
    pub weights: Vec<u32>,
    /// The apps' served-request counters, in app order.
    pub served: Vec<u64>,
}

/// Polls a route's weights and the apps' counters every 100 ms in the background, so a
/// test can compare the traffic each app measured under each split with that split.
pub struct SplitRecorder {
    task: JoinHandle<()>,
    readings: Arc<Mutex<Vec<Reading>>>,
}

/// Traffic served under one split: the counts each app measured in a window where the route
/// carried `weights`.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The split in force, in app order.
    pub weights: Vec<u32>,
    /// Requests each app served in the window.
    pub served: Vec<u64>,
    /// How long the window was.
    pub duration: Duration,
}

impl SplitRecorder {
    /// Starts recording route `route` in `namespace` against `backends` (whose Services are
    /// its backendRefs).
    pub fn start(client: &Client, namespace: &str, route: &str, backends: &Arc<Backends>) -> Self {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let (client, ns, route, backends, out) = (
            client.clone(),
            namespace.to_string(),
            route.to_string(),
            backends.clone(),
            readings.clone(),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let reading = async {
                    let weights = route_weights(&client, &ns, &route).await?;
                    let served = backends.served(&http).await?;
                    let weights = backends
                        .apps()
                        .iter()
                        .map(|a| weights.get(&a.service).copied().unwrap_or(0))
                        .collect();
                    anyhow::Ok(Reading {
                        at: Instant::now(),
                        weights,
                        served,
                    })
                };
                if let Ok(r) = reading.await {
                    out.lock().expect("not poisoned").push(r);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { task, readings }
    }

    /// The readings so far.
    pub fn readings(&self) -> Vec<Reading> {
        self.readings.lock().expect("not poisoned").clone()
    }

    /// The traffic under each split the route carried, leaving out the first `settle` after
    /// each change (the gateway applies a change a moment after the API server has it) and
    /// the reading at which a change was first seen.
    pub fn segments(&self, settle: Duration) -> Vec<Segment> {
        segments(&self.readings(), settle)
    }

    /// Stops recording.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for SplitRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Splits `readings` into runs of equal weights and returns, per run, the counter growth from
/// the first reading at least `settle` after the run began to the run's last reading.
pub fn segments(readings: &[Reading], settle: Duration) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < readings.len() {
        let end = readings[start..]
            .iter()
            .position(|r| r.weights != readings[start].weights)
            .map_or(readings.len(), |p| start + p);
        let run = &readings[start..end];
        let began = run[0].at;
        if let Some(first) = run.iter().position(|r| r.at >= began + settle) {
            let (a, b) = (&run[first], &run[run.len() - 1]);
            if b.at > a.at {
                out.push(Segment {
                    weights: a.weights.clone(),
                    served: b
                        .served
                        .iter()
                        .zip(&a.served)
                        .map(|(b, a)| b.saturating_sub(*a))
                        .collect(),
                    duration: b.at - a.at,
                });
            }
        }
        start = end;
    }
    out
}

/// Whether `observed` of `total` requests is within the two-sided 99.9 % binomial bound of a
/// share `weight` / `weights`: a weight of 0 must see nothing, the whole weight everything,
/// and otherwise the normal approximation with continuity correction, |k - np| <= z sqrt(np(1-p)) + 1/2,
/// z = 3.2905.
pub fn within_binomial_bound(observed: u64, total: u64, weight: u32, weights: u32) -> bool {
    if weights == 0 || total == 0 {
        return observed == 0;
    }
    if weight == 0 {
        return observed == 0;
    }
    if weight == weights {
        return observed == total;
    }
    let (n, p) = (total as f64, f64::from(weight) / f64::from(weights));
    let sd = (n * p * (1.0 - p)).sqrt();
    (observed as f64 - n * p).abs() <= 3.2905 * sd + 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ms: u64, weights: &[u32], served: &[u64], t0: Instant) -> Reading {
        Reading {
            at: t0 + Duration::from_millis(ms),
            weights: weights.to_vec(),
            served: served.to_vec(),
        }
    }

    #[test]
    fn segments_count_each_split_after_it_settled() {
        let t0 = Instant::now();
        let readings = vec![
            reading(0, &[100, 0], &[0, 0], t0),
            reading(500, &[100, 0], &[50, 0], t0),
            reading(1000, &[100, 0], &[100, 0], t0),
            reading(1100, &[50, 50], &[110, 0], t0),
            reading(1400, &[50, 50], &[120, 20], t0),
            reading(2100, &[50, 50], &[150, 50], t0),
        ];
        let s = segments(&readings, Duration::from_millis(300));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].weights, vec![100, 0]);
        assert_eq!(s[0].served, vec![50, 0], "from the first settled reading");
        assert_eq!(s[1].weights, vec![50, 50]);
        assert_eq!(s[1].served, vec![30, 30]);
    }

    #[test]
    fn the_binomial_bound_is_exact_at_the_edges_and_about_3_3_sigma_inside() {
        assert!(within_binomial_bound(0, 1000, 0, 100));
        assert!(!within_binomial_bound(1, 1000, 0, 100));
        assert!(within_binomial_bound(1000, 1000, 100, 100));
        assert!(!within_binomial_bound(999, 1000, 100, 100));
        // n = 1000, p = 0.5: sd = 15.8, bound = 52.5.
        assert!(within_binomial_bound(552, 1000, 50, 100));
        assert!(!within_binomial_bound(553, 1000, 50, 100));
        assert!(within_binomial_bound(448, 1000, 1, 2));
    }

    #[test]
    fn subnets_are_distinct_slash_30s_inside_10_192_slash_10() {
        let (h, i) = subnet_30(0);
        assert_eq!(
            (h, i),
            (Ipv4Addr::new(10, 192, 0, 1), Ipv4Addr::new(10, 192, 0, 2))
        );
        let (h, i) = subnet_30(u64::MAX);
        assert_eq!(
            (h, i),
            (
                Ipv4Addr::new(10, 255, 255, 253),
                Ipv4Addr::new(10, 255, 255, 254)
            )
        );
    }
}
