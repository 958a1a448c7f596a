//! Reading and setting traffic weights in a Gateway API `HTTPRoute` rule or an Istio
//! `VirtualService` route. The weight arithmetic on the objects is pure; only `KubeRouter`
//! talks to the API server, with server-side apply.

use iter8_crd::{Backend, Router, VersionSpec};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

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
    /// The API server failed.
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// The kinds of router iter8 drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// `gateway.networking.k8s.io/v1` `HTTPRoute`.
    HttpRoute,
    /// `networking.istio.io/v1` `VirtualService`.
    VirtualService,
}

impl RouterKind {
    /// The kind's name.
    pub fn kind(self) -> &'static str {
        match self {
            RouterKind::HttpRoute => "HTTPRoute",
            RouterKind::VirtualService => "VirtualService",
        }
    }

    /// The API resource, for dynamic clients and watches.
    pub fn api_resource(self) -> ApiResource {
        let gvk = match self {
            RouterKind::HttpRoute => {
                GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute")
            }
            RouterKind::VirtualService => {
                GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService")
            }
        };
        ApiResource::from_gvk(&gvk)
    }

    fn list(self) -> &'static str {
        match self {
            RouterKind::HttpRoute => "rules",
            RouterKind::VirtualService => "http",
        }
    }

    fn entries(self) -> &'static str {
        match self {
            RouterKind::HttpRoute => "backendRefs",
            RouterKind::VirtualService => "route",
        }
    }
}

/// The route an experiment drives: kind, object name and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// The router kind.
    pub kind: RouterKind,
    /// The object's name, in the experiment's namespace.
    pub name: String,
    /// The rule or route index.
    pub index: u32,
}

impl RouteTarget {
    /// The route named by an experiment's router.
    pub fn of(router: &Router) -> Option<Self> {
        match (&router.http_route, &router.virtual_service) {
            (Some(r), _) => Some(Self {
                kind: RouterKind::HttpRoute,
                name: r.name.clone(),
                index: r.index,
            }),
            (None, Some(r)) => Some(Self {
                kind: RouterKind::VirtualService,
                name: r.name.clone(),
                index: r.index,
            }),
            (None, None) => None,
        }
    }
}

/// The weights the route gives the versions now, in version order.
pub fn read_weights(
    target: &RouteTarget,
    spec: &Value,
    versions: &[VersionSpec],
) -> Result<Vec<u32>, RouterError> {
    let entries = route_entries(target, spec)?;
    versions
        .iter()
        .map(|v| {
            let backend = backend_of(v)?;
            let weight = entries
                .iter()
                .find(|e| matches_backend(target.kind, e, backend))
                .map_or(0, |e| entry_weight(target.kind, e));
            Ok(weight)
        })
        .collect()
}

/// The route's list (`spec.rules` or `spec.http`) with the versions' weights set; entries of
/// versions missing from the route are added, other entries are left as they are.
pub fn with_weights(
    target: &RouteTarget,
    spec: &Value,
    versions: &[VersionSpec],
    weights: &[u32],
) -> Result<Value, RouterError> {
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
    for (v, &weight) in versions.iter().zip(weights) {
        let backend = backend_of(v)?;
        match entries
            .iter_mut()
            .find(|e| matches_backend(target.kind, e, backend))
        {
            Some(entry) => entry["weight"] = json!(weight),
            None => entries.push(new_entry(target.kind, backend, weight)),
        }
    }
    Ok(list)
}

/// Router access through the API server.
#[derive(Clone)]
pub struct KubeRouter {
    client: kube::Client,
}

impl KubeRouter {
    /// A router client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn api(&self, target: &RouteTarget, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &target.kind.api_resource())
    }

    /// The route's current weights for the versions.
    pub async fn current(
        &self,
        target: &RouteTarget,
        namespace: &str,
        versions: &[VersionSpec],
    ) -> Result<Vec<u32>, RouterError> {
        let object = self.get(target, namespace).await?;
        read_weights(target, &object.data["spec"], versions)
    }

    /// Sets the versions' weights with server-side apply, as [`FIELD_MANAGER`]. A conflict
    /// (someone changed the route at the same moment) is retried with backoff on a fresh read:
    /// applying the same weights again is harmless.
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
                    tracing::debug!(route = %target.name, %e, "route write conflicted");
                    if !backoff.wait().await {
                        return Err(RouterError::Kube(e));
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
        let object = self.get(target, namespace).await?;
        let list = with_weights(target, &object.data["spec"], versions, weights)?;
        let resource = target.kind.api_resource();
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {"name": target.name, "namespace": namespace},
            "spec": {target.kind.list(): list},
        });
        self.api(target, namespace)
            .patch(
                &target.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
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

fn matches_backend(kind: RouterKind, entry: &Value, backend: &Backend) -> bool {
    match kind {
        RouterKind::HttpRoute => {
            entry["name"] == json!(backend.name)
                && backend
                    .port
                    .is_none_or(|p| entry.get("port").is_none_or(|ep| *ep == json!(p)))
        }
        RouterKind::VirtualService => {
            let d = &entry["destination"];
            d["host"] == json!(backend.name)
                && d.get("subset").and_then(Value::as_str) == backend.subset.as_deref()
        }
    }
}

/// A weight as the router reads it: an absent HTTPRoute weight means 1, an absent
/// VirtualService weight means the only destination gets everything.
fn entry_weight(kind: RouterKind, entry: &Value) -> u32 {
    let explicit = entry
        .get("weight")
        .and_then(Value::as_u64)
        .and_then(|w| u32::try_from(w).ok());
    match kind {
        RouterKind::HttpRoute => explicit.unwrap_or(1),
        RouterKind::VirtualService => explicit.unwrap_or(100),
    }
}

fn new_entry(kind: RouterKind, backend: &Backend, weight: u32) -> Value {
    match kind {
        RouterKind::HttpRoute => {
            let mut e = json!({"name": backend.name, "weight": weight});
            if let Some(port) = backend.port {
                e["port"] = json!(port);
            }
            e
        }
        RouterKind::VirtualService => {
            let mut d = json!({"host": backend.name});
            if let Some(subset) = &backend.subset {
                d["subset"] = json!(subset);
            }
            if let Some(port) = backend.port {
                d["port"] = json!({"number": port});
            }
            json!({"destination": d, "weight": weight})
        }
    }
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

    fn http_route() -> RouteTarget {
        RouteTarget {
            kind: RouterKind::HttpRoute,
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
        let rules = with_weights(&http_route(), &spec, &versions(), &[70, 30]).expect("applies");
        assert_eq!(
            rules[0]["backendRefs"],
            json!([
                {"name": "reviews-v1", "port": 9080, "kind": "Service", "weight": 70},
                {"name": "reviews-v2", "port": 9080, "weight": 30}
            ])
        );
        assert_eq!(rules[0]["matches"], spec["rules"][0]["matches"]);
        let back =
            read_weights(&http_route(), &json!({"rules": rules}), &versions()).expect("reads");
        assert_eq!(back, vec![70, 30]);
    }

    #[test]
    fn an_absent_http_route_weight_reads_as_one() {
        let spec = json!({"rules": [{"backendRefs": [{"name": "reviews-v1", "port": 9080}]}]});
        assert_eq!(
            read_weights(&http_route(), &spec, &versions()).expect("reads"),
            vec![1, 0]
        );
    }

    #[test]
    fn virtual_service_destinations_match_host_and_subset() {
        let target = RouteTarget {
            kind: RouterKind::VirtualService,
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
        let http = with_weights(&target, &spec, &versions, &[40, 60]).expect("applies");
        assert_eq!(http[0], spec["http"][0], "other routes are untouched");
        assert_eq!(
            read_weights(&target, &json!({"http": http}), &versions).expect("reads"),
            vec![40, 60]
        );
    }

    #[test]
    fn a_missing_rule_is_an_error_naming_the_index() {
        let err = with_weights(&http_route(), &json!({"rules": []}), &versions(), &[100, 0])
            .expect_err("no rule 0");
        assert_eq!(err.to_string(), "HTTPRoute reviews has no rules[0]");
    }
}
