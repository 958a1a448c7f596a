//! Istio `VirtualService`: weights on the `route` destinations of an `http` route.

use iter8_crd::Backend;
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::RouterKind;
use super::http_route::explicit_weight;

/// `networking.istio.io/v1` `VirtualService`.
#[derive(Debug, Clone, Copy)]
pub struct VirtualService;

impl RouterKind for VirtualService {
    fn kind(&self) -> &'static str {
        "VirtualService"
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "VirtualService",
        ))
    }

    fn list(&self) -> &'static str {
        "http"
    }

    fn entries(&self) -> &'static str {
        "route"
    }

    fn matches(&self, namespace: &str, entry: &Value, backend: &Backend) -> bool {
        let d = &entry["destination"];
        d["host"].as_str().is_some_and(|host| {
            service_host(host, namespace) == service_host(&backend.name, namespace)
        }) && d.get("subset").and_then(Value::as_str) == backend.subset.as_deref()
    }

    /// An absent VirtualService weight means the only destination gets everything.
    fn weight(&self, entry: &Value) -> u32 {
        explicit_weight(entry).unwrap_or(100)
    }

    fn new_entry(&self, backend: &Backend, weight: u32) -> Value {
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

/// An Istio destination host as (name, namespace) from a route in `namespace`. Istio itself
/// expands only a dot-less short name (`reviews`, to `reviews.<namespace>.svc.<domain>`);
/// `reviews.ns` and `reviews.ns.svc` are, to Istio, other hosts that reach the Service only
/// through DNS search paths. They are matched here all the same, as the same Service, because
/// a route that names a version's Service that way means that version: treating it as a
/// foreign entry would zero it. DNS names are case-insensitive and may end in one dot (fully
/// qualified), so the host is lowercased and one trailing dot removed first. Other hosts
/// (external names) are kept whole.
fn service_host(host: &str, namespace: &str) -> (String, String) {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => ((*name).to_owned(), namespace.to_ascii_lowercase()),
        [name, ns] | [name, ns, "svc", ..] => ((*name).to_owned(), (*ns).to_owned()),
        _ => (host.clone(), String::new()),
    }
}
