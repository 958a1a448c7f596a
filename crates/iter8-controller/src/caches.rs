//! Watch caches the reconciler reads instead of asking the API server at every iteration: the
//! Metrics experiments name and the routes they set.
//!
//! At a thousand experiments the API server, not the controller, is the limit
//! (docs/performance.md): an iteration used to GET each of its Metrics and its route, twice.
//! A cache may lag the API server by a watch event, so every read keeps its guarantee:
//!
//! * a Metric missing from the cache is read with a GET before the reconciler believes it
//!   deleted (a Metric created a moment ago is not yet cached); a Metric changed a moment ago
//!   is judged on the next iteration, as if the edit had come a moment later;
//! * a route is written with the resourceVersion of the copy read as a precondition, so a
//!   stale copy costs a 409 and a fresh read, never a lost edit; a copy our own write
//!   replaced is never read again ([`Superseded`]), so a route the controller just set is not
//!   mistaken for drift;
//! * until a cache has listed its objects, and when no controller runs (a lost Lease), every
//!   read goes to the API server.

use std::sync::{Arc, RwLock};

use iter8_crd::Metric;
use kube::api::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::superseded::Superseded;

/// The caches of one running controller; cheap to clone (one shared set).
#[derive(Clone, Default)]
pub struct Caches {
    stores: Arc<RwLock<Stores>>,
    /// Route versions our writes replaced, keyed by `kind/namespace/name`.
    replaced_routes: Arc<Superseded>,
}

#[derive(Default)]
struct Stores {
    /// Metric stores with the namespace each watches (`None`: all).
    metrics: Vec<(Option<String>, Store<Metric>)>,
    /// Route stores by router kind (`HTTPRoute`).
    routes: Vec<(&'static str, Store<DynamicObject>)>,
}

impl Caches {
    /// The cached Metric `namespace/name`, if a cache covering the namespace holds it.
    pub fn metric(&self, namespace: &str, name: &str) -> Option<Arc<Metric>> {
        let stores = self.stores.read().ok()?;
        let key = ObjectRef::new(name).within(namespace);
        stores
            .metrics
            .iter()
            .filter(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .find_map(|(_, store)| store.get(&key))
    }

    /// The cached route `kind` `namespace/name`, unless it is a copy our own write replaced.
    pub fn route(
        &self,
        kind: &'static str,
        api: &kube::api::ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let stores = self.stores.read().ok()?;
        let key = ObjectRef::new_with(name, api.clone()).within(namespace);
        let route = stores
            .routes
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, store)| store.get(&key))?;
        let stale = self.replaced_routes.is_stale(
            &route_key(kind, namespace, name),
            route.metadata.resource_version.as_deref(),
        );
        (!stale).then_some(route)
    }

    /// Records that a write (or a 409) showed the route's copy at `version` out of date.
    pub fn route_replaced(&self, kind: &str, namespace: &str, name: &str, version: Option<&str>) {
        self.replaced_routes
            .replaced(&route_key(kind, namespace, name), version);
    }

    /// Serves reads from these stores (a controller started).
    pub(crate) fn set(
        &self,
        metrics: Vec<(Option<String>, Store<Metric>)>,
        routes: Vec<(&'static str, Store<DynamicObject>)>,
    ) {
        if let Ok(mut stores) = self.stores.write() {
            *stores = Stores { metrics, routes };
        }
    }

    /// Sends every read to the API server again (the controller stopped, its watches with it:
    /// its stores would only grow staler).
    pub(crate) fn clear(&self) {
        self.set(Vec::new(), Vec::new());
    }
}

fn route_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn http_route() -> ApiResource {
        ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: "v1".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
            plural: "httproutes".into(),
        }
    }

    fn route(version: &str) -> DynamicObject {
        let mut route = DynamicObject::new("r", &http_route()).within("ns");
        route.metadata.resource_version = Some(version.into());
        route
    }

    fn metric(ns: &str, name: &str) -> Metric {
        let mut m: Metric = serde_json::from_value(serde_json::json!({
            "apiVersion": "iter8.tools/v3alpha1",
            "kind": "Metric",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "counter", "prometheus": {"query": "up"}}
        }))
        .expect("a valid Metric");
        m.metadata.resource_version = Some("1".into());
        m
    }

    #[test]
    fn a_route_copy_our_write_replaced_is_not_served_until_a_newer_one_arrives() {
        let caches = Caches::default();
        let mut writer = Writer::new(http_route());
        writer.apply_watcher_event(&Event::Apply(route("5")));
        caches.set(Vec::new(), vec![("HTTPRoute", writer.as_reader())]);
        let read = |c: &Caches| {
            c.route("HTTPRoute", &http_route(), "ns", "r")
                .and_then(|r| r.metadata.resource_version.clone())
        };
        assert_eq!(read(&caches), Some("5".into()));
        // We wrote over version 5: the cache still shows it, so it is not served.
        caches.route_replaced("HTTPRoute", "ns", "r", Some("5"));
        assert_eq!(read(&caches), None);
        // The watch delivers our write: served again.
        writer.apply_watcher_event(&Event::Apply(route("6")));
        assert_eq!(read(&caches), Some("6".into()));
        assert_eq!(caches.route("HTTPRoute", &http_route(), "other", "r"), None);
    }

    #[test]
    fn metrics_are_served_only_from_a_store_that_watches_their_namespace() {
        let caches = Caches::default();
        let mut team = Writer::<Metric>::default();
        team.apply_watcher_event(&Event::Apply(metric("team", "latency")));
        // A store of another namespace holding a same-named Metric must not answer for it.
        let mut other = Writer::<Metric>::default();
        other.apply_watcher_event(&Event::Apply(metric("iter8", "errors")));
        caches.set(
            vec![
                (Some("team".into()), team.as_reader()),
                (Some("iter8".into()), other.as_reader()),
            ],
            Vec::new(),
        );
        assert!(caches.metric("team", "latency").is_some());
        assert!(caches.metric("iter8", "errors").is_some());
        assert!(caches.metric("team", "errors").is_none());
        caches.clear();
        assert!(
            caches.metric("team", "latency").is_none(),
            "a stopped controller's stores are not read"
        );
    }
}
