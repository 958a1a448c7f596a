//! The `Experiment` resource: what to compare, how to route, what to measure, when to stop.

use std::collections::BTreeMap;

use iter8_api::{
    Action, AssessmentRequest, Criteria, Decision, ExperimentKind, RatioMetric, Strategy,
    VersionAssessment, VersionWeight, Winner,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ledger::{Design, Ledger};

/// The most entries kept in `status.history`, which is for people (`kubectl describe`,
/// reports): the engine never reads it; what it needs is in `status.ledger`.
pub const HISTORY_LIMIT: usize = 1_000;

/// The most bytes the serialised status may take. etcd refuses objects over 1.5 MiB; the
/// status stays far below that with the largest experiment the API admits (16 versions,
/// histograms of 256 buckets, [`HISTORY_LIMIT`] history records): the engine's evidence is
/// bounded (running statistics, the last observation of each metric, a window of recent
/// intervals), and history records carry no observations. A test holds it to this budget.
pub const STATUS_SIZE_BUDGET: usize = 640 * 1024;

/// An experiment on live traffic: a baseline and candidates, assessed every interval.
// Every printer column repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iter8.tools",
    version = "v3alpha1",
    kind = "Experiment",
    namespaced,
    status = "ExperimentStatus",
    shortname = "exp",
    category = "iter8",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Iteration",
        type_ = "integer",
        json_path = ".status.completedIterations"
    ),
    printcolumn(
        name = "Winner",
        type_ = "string",
        json_path = ".status.winner.version"
    ),
    printcolumn(
        name = "Weights",
        type_ = "string",
        json_path = ".status.weightsSummary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.kind == 'performanceTest' || has(self.router)")
        .message("experiments that shift traffic need a router")
        .field_path(".router"),
    validation = Rule::new("!has(self.strategy.split) || size(self.strategy.split) == size(self.versions)")
        .message("strategy.split needs one weight per version")
        .field_path(".strategy.split"),
    validation = Rule::new("!has(self.strategy.split) || self.strategy.split.sum() == 100")
        .message("strategy.split must sum to 100")
        .field_path(".strategy.split"),
    validation = Rule::new("!has(self.router) || self.versions.all(v, has(v.backend))")
        .message("with a router, every version needs the backend it maps to")
        .field_path(".versions"),
    validation = Rule::new("!has(self.manualOverride) || !has(self.manualOverride.split) || size(self.manualOverride.split) == size(self.versions)")
        .message("manualOverride.split needs one weight per version")
        .field_path(".manualOverride.split"),
    // What an experiment tests is fixed once it exists: the sequential guarantees assume fixed
    // hypotheses, and weights and history are kept by version position. To test something
    // else, create a new Experiment. (pause, resume, terminate, the analytics URL and the
    // failure policy stay editable.)
    validation = Rule::new("self.kind == oldSelf.kind")
        .message("kind cannot change once the experiment exists; create a new Experiment")
        .field_path(".kind"),
    validation = Rule::new("self.versions == oldSelf.versions")
        .message("versions (names, order, backends, labels) cannot change once the experiment exists: weights and history are kept by position; create a new Experiment")
        .field_path(".versions"),
    validation = Rule::new("has(self.router) == has(oldSelf.router) && (!has(self.router) || self.router == oldSelf.router)")
        .message("router cannot change once the experiment exists: the old route would keep its split; create a new Experiment")
        .field_path(".router"),
    validation = Rule::new("has(self.metrics) == has(oldSelf.metrics) && (!has(self.metrics) || self.metrics == oldSelf.metrics)")
        .message("metrics cannot change once the experiment exists; create a new Experiment")
        .field_path(".metrics"),
    validation = Rule::new("has(self.ratios) == has(oldSelf.ratios) && (!has(self.ratios) || self.ratios == oldSelf.ratios)")
        .message("ratios cannot change once the experiment exists; create a new Experiment")
        .field_path(".ratios"),
    validation = Rule::new("has(self.criteria) == has(oldSelf.criteria) && (!has(self.criteria) || self.criteria == oldSelf.criteria)")
        .message("criteria cannot change once the experiment exists: the sequential tests assume fixed hypotheses; create a new Experiment")
        .field_path(".criteria"),
    validation = Rule::new("has(self.strategy) == has(oldSelf.strategy) && (!has(self.strategy) || self.strategy == oldSelf.strategy)")
        .message("strategy (algorithm, alpha, winner probability, limits) cannot change once the experiment exists: the sequential tests assume fixed hypotheses; create a new Experiment")
        .field_path(".strategy"),
    validation = Rule::new("has(self.duration) == has(oldSelf.duration) && (!has(self.duration) || self.duration == oldSelf.duration)")
        .message("duration (interval, minIterations, maxIterations) cannot change once the experiment exists; create a new Experiment")
        .field_path(".duration"),
)]
// What each kind and algorithm requires (versions, split, rewards, objectives) is declared once,
// in iter8-api; its CEL rules are generated from there (`rules.rs`).
#[schemars(transform = crate::rules::add_requirement_rules)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// What kind of experiment: performanceTest, canary, ab or abn.
    pub kind: ExperimentKind,
    /// The versions: the first is the baseline, the rest are candidates.
    #[x_kube(
        validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))")
            .message("version names must be unique")
    )]
    #[schemars(length(min = 1, max = 16))]
    pub versions: Vec<VersionSpec>,
    /// The traffic router whose weights the experiment sets; absent for a performance test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Router>,
    /// The metrics collected every iteration, each a reference to a `Metric` resource, under
    /// a name unique in the list (criteria and `status.metricDigests` use it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // A list keyed by name: the API server refuses a duplicate name itself ("Duplicate
    // value"), where a CEL rule over 64 entries would exceed its cost budget.
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<MetricRef>,
    /// Rates derived from two counters (errors per request, conversions per request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<RatioMetric>,
    /// Objectives, relative objectives and rewards.
    #[serde(default)]
    pub criteria: Criteria,
    /// The analytics strategy: algorithm, weight limits, winner probability.
    #[serde(default)]
    pub strategy: Strategy,
    /// Where traffic goes when the experiment ends.
    #[serde(default)]
    pub on_termination: TerminationPolicy,
    /// How often iterations run, and how many.
    #[serde(default)]
    pub duration: Duration,
    /// The analytics service; the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsEndpoint>,
    /// What happens when iterations keep failing (metrics, analytics or router unavailable).
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// A person's instruction that overrides the analytics: pause, resume or terminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_override: Option<ManualOverride>,
    /// The load generator of local mode (`iter8 run`), which sends traffic to each version's
    /// `url`; the controller ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
    /// Where to announce the experiment's progress (start, promotion, rollback, failure, a
    /// gate waiting, the end): the controller's default receivers when absent, none when
    /// empty. Delivery never delays or changes a decision.
    #[x_kube(
        validation = Rule::new("self.all(r, self.exists_one(s, s.name == r.name))")
            .message("notification receiver names must be unique")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub notifications: Option<Vec<crate::NotificationReceiver>>,
    /// Splits that wait for approval before they reach the router (promotion, weight
    /// increases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<crate::gate::Gates>,
    /// The approval of the gate the experiment waits at, written by `iter8 approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::gate::Approval>,
}

/// One version of the service under test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSpec {
    /// The version's name, unique in the experiment.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The backend this version maps to in the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Labels that select this version's series in the metrics backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The version's URL, for local mode (the CLI sends its load there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The workload that serves this version, in the experiment's namespace. When set, the
    /// controller moves traffic to the version only while it is rolled out and Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

/// The workload serving a version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// The workload's kind; `Deployment` (apps/v1) is the one supported.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// The workload's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of workload whose readiness the controller checks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    /// An apps/v1 Deployment.
    #[default]
    Deployment,
}

/// Local mode's load generator: how the `iter8` CLI sends requests to the versions' URLs.
/// Used by `iter8 run` only; the controller ignores it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadSpec {
    /// Requests in flight at once, over all versions (default 8).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 4096))]
    pub concurrency: u32,
    /// Requests per second over all versions; as fast as the versions answer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests per iteration: an iteration ends once this many are answered, instead of
    /// after `duration.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_iteration: Option<u64>,
    /// The HTTP method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Per-request timeout, e.g. `2s` or `500ms` (default `5s`); a timeout counts as an error.
    #[serde(default = "default_request_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: String,
    /// What makes a response a conversion; no conversions are counted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionSpec>,
    /// Upper bounds of the `latency` histogram's buckets, in milliseconds, increasing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets_ms: Option<Vec<f64>>,
    /// Seed of the generator that routes requests by weight.
    #[serde(default)]
    pub seed: u64,
}

fn default_concurrency() -> u32 {
    8
}
fn default_method() -> String {
    "GET".into()
}
fn default_request_timeout() -> String {
    "5s".into()
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            rate: None,
            requests_per_iteration: None,
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            timeout: default_request_timeout(),
            conversion: None,
            latency_buckets_ms: None,
            seed: 0,
        }
    }
}

/// How local mode recognises a conversion in a successful response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversionSpec {
    /// A response header whose presence (with a value other than `0` or `false`) is a
    /// conversion, e.g. `x-conversion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A top-level field of a JSON response body that is `true` (or a non-zero number) for a
    /// conversion, e.g. `conversion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_field: Option<String>,
}

/// A router backend: a Service (Gateway API backendRef, or Istio destination host).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The Service name (Gateway API) or destination host (Istio).
    #[schemars(length(min = 1))]
    pub name: String,
    /// The Service port, when the route names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The Istio DestinationRule subset, when versions share a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

/// The router object whose weights the experiment owns: exactly one kind, written as its one
/// key (`router: {httpRoute: {name: reviews}}`). A new router kind is one more variant here and
/// one module in the controller's `router/`.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[schemars(transform = crate::rules::exactly_one_of)]
#[serde(rename_all = "camelCase")]
pub enum Router {
    /// A Gateway API HTTPRoute rule.
    HttpRoute(RouteRef),
    /// An Istio VirtualService HTTP route.
    VirtualService(RouteRef),
}

/// Always the one-key map users write (`httpRoute: {name: reviews}`): serde's derived enum
/// form is a YAML tag (`!httpRoute`) to YAML serialisers and deserialisers, which would print
/// tags in `iter8 get -o yaml` and refuse the map in users' files.
impl Serialize for Router {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, route) = match self {
            Router::HttpRoute(r) => ("httpRoute", r),
            Router::VirtualService(r) => ("virtualService", r),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(key, route)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Router {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The keys as written; exactly one must be set.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Keys {
            http_route: Option<RouteRef>,
            virtual_service: Option<RouteRef>,
        }
        match Keys::deserialize(deserializer)? {
            Keys {
                http_route: Some(r),
                virtual_service: None,
            } => Ok(Router::HttpRoute(r)),
            Keys {
                http_route: None,
                virtual_service: Some(r),
            } => Ok(Router::VirtualService(r)),
            _ => Err(serde::de::Error::custom(
                "set exactly one of httpRoute or virtualService",
            )),
        }
    }
}

impl Router {
    /// The route the router names, whatever its kind.
    pub fn route(&self) -> &RouteRef {
        match self {
            Router::HttpRoute(r) | Router::VirtualService(r) => r,
        }
    }
}

#[cfg(test)]
mod router_tests {
    use super::*;

    #[test]
    fn a_router_is_written_as_the_one_key_map_users_write_in_json_and_yaml() {
        let router = Router::VirtualService(RouteRef {
            name: "reviews".into(),
            index: 1,
        });
        let json = serde_json::to_value(&router).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"virtualService": {"name": "reviews", "index": 1}})
        );
        let yaml = serde_yaml::to_string(&router).expect("yaml");
        assert_eq!(yaml, "virtualService:\n  name: reviews\n  index: 1\n");
        assert_eq!(
            serde_yaml::from_str::<Router>(&yaml).expect("reads"),
            router
        );
        assert_eq!(
            serde_json::from_value::<Router>(json).expect("reads"),
            router
        );
        for wrong in ["{}", "{httpRoute: {name: a}, virtualService: {name: b}}"] {
            let e = serde_yaml::from_str::<Router>(wrong).expect_err(wrong);
            assert!(e.to_string().contains("set exactly one of"), "{e}");
        }
    }
}

/// A route inside a router object, in the experiment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// The object's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Which rule (HTTPRoute `rules[]`) or route (VirtualService `http[]`) to set.
    #[serde(default)]
    #[schemars(range(min = 0, max = 63))]
    pub index: u32,
}

/// A metric used by the experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricRef {
    /// The name criteria and ratios use.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The `Metric` resource that says how to get it.
    pub metric: ObjectRef,
}

/// A namespaced object reference; the namespace defaults to the experiment's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The object's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where traffic goes when the experiment ends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TerminationPolicy {
    /// All traffic to the winner, or to the baseline when there is none.
    #[default]
    ToWinner,
    /// All traffic back to the baseline.
    ToBaseline,
    /// Leave the last split in place.
    KeepLast,
}

/// When iterations run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.minIterations <= self.maxIterations")
        .message("minIterations must not exceed maxIterations")
)]
#[serde(rename_all = "camelCase")]
pub struct Duration {
    /// Time between iterations, e.g. `30s`, `5m`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    /// No version is promoted before this iteration. With `mann_whitney`, the canary
    /// lifetime when it is at least 8 (else `maxIterations` up to 24, never under 8); at most
    /// 32 there.
    #[serde(default = "default_min_iterations")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_iterations: u32,
    /// The experiment ends after this iteration.
    #[serde(default = "default_max_iterations")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_iterations: u32,
}

fn default_interval() -> String {
    "30s".into()
}
fn default_min_iterations() -> u32 {
    1
}
fn default_max_iterations() -> u32 {
    20
}

impl Default for Duration {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            min_iterations: default_min_iterations(),
            max_iterations: default_max_iterations(),
        }
    }
}

/// What the controller does when iterations keep failing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Failed attempts in a row (no metrics, no analytics, router not writable) after which
    /// `action` is taken; until then the current split is held and the attempt retried.
    #[serde(default = "default_max_failures")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_consecutive_failures: u32,
    /// What to do then.
    #[serde(default)]
    pub action: FailureAction,
}

fn default_max_failures() -> u32 {
    5
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_consecutive_failures: default_max_failures(),
            action: FailureAction::default(),
        }
    }
}

/// The actions of a failure policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailureAction {
    /// Put all traffic on the baseline and end the experiment (phase Failed).
    #[default]
    Rollback,
    /// Hold the current split and stop iterating until the spec changes (phase Paused).
    Pause,
}

/// The analytics service to ask.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsEndpoint {
    /// Base URL, e.g. `http://iter8-analytics.iter8-system:8080`.
    #[schemars(length(min = 1))]
    pub url: String,
}

/// A person's instruction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualOverride {
    /// What to do.
    pub action: OverrideAction,
    /// With `terminate`: the final split, one weight per version (overrides onTermination).
    /// With `pause`: a split to hold while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<u32>>,
}

/// The manual actions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OverrideAction {
    /// Stop iterating and hold the current split (or the given one).
    Pause,
    /// Go on iterating.
    Resume,
    /// End now, applying the given split or the termination policy.
    Terminate,
}

/// What the controller has done and seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the experiment is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// Iterations completed so far; iteration `completedIterations + 1` is next.
    #[serde(default)]
    pub completed_iterations: u32,
    /// When the first iteration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the first iteration is due: one interval after the start, plus an offset within
    /// the interval (at most a minute) taken from the experiment's name, so that experiments
    /// started together (a GitOps sync applying many) do not iterate together ever after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_iteration_due: Option<Time>,
    /// When the last iteration completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_iteration_time: Option<Time>,
    /// The split now applied to the router, in version order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<VersionWeight>,
    /// The split in one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_summary: Option<String>,
    /// The latest assessment of each version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionAssessment>,
    /// The latest decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The version declared best, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Winner>,
    /// The version recommended for promotion at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_version: Option<String>,
    /// The most recent iterations, oldest first (at most 1,000), for display.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<IterationRecord>,
    /// What the next assessment needs: completed iterations, the split in force and the
    /// engine's evidence. Becomes the pending iteration's ledger once its split is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
    /// An iteration whose outcome is decided but not yet fully applied; a restarted
    /// controller finishes it instead of running the iteration again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingIteration>,
    /// Attempts that failed in a row (reset by a completed iteration).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// A digest of each Metric's spec as the experiment first read it, by the name its
    /// criteria use (the first 128 bits of SHA-256 of the spec's canonical JSON, in hex). A
    /// Metric whose spec no longer has this digest pauses the experiment (`MetricChanged`):
    /// a criterion keeps the meaning it had when the experiment began.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub metric_digests: BTreeMap<String, String>,
    /// The spec generation the failure policy paused at; a newer spec resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at_generation: Option<i64>,
    /// A one-line account of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The approval gate the experiment waits at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateStatus>,
    /// The gates opened so far, oldest first (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub approvals: Vec<crate::gate::ApprovalRecord>,
    /// Ready, VersionsReady, GateOpen, AnalyticsAvailable, MetricsAvailable, TrafficApplied, Completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The decided outcome of an iteration, recorded before the router is changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingIteration {
    /// The iteration number.
    pub iteration: u32,
    /// The split to apply, in version order.
    pub weights: Vec<u32>,
    /// The phase the experiment enters once the split is applied.
    pub next_phase: Phase,
    /// The ledger after this iteration's answer; it becomes `status.ledger` once the split
    /// is applied. A retried iteration re-sends the ledger from before the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Ledger>,
}

/// One completed iteration, for display: the engine never reads these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IterationRecord {
    /// The iteration number.
    pub iteration: u32,
    /// When it completed.
    pub time: Time,
    /// The split applied after it, in version order.
    pub weights: Vec<u32>,
    /// What the analytics decided.
    pub action: Action,
    /// The version named by the decision, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ExperimentStatus {
    /// The ledger the next iteration starts from: the recorded one, or, for a status written
    /// before ledgers existed (or after the number of versions changed), one rebuilt from the
    /// completed iterations and the split in force, without evidence.
    pub fn ledger(&self, spec: &ExperimentSpec) -> Ledger {
        match &self.ledger {
            Some(l)
                if l.weights.len() == spec.versions.len()
                    && l.completed == self.completed_iterations =>
            {
                l.clone()
            }
            _ => Ledger {
                completed: self.completed_iterations,
                weights: if self.weights.len() == spec.versions.len() {
                    self.weights.iter().map(|w| w.weight).collect()
                } else {
                    spec.initial_weights()
                },
                evidence: None,
            },
        }
    }
}

/// The phases of an experiment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, no iteration yet.
    #[default]
    Pending,
    /// Iterating.
    Running,
    /// Held by a manual override.
    Paused,
    /// Ended with a decision (promotion, rollback, or an inconclusive end).
    Completed,
    /// Ended because it could not go on (for example the router is gone).
    Failed,
    /// Ended by a manual terminate.
    Aborted,
}

impl Phase {
    /// Whether the experiment has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Aborted)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl ExperimentSpec {
    /// The split an experiment starts from: the fixed split if one is given, otherwise all
    /// traffic on the baseline.
    pub fn initial_weights(&self) -> Vec<u32> {
        if let Some(split) = &self.strategy.split {
            return split.clone();
        }
        (0..self.versions.len())
            .map(|i| if i == 0 { 100 } else { 0 })
            .collect()
    }

    /// The split to leave in place when the experiment ends with `decision`. A rollback
    /// always returns traffic to the baseline, whatever the policy: a candidate shown to fail
    /// keeps no traffic.
    pub fn final_weights(&self, decision: &Decision, current: &[u32]) -> Vec<u32> {
        let on = |index: usize| -> Vec<u32> {
            (0..self.versions.len())
                .map(|i| if i == index { 100 } else { 0 })
                .collect()
        };
        let winner = decision
            .version
            .as_ref()
            .and_then(|name| self.versions.iter().position(|v| &v.name == name));
        match (decision.action, self.on_termination) {
            (Action::Rollback, _) | (_, TerminationPolicy::ToBaseline) => on(0),
            (_, TerminationPolicy::KeepLast) => current.to_vec(),
            (Action::Promote, TerminationPolicy::ToWinner) => on(winner.unwrap_or(0)),
            (_, TerminationPolicy::ToWinner) => on(0),
        }
    }
}

impl Design for ExperimentSpec {
    fn question(&self) -> AssessmentRequest {
        AssessmentRequest {
            kind: self.kind,
            iteration: 1,
            min_iterations: self.duration.min_iterations,
            max_iterations: Some(self.duration.max_iterations),
            versions: self
                .versions
                .iter()
                .map(|v| iter8_api::Version {
                    name: v.name.clone(),
                    weight: 0,
                    metrics: BTreeMap::new(),
                    history: Vec::new(),
                })
                .collect(),
            ratios: self.ratios.clone(),
            criteria: self.criteria.clone(),
            strategy: self.strategy.clone(),
            evidence: None,
        }
    }

    fn initial_weights(&self) -> Vec<u32> {
        ExperimentSpec::initial_weights(self)
    }

    fn final_weights(&self, decision: &Decision, current: &[u32]) -> Vec<u32> {
        ExperimentSpec::final_weights(self, decision, current)
    }
}

#[cfg(test)]
mod ledger_tests {
    use super::*;

    fn spec() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "canary",
            "versions": [{"name": "stable"}, {"name": "next"}],
            "duration": {"maxIterations": 5}
        }))
        .expect("spec")
    }

    #[test]
    fn the_first_request_is_iteration_1_at_the_start_split_without_evidence() {
        let spec = spec();
        let request = Ledger::start(&spec).request(&spec, Vec::new());
        assert_eq!(request.iteration, 1);
        let weights: Vec<u32> = request.versions.iter().map(|v| v.weight).collect();
        assert_eq!(weights, vec![100, 0]);
        assert!(request.evidence.is_none());
        assert!(request.versions.iter().all(|v| v.history.is_empty()));
        assert_eq!(request.max_iterations, Some(5));
    }

    #[test]
    fn a_request_carries_each_versions_observations_and_the_ledgers_split_and_evidence() {
        let spec = spec();
        let ledger = Ledger {
            completed: 2,
            weights: vec![70, 30],
            evidence: None,
        };
        let observed =
            BTreeMap::from([("requests".to_owned(), iter8_api::Observation::Counter(10.0))]);
        let request = ledger.request(&spec, vec![BTreeMap::new(), observed.clone()]);
        assert_eq!(request.iteration, 3);
        let names: Vec<&str> = request.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["stable", "next"]);
        let weights: Vec<u32> = request.versions.iter().map(|v| v.weight).collect();
        assert_eq!(weights, [70, 30]);
        assert!(request.versions[0].metrics.is_empty());
        assert_eq!(request.versions[1].metrics, observed);
    }
}

/// `name=weight` pairs in one line, for `kubectl get`.
pub fn weights_summary(versions: &[VersionSpec], weights: &[u32]) -> String {
    versions
        .iter()
        .zip(weights)
        .map(|(v, w)| format!("{}={w}", v.name))
        .collect::<Vec<_>>()
        .join(",")
}
