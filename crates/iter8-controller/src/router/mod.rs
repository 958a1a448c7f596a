//! Reading and setting traffic weights in a router object: a Gateway API `HTTPRoute` rule
//! (`http_route.rs`) or an Istio `VirtualService` route (`virtual_service.rs`), each a
//! [`RouterKind`]. The weight arithmetic on the objects is pure; only `KubeRouter` talks to
//! the API server, with optimistic writes (resourceVersion preconditions).
//!
//! A new router kind is one module here implementing [`RouterKind`], one variant of
//! `iter8_crd::Router`, and its arm in [`kind_of`] and entry in [`KINDS`].

mod http_route;
mod virtual_service;

use futures::future::BoxFuture;
use iter8_crd::{Backend, Router, VersionSpec};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

pub use http_route::HttpRoute;
pub use virtual_service::VirtualService;

use crate::caches::Caches;
use crate::conflict::{Backoff, is_conflict};

/// The field manager iter8 applies router weights as.
pub const FIELD_MANAGER: &str = "iter8-controller";

/// Why the router could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The router object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
    },
    /// The object has no rule or route at the index the experiment names.
    #[error("{kind} {name} has no {list}[{index}]")]
    NoRoute {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The list the index is into.
        list: &'static str,
        /// The index.
        index: u32,
    },
    /// A backend of the route matches no version, or a version has no backend.
    #[error("{0}")]
    Mismatch(String),
    /// The route kept changing under every attempt to write it (409 Conflict after all
    /// retries): someone else writes it as fast as iter8 does.
    #[error("the route changed under every write (409 Conflict after all retries): {0}")]
    Conflict(kube::Error),
    /// The API server failed.
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// One kind of router object: where its weighted entries are and how they name a backend.
pub trait RouterKind: Send + Sync + std::fmt::Debug {
    /// The kind's name (`HTTPRoute`).
    fn kind(&self) -> &'static str;

    /// The API resource, for dynamic clients and watches.
    fn api_resource(&self) -> ApiResource;

    /// The field under `spec` holding the list of routes (`rules`, `http`).
    fn list(&self) -> &'static str;

    /// The field of one route holding its weighted entries (`backendRefs`, `route`).
    fn entries(&self) -> &'static str;

    /// Whether an entry of a route in `namespace` sends traffic to `backend`.
    fn matches(&self, namespace: &str, entry: &Value, backend: &Backend) -> bool;

    /// An entry's weight as the router reads it (an absent weight has a kind's default).
    fn weight(&self, entry: &Value) -> u32;

    /// A new entry sending `weight` to `backend`.
    fn new_entry(&self, backend: &Backend, weight: u32) -> Value;
}

/// Every router kind the controller drives (and watches, when installed).
pub const KINDS: [&'static dyn RouterKind; 2] = [&HttpRoute, &VirtualService];

/// The kind of an experiment's router.
pub fn kind_of(router: &Router) -> &'static dyn RouterKind {
    match router {
        Router::HttpRoute(_) => &HttpRoute,
        Router::VirtualService(_) => &VirtualService,
    }
}

/// The route an experiment drives: kind, object name and index.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// The router kind.
    pub kind: &'static dyn RouterKind,
    /// The object's name, in the experiment's namespace.
    pub name: String,
    /// The rule or route index.
    pub index: u32,
}

impl PartialEq for RouteTarget {
    fn eq(&self, other: &Self) -> bool {
        self.kind.kind() == other.kind.kind()
            && self.name == other.name
            && self.index == other.index
    }
}

impl Eq for RouteTarget {}

impl RouteTarget {
    /// The route named by an experiment's router.
    pub fn of(router: &Router) -> Self {
        let route = router.route();
        Self {
            kind: kind_of(router),
            name: route.name.clone(),
            index: route.index,
        }
    }
}

/// What a route gives: each version's weight, in version order, and the weight of the entries
/// that are no version (traffic the experiment does not account for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSplit {
    /// The versions' weights, in version order (0 for a version without an entry).
    pub versions: Vec<u32>,
    /// The summed weight of entries that match no version.
    pub others: u32,
}

/// The weights the route in `namespace` gives now.
pub fn read_weights(
    target: &RouteTarget,
    namespace: &str,
    spec: &Value,
    versions: &[VersionSpec],
) -> Result<RouteSplit, RouterError> {
    let entries = route_entries(target, spec)?;
    let backends = versions
        .iter()
        .map(backend_of)
        .collect::<Result<Vec<_>, _>>()?;
    let weight_of = |backend: &Backend| {
        entries
            .iter()
            .find(|e| target.kind.matches(namespace, e, backend))
            .map_or(0, |e| target.kind.weight(e))
    };
    let others = entries
        .iter()
        .filter(|e| {
            !backends
                .iter()
                .any(|b| target.kind.matches(namespace, e, b))
        })
        .map(|e| target.kind.weight(e))
        .sum();
    Ok(RouteSplit {
        versions: backends.into_iter().map(weight_of).collect(),
        others,
    })
}

/// The route's list (`spec.rules` or `spec.http`) with the versions' weights set; entries of
/// versions missing from the route are added, and entries that are no version get weight 0,
/// so the route splits traffic exactly as the experiment says (they are kept, not removed:
/// someone else put them there).
pub fn with_weights(
    target: &RouteTarget,
    namespace: &str,
    spec: &Value,
    versions: &[VersionSpec],
    weights: &[u32],
) -> Result<Value, RouterError> {
    if weights.len() != versions.len() {
        return Err(RouterError::Mismatch(format!(
            "{} weights for {} versions",
            weights.len(),
            versions.len()
        )));
    }
    let mut list = spec
        .get(target.kind.list())
        .cloned()
        .unwrap_or_else(|| json!([]));
    let route = list
        .get_mut(target.index as usize)
        .ok_or_else(|| no_route(target))?;
    if route.get(target.kind.entries()).is_none() {
        route[target.kind.entries()] = json!([]);
    }
    let entries = route[target.kind.entries()]
        .as_array_mut()
        .ok_or_else(|| RouterError::Mismatch(format!("{} is not a list", target.kind.entries())))?;
    let backends = versions
        .iter()
        .map(backend_of)
        .collect::<Result<Vec<_>, _>>()?;
    for entry in entries.iter_mut() {
        if !backends
            .iter()
            .any(|b| target.kind.matches(namespace, entry, b))
        {
            entry["weight"] = json!(0);
        }
    }
    for (backend, &weight) in backends.into_iter().zip(weights) {
        match entries
            .iter_mut()
            .find(|e| target.kind.matches(namespace, e, backend))
        {
            Some(entry) => entry["weight"] = json!(weight),
            None => entries.push(target.kind.new_entry(backend, weight)),
        }
    }
    Ok(list)
}

/// The seam to the router: read the versions' weights on a route, and set them.
pub trait Routes: Send + Sync {
    /// The route's current weights for the versions, in version order.
    fn current<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
    ) -> BoxFuture<'a, Result<RouteSplit, RouterError>>;

    /// Sets the versions' weights on the route.
    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
        weights: &'a [u32],
    ) -> BoxFuture<'a, Result<(), RouterError>>;
}

impl Routes for KubeRouter {
    fn current<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
    ) -> BoxFuture<'a, Result<RouteSplit, RouterError>> {
        Box::pin(KubeRouter::current(self, target, namespace, versions))
    }

    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        namespace: &'a str,
        versions: &'a [VersionSpec],
        weights: &'a [u32],
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(KubeRouter::apply(
            self, target, namespace, versions, weights,
        ))
    }
}

/// Router access through the API server, reading routes from the watch cache when it has
/// them.
#[derive(Clone)]
pub struct KubeRouter {
    client: kube::Client,
    caches: Caches,
}

impl KubeRouter {
    /// A router client that reads every route from the API server.
    pub fn new(client: kube::Client) -> Self {
        Self::with_caches(client, Caches::default())
    }

    /// A router client that reads routes from `caches` (the controller's) when they hold
    /// them, and from the API server otherwise.
    pub fn with_caches(client: kube::Client, caches: Caches) -> Self {
        Self { client, caches }
    }

    fn api(&self, target: &RouteTarget, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &target.kind.api_resource())
    }

    /// The route's current weights for the versions, and for entries that are no version.
    pub async fn current(
        &self,
        target: &RouteTarget,
        namespace: &str,
        versions: &[VersionSpec],
    ) -> Result<RouteSplit, RouterError> {
        let object = self.read(target, namespace).await?;
        read_weights(target, namespace, &object.data["spec"], versions)
    }

    /// Sets the versions' weights by an optimistic write: the route is read, the weights set
    /// in what was read, and the list written back with the resourceVersion read as a
    /// precondition. Anyone's change in between (a person adding a match, a GitOps tool
    /// syncing) makes the API server answer 409, and the write is redone on a fresh read, so
    /// no edit is lost. The write is a merge patch, not a forced server-side apply: iter8 does
    /// not take ownership of the route's other fields from their managers.
    pub async fn apply(
        &self,
        target: &RouteTarget,
        namespace: &str,
        versions: &[VersionSpec],
        weights: &[u32],
    ) -> Result<(), RouterError> {
        let mut backoff = Backoff::new();
        loop {
            match self.apply_once(target, namespace, versions, weights).await {
                Err(RouterError::Kube(e)) if is_conflict(&e) => {
                    // The copy read (cached, or fresh and since changed) is out of date: the
                    // next attempt reads the API server's.
                    tracing::debug!(route = %target.name, %e, "route write conflicted");
                    if !backoff.wait().await {
                        return Err(RouterError::Conflict(e));
                    }
                }
                outcome => return outcome,
            }
        }
    }

    async fn apply_once(
        &self,
        target: &RouteTarget,
        namespace: &str,
        versions: &[VersionSpec],
        weights: &[u32],
    ) -> Result<(), RouterError> {
        let object = self.read(target, namespace).await?;
        let list = with_weights(target, namespace, &object.data["spec"], versions, weights)?;
        if object.data["spec"].get(target.kind.list()) == Some(&list) {
            // Already so: no write, no new resourceVersion, no watch event.
            return Ok(());
        }
        let read_version = object.metadata.resource_version.as_deref();
        let patch = json!({
            "metadata": {"resourceVersion": read_version},
            "spec": {target.kind.list(): list},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let written = self
            .api(target, namespace)
            .patch(&target.name, &params, &Patch::Merge(&patch))
            .await;
        // Written over, or shown stale by a 409: either way that copy is never read again,
        // nor any copy older than what we wrote.
        let (kind, name) = (target.kind.kind(), &target.name);
        match &written {
            Ok(route) => self.caches.route_written(
                kind,
                namespace,
                name,
                read_version,
                route.metadata.resource_version.as_deref(),
            ),
            Err(e) if is_conflict(e) => {
                self.caches
                    .route_replaced(kind, namespace, name, read_version)
            }
            Err(_) => {}
        }
        written?;
        Ok(())
    }

    /// The route from the watch cache, or from the API server when the cache has no usable
    /// copy ([`Caches::route`]).
    async fn read(
        &self,
        target: &RouteTarget,
        namespace: &str,
    ) -> Result<DynamicObject, RouterError> {
        let cached = self.caches.route(
            target.kind.kind(),
            &target.kind.api_resource(),
            namespace,
            &target.name,
        );
        match cached {
            Some(route) => Ok(DynamicObject::clone(&route)),
            None => self.get(target, namespace).await,
        }
    }

    async fn get(
        &self,
        target: &RouteTarget,
        namespace: &str,
    ) -> Result<DynamicObject, RouterError> {
        self.api(target, namespace)
            .get_opt(&target.name)
            .await?
            .ok_or_else(|| RouterError::NotFound {
                kind: target.kind.kind(),
                name: target.name.clone(),
            })
    }
}

fn route_entries<'a>(target: &RouteTarget, spec: &'a Value) -> Result<&'a [Value], RouterError> {
    let route = spec
        .get(target.kind.list())
        .and_then(|l| l.get(target.index as usize))
        .ok_or_else(|| no_route(target))?;
    Ok(route
        .get(target.kind.entries())
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice))
}

fn no_route(target: &RouteTarget) -> RouterError {
    RouterError::NoRoute {
        kind: target.kind.kind(),
        name: target.name.clone(),
        list: target.kind.list(),
        index: target.index,
    }
}

fn backend_of(v: &VersionSpec) -> Result<&Backend, RouterError> {
    v.backend
        .as_ref()
        .ok_or_else(|| RouterError::Mismatch(format!("version {} has no backend", v.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Vec<VersionSpec> {
        serde_json::from_value(json!([
            {"name": "stable", "backend": {"name": "reviews-v1", "port": 9080}},
            {"name": "next", "backend": {"name": "reviews-v2", "port": 9080}}
        ]))
        .expect("valid versions")
    }

    const NS: &str = "bookinfo";

    fn http_route() -> RouteTarget {
        RouteTarget {
            kind: &HttpRoute,
            name: "reviews".into(),
            index: 0,
        }
    }

    #[test]
    fn http_route_weights_are_set_in_place_and_missing_backends_added() {
        let spec = json!({"rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "reviews-v1", "port": 9080, "kind": "Service"}]
        }]});
        let rules =
            with_weights(&http_route(), NS, &spec, &versions(), &[70, 30]).expect("applies");
        assert_eq!(
            rules[0]["backendRefs"],
            json!([
                {"name": "reviews-v1", "port": 9080, "kind": "Service", "weight": 70},
                {"name": "reviews-v2", "port": 9080, "weight": 30}
            ])
        );
        assert_eq!(rules[0]["matches"], spec["rules"][0]["matches"]);
        let back =
            read_weights(&http_route(), NS, &json!({"rules": rules}), &versions()).expect("reads");
        assert_eq!(back.versions, vec![70, 30]);
        assert_eq!(back.others, 0);
    }

    #[test]
    fn an_absent_http_route_weight_reads_as_one() {
        let spec = json!({"rules": [{"backendRefs": [{"name": "reviews-v1", "port": 9080}]}]});
        assert_eq!(
            read_weights(&http_route(), NS, &spec, &versions())
                .expect("reads")
                .versions,
            vec![1, 0]
        );
    }

    #[test]
    fn virtual_service_destinations_match_host_and_subset() {
        let target = RouteTarget {
            kind: &VirtualService,
            name: "reviews".into(),
            index: 1,
        };
        let versions: Vec<VersionSpec> = serde_json::from_value(json!([
            {"name": "v1", "backend": {"name": "reviews", "subset": "v1"}},
            {"name": "v2", "backend": {"name": "reviews", "subset": "v2"}}
        ]))
        .expect("valid versions");
        let spec = json!({"http": [
            {"route": [{"destination": {"host": "ratings"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}
        ]});
        let http = with_weights(&target, NS, &spec, &versions, &[40, 60]).expect("applies");
        assert_eq!(http[0], spec["http"][0], "other routes are untouched");
        assert_eq!(
            read_weights(&target, NS, &json!({"http": http}), &versions)
                .expect("reads")
                .versions,
            vec![40, 60]
        );
    }

    #[test]
    fn a_missing_rule_is_an_error_naming_the_index() {
        let err = with_weights(
            &http_route(),
            NS,
            &json!({"rules": []}),
            &versions(),
            &[100, 0],
        )
        .expect_err("no rule 0");
        assert_eq!(err.to_string(), "HTTPRoute reviews has no rules[0]");
    }

    fn virtual_service() -> RouteTarget {
        RouteTarget {
            kind: &VirtualService,
            name: "reviews".into(),
            index: 0,
        }
    }

    fn subsets() -> Vec<VersionSpec> {
        serde_json::from_value(json!([
            {"name": "v1", "backend": {"name": "reviews", "subset": "v1"}},
            {"name": "v2", "backend": {"name": "reviews", "subset": "v2"}}
        ]))
        .expect("valid versions")
    }

    #[test]
    fn a_virtual_service_host_matches_however_the_service_is_written() {
        for host in [
            "reviews",
            "reviews.bookinfo",
            "reviews.bookinfo.svc",
            "reviews.bookinfo.svc.cluster.local",
            "reviews.bookinfo.svc.corp.example",
            "reviews.bookinfo.svc.cluster.local.",
            "Reviews.BookInfo.svc.Cluster.Local",
        ] {
            let spec = json!({"http": [{"route": [
                {"destination": {"host": host, "subset": "v1"}, "weight": 100}
            ]}]});
            let http = with_weights(&virtual_service(), NS, &spec, &subsets(), &[70, 30])
                .expect("applies");
            let route = http[0]["route"].as_array().expect("a list");
            assert_eq!(
                route.len(),
                2,
                "{host}: the entry is updated, not duplicated"
            );
            assert_eq!(
                route[0]["destination"]["host"],
                json!(host),
                "{host}: kept as written"
            );
            assert_eq!(route[0]["weight"], json!(70), "{host}");
            let read = read_weights(&virtual_service(), NS, &json!({"http": http}), &subsets())
                .expect("reads");
            assert_eq!((read.versions, read.others), (vec![70, 30], 0), "{host}");
        }
    }

    #[test]
    fn a_host_of_another_namespace_or_outside_the_cluster_is_not_a_version() {
        for host in [
            "reviews.other",
            "reviews.other.svc.cluster.local",
            "reviews.example.com",
        ] {
            let spec = json!({"http": [{"route": [
                {"destination": {"host": host, "subset": "v1"}, "weight": 100}
            ]}]});
            let read = read_weights(&virtual_service(), NS, &spec, &subsets()).expect("reads");
            assert_eq!((read.versions, read.others), (vec![0, 0], 100), "{host}");
        }
    }

    #[test]
    fn entries_that_are_no_version_are_seen_and_set_to_zero() {
        let spec = json!({"rules": [{"backendRefs": [
            {"name": "reviews-v1", "port": 9080, "weight": 50},
            {"name": "reviews-v2", "port": 9080, "weight": 30},
            {"name": "reviews-debug", "port": 9080, "weight": 20}
        ]}]});
        let read = read_weights(&http_route(), NS, &spec, &versions()).expect("reads");
        assert_eq!((read.versions, read.others), (vec![50, 30], 20));
        let rules =
            with_weights(&http_route(), NS, &spec, &versions(), &[60, 40]).expect("applies");
        assert_eq!(
            rules[0]["backendRefs"][2],
            json!({"name": "reviews-debug", "port": 9080, "weight": 0}),
            "kept, without traffic"
        );
        let read =
            read_weights(&http_route(), NS, &json!({"rules": rules}), &versions()).expect("reads");
        assert_eq!((read.versions, read.others), (vec![60, 40], 0));
    }

    #[test]
    fn a_same_named_service_of_another_namespace_is_not_the_version() {
        let spec = json!({"rules": [{"backendRefs": [
            {"name": "reviews-v1", "port": 9080, "weight": 70},
            {"name": "reviews-v2", "namespace": "staging", "port": 9080, "weight": 30}
        ]}]});
        let read = read_weights(&http_route(), NS, &spec, &versions()).expect("reads");
        assert_eq!((read.versions, read.others), (vec![70, 0], 30));
        let rules =
            with_weights(&http_route(), NS, &spec, &versions(), &[60, 40]).expect("applies");
        assert_eq!(
            rules[0]["backendRefs"][1]["weight"],
            json!(0),
            "the foreign ref is zeroed"
        );
        assert_eq!(
            rules[0]["backendRefs"][2],
            json!({"name": "reviews-v2", "port": 9080, "weight": 40}),
            "the version's own Service is added"
        );
    }

    #[test]
    fn a_split_of_the_wrong_length_is_refused() {
        let spec = json!({"rules": [{"backendRefs": []}]});
        assert!(with_weights(&http_route(), NS, &spec, &versions(), &[100]).is_err());
    }
}
