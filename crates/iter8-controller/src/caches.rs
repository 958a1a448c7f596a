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
//!   replaced is never read again ([`Superseded`]), nor any other copy until the cache shows
//!   the version our write produced (one read fresh may be newer than copies the cache has
//!   still to deliver, which nobody recorded), so a route the controller just set is not
//!   mistaken for drift;
//! * until a cache has listed its objects, and when no controller runs (a lost Lease), every
//!   read goes to the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

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
    /// The version our last write of a route produced, until the cache shows it; keyed as
    /// `replaced_routes`.
    written_routes: Arc<Mutex<HashMap<String, String>>>,
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
        let key = route_key(kind, namespace, name);
        let version = route.metadata.resource_version.as_deref();
        if !self.shows_our_write(&key, version) {
            return None;
        }
        let stale = self.replaced_routes.is_stale(&key, version);
        (!stale).then_some(route)
    }

    /// Records that a 409 showed the route's copy at `version` out of date.
    pub fn route_replaced(&self, kind: &str, namespace: &str, name: &str, version: Option<&str>) {
        self.replaced_routes
            .replaced(&route_key(kind, namespace, name), version);
    }

    /// Records our write of the route's copy at `replaced`, which produced version `written`.
    pub fn route_written(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        replaced: Option<&str>,
        written: Option<&str>,
    ) {
        let key = route_key(kind, namespace, name);
        self.replaced_routes.replaced(&key, replaced);
        if let (Some(written), Ok(mut map)) = (written, self.written_routes.lock()) {
            map.insert(key, written.to_string());
        }
    }

    /// Whether the cache has caught up with our last write of route `key`: it shows the
    /// version that write produced (or a later one), or we have not written it. The copy we
    /// wrote over may have been read fresh, past copies the watch has still to deliver; only
    /// the written version tells the cache is past them (a watch delivers every version in
    /// order; a re-list that skips ours costs GETs until our next write, never a stale read).
    fn shows_our_write(&self, key: &str, version: Option<&str>) -> bool {
        let Ok(mut map) = self.written_routes.lock() else {
            return false;
        };
        match map.get(key) {
            None => true,
            Some(written) if Some(written.as_str()) == version => {
                map.remove(key);
                true
            }
            Some(_) => false,
        }
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
    /// The versions our writes produced are forgotten too: a controller started later lists
    /// afresh, after every write this one made.
    pub(crate) fn clear(&self) {
        self.set(Vec::new(), Vec::new());
        if let Ok(mut written) = self.written_routes.lock() {
            written.clear();
        }
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
        caches.route_written("HTTPRoute", "ns", "r", Some("5"), Some("6"));
        assert_eq!(read(&caches), None);
        // The watch delivers our write: served again.
        writer.apply_watcher_event(&Event::Apply(route("6")));
        assert_eq!(read(&caches), Some("6".into()));
        assert_eq!(caches.route("HTTPRoute", &http_route(), "other", "r"), None);
        // A later edit by someone else is served as it arrives.
        writer.apply_watcher_event(&Event::Apply(route("7")));
        assert_eq!(read(&caches), Some("7".into()));
    }

    #[test]
    fn a_copy_older_than_a_write_made_on_a_fresh_read_is_not_served() {
        // The route was not cached yet, so the write was made on a fresh read of version 4;
        // the watch then delivers the route's creation at version 3, which nobody recorded.
        // Served, it would show the weights from before our write: drift that is not there.
        let caches = Caches::default();
        let mut writer = Writer::new(http_route());
        caches.set(Vec::new(), vec![("HTTPRoute", writer.as_reader())]);
        let read = |c: &Caches| {
            c.route("HTTPRoute", &http_route(), "ns", "r")
                .and_then(|r| r.metadata.resource_version.clone())
        };
        caches.route_written("HTTPRoute", "ns", "r", Some("4"), Some("5"));
        for older in ["3", "4"] {
            writer.apply_watcher_event(&Event::Apply(route(older)));
            assert_eq!(read(&caches), None, "version {older} predates our write");
        }
        writer.apply_watcher_event(&Event::Apply(route("5")));
        assert_eq!(read(&caches), Some("5".into()));
        writer.apply_watcher_event(&Event::Apply(route("6")));
        assert_eq!(read(&caches), Some("6".into()));

        // A write whose version a re-list skipped is not awaited by the next controller,
        // whose watch lists afresh.
        caches.route_written("HTTPRoute", "ns", "r", Some("6"), Some("7"));
        caches.clear();
        let mut relisted = Writer::new(http_route());
        relisted.apply_watcher_event(&Event::Apply(route("8")));
        caches.set(Vec::new(), vec![("HTTPRoute", relisted.as_reader())]);
        assert_eq!(read(&caches), Some("8".into()));
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
