//! Gateway API `HTTPRoute`: weights on the `backendRefs` of a rule.

use iter8_crd::Backend;
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::RouterKind;

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
#[derive(Debug, Clone, Copy)]
pub struct HttpRoute;

impl RouterKind for HttpRoute {
    fn kind(&self) -> &'static str {
        "HTTPRoute"
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ))
    }

    fn list(&self) -> &'static str {
        "rules"
    }

    fn entries(&self) -> &'static str {
        "backendRefs"
    }

    /// A backendRef names a version's backend only if it is the same object: a core
    /// `Service` (group `""`, kind `Service`, the defaults) in the route's own namespace (the
    /// default), of the same name, and on the same port when both name one. A backendRef to a
    /// Service of that name in another namespace (through a ReferenceGrant), or to another
    /// kind of backend, is no version: it counts as traffic the experiment does not control.
    fn matches(&self, namespace: &str, entry: &Value, backend: &Backend) -> bool {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        field("group").is_none_or(str::is_empty)
            && field("kind").is_none_or(|k| k == "Service")
            && field("namespace").is_none_or(|ns| ns == namespace)
            && field("name") == Some(backend.name.as_str())
            && backend
                .port
                .is_none_or(|p| entry.get("port").is_none_or(|ep| *ep == json!(p)))
    }

    /// An absent HTTPRoute weight means 1.
    fn weight(&self, entry: &Value) -> u32 {
        explicit_weight(entry).unwrap_or(1)
    }

    fn new_entry(&self, backend: &Backend, weight: u32) -> Value {
        let mut e = json!({"name": backend.name, "weight": weight});
        if let Some(port) = backend.port {
            e["port"] = json!(port);
        }
        e
    }
}

/// The `weight` an entry states, if it states one that fits.
pub(super) fn explicit_weight(entry: &Value) -> Option<u32> {
    entry
        .get("weight")
        .and_then(Value::as_u64)
        .and_then(|w| u32::try_from(w).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        serde_json::from_value(json!({"name": "reviews-v2", "port": 9080})).expect("a backend")
    }

    #[test]
    fn a_backend_ref_is_the_version_only_as_a_service_of_the_routes_namespace() {
        let same = [
            json!({"name": "reviews-v2", "port": 9080}),
            json!({"name": "reviews-v2"}),
            json!({"group": "", "kind": "Service", "namespace": "bookinfo", "name": "reviews-v2"}),
        ];
        for entry in same {
            assert!(HttpRoute.matches("bookinfo", &entry, &backend()), "{entry}");
        }
        let other = [
            json!({"namespace": "staging", "name": "reviews-v2", "port": 9080}),
            json!({"kind": "ServiceImport", "group": "multicluster.x-k8s.io", "name": "reviews-v2"}),
            json!({"group": "example.com", "kind": "Service", "name": "reviews-v2"}),
            json!({"name": "reviews-v2", "port": 8080}),
            json!({"name": "reviews-v1", "port": 9080}),
        ];
        for entry in other {
            assert!(
                !HttpRoute.matches("bookinfo", &entry, &backend()),
                "{entry}"
            );
        }
    }
}
