//! Whether the versions traffic is about to move to can serve it: their backend Service
//! exists and, when a version names its Deployment, that Deployment is rolled out and
//! Available. Pure: the reconciler reads the objects [`checks`] names and passes what it saw
//! to [`verdict`].
//!
//! What is checked: before the start, every version (the experiment should not begin on a
//! version that cannot serve); afterwards, before a split is applied, the versions whose
//! weight rises. A split that puts all traffic back on the baseline (a rollback, the failure
//! policy, an inconclusive end) is never held: it is the safe direction, and holding it would
//! keep traffic on a candidate that is failing.

use iter8_crd::{ExperimentSpec, VersionSpec, WorkloadKind};
use k8s_openapi::api::apps::v1::Deployment;

/// What to read about one version before traffic moves to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The version's name.
    pub version: String,
    /// The Service its backend names, in the experiment's namespace; `None` when the version
    /// has no backend or its Istio host is not a Service of that namespace (not checked).
    pub service: Option<String>,
    /// The Deployment the version names as its workload, in the experiment's namespace.
    pub deployment: Option<String>,
}

/// What the API server answered for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// The object.
    Found(T),
    /// No such object.
    NotFound,
    /// The read failed (unreachable, forbidden...), with the error.
    Failed(String),
}

impl<T> Lookup<T> {
    /// The same answer about the object's derived value (say, only that it exists).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(t) => Lookup::Found(f(t)),
            Lookup::NotFound => Lookup::NotFound,
            Lookup::Failed(e) => Lookup::Failed(e),
        }
    }
}

/// What was seen for one [`Check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The Service, when the check names one.
    pub service: Option<Lookup<()>>,
    /// The Deployment, when the check names one.
    pub deployment: Option<Lookup<Deployment>>,
}

/// Why traffic cannot move yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// CamelCase reason of the first version not ready: `ServiceNotFound`,
    /// `DeploymentNotFound`, `DeploymentNotAvailable` or `ReadinessUnknown`.
    pub reason: &'static str,
    /// Every version not ready and what it lacks, e.g. `version next: Deployment reviews-v2
    /// has 1 of 2 replicas available`.
    pub message: String,
}

/// The checks before `to` replaces `from` on the router (`from` is `None` before the start),
/// for an experiment in `namespace`.
pub fn checks(
    spec: &ExperimentSpec,
    namespace: &str,
    from: Option<&[u32]>,
    to: &[u32],
) -> Vec<Check> {
    let all_on_baseline = to.iter().skip(1).all(|&w| w == 0);
    spec.versions
        .iter()
        .enumerate()
        .filter(|&(i, _)| match from {
            None => true,
            Some(from) => {
                !all_on_baseline
                    && to.get(i).copied().unwrap_or(0) > from.get(i).copied().unwrap_or(0)
            }
        })
        .map(|(_, v)| Check {
            version: v.name.clone(),
            service: service_of(spec, v, namespace),
            deployment: v.workload.as_ref().map(|w| match w.kind {
                WorkloadKind::Deployment => w.name.clone(),
            }),
        })
        .filter(|c| c.service.is_some() || c.deployment.is_some())
        .collect()
}

/// The verdict on what was seen: `Ok` with a one-line account when every checked version is
/// ready, otherwise what is missing.
pub fn verdict(seen: &[(Check, Seen)]) -> Result<String, NotReady> {
    let mut reason = None;
    let mut missing = Vec::new();
    for (check, seen) in seen {
        let mut lacks = |why: &'static str, what: String| {
            reason.get_or_insert(why);
            missing.push(format!("version {}: {what}", check.version));
        };
        if let (Some(name), Some(service)) = (&check.service, &seen.service) {
            match service {
                Lookup::Found(()) => {}
                Lookup::NotFound => lacks("ServiceNotFound", format!("Service {name} not found")),
                Lookup::Failed(e) => {
                    lacks("ReadinessUnknown", format!("reading Service {name}: {e}"))
                }
            }
        }
        if let (Some(name), Some(deployment)) = (&check.deployment, &seen.deployment) {
            match deployment {
                Lookup::Found(d) => {
                    if let Some(why) = deployment_unready(d) {
                        lacks("DeploymentNotAvailable", format!("Deployment {name} {why}"));
                    }
                }
                Lookup::NotFound => {
                    lacks("DeploymentNotFound", format!("Deployment {name} not found"))
                }
                Lookup::Failed(e) => lacks(
                    "ReadinessUnknown",
                    format!("reading Deployment {name}: {e}"),
                ),
            }
        }
    }
    match reason {
        Some(reason) => Err(NotReady {
            reason,
            message: missing.join("; "),
        }),
        None if seen.is_empty() => Ok("no version gains traffic".into()),
        None => Ok(format!(
            "ready: {}",
            seen.iter()
                .map(|(c, _)| c.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Why a Deployment cannot take traffic yet, or `None` when its current generation is rolled
/// out (every replica it wants updated and available, no old ones left) and it is Available.
/// The rules of `kubectl rollout status`, plus the Available condition.
pub fn deployment_unready(d: &Deployment) -> Option<String> {
    let wanted = d.spec.replicas.unwrap_or(1);
    if wanted == 0 {
        return Some("is scaled to 0 replicas".into());
    }
    let status = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Some(format!(
            "has not observed its generation {generation} yet (observed {observed})"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < wanted {
        return Some(format!("has {updated} of {wanted} replicas updated"));
    }
    let total = status.replicas.unwrap_or(0);
    if total > updated {
        return Some(format!(
            "has {} old replicas still running",
            total - updated
        ));
    }
    let available = status.available_replicas.unwrap_or(0);
    if available < wanted {
        return Some(format!("has {available} of {wanted} replicas available"));
    }
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"));
    match condition {
        Some(c) if c.status.as_deref() == Some("True") => None,
        Some(c) => Some(format!(
            "is not Available ({}: {})",
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default()
        )),
        None => Some("reports no Available condition".into()),
    }
}

/// The Service a version's backend names, in `namespace`. An HTTPRoute backendRef names it;
/// an Istio host names it as `name`, or `name.<namespace>` optionally followed by `.svc` and
/// the cluster domain (case-insensitive, one trailing dot allowed). Another namespace's Service
/// or a host outside the cluster (a ServiceEntry) is not checked: the controller reads Services
/// only in the namespaces it runs experiments in.
fn service_of(spec: &ExperimentSpec, v: &VersionSpec, namespace: &str) -> Option<String> {
    let backend = v.backend.as_ref()?;
    let istio = spec
        .router
        .as_ref()
        .is_some_and(|r| matches!(r, iter8_crd::Router::VirtualService(_)));
    if !istio {
        return Some(backend.name.clone());
    }
    let host = backend.name.strip_suffix('.').unwrap_or(&backend.name);
    let host = host.to_ascii_lowercase();
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => Some((*name).to_owned()),
        [name, ns] | [name, ns, "svc", ..] if *ns == namespace => Some((*name).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(router: serde_json::Value, versions: serde_json::Value) -> ExperimentSpec {
        serde_json::from_value(json!({
            "kind": "abn",
            "versions": versions,
            "router": router,
        }))
        .expect("valid spec")
    }

    fn three() -> ExperimentSpec {
        spec(
            json!({"httpRoute": {"name": "r"}}),
            json!([
                {"name": "a", "backend": {"name": "svc-a"}, "workload": {"name": "dep-a"}},
                {"name": "b", "backend": {"name": "svc-b"}, "workload": {"kind": "Deployment", "name": "dep-b"}},
                {"name": "c", "backend": {"name": "svc-c"}}
            ]),
        )
    }

    fn names(checks: &[Check]) -> Vec<&str> {
        checks.iter().map(|c| c.version.as_str()).collect()
    }

    /// A Deployment as its controller reports it once rolled out.
    fn deployment(wanted: i32, edit: impl FnOnce(&mut serde_json::Value)) -> Deployment {
        let mut d = json!({
            "metadata": {"name": "d", "generation": 3},
            "spec": {"replicas": wanted, "selector": {}, "template": {}},
            "status": {
                "observedGeneration": 3, "replicas": wanted, "updatedReplicas": wanted,
                "availableReplicas": wanted, "readyReplicas": wanted,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
            }
        });
        edit(&mut d);
        serde_json::from_value(d).expect("valid deployment")
    }

    #[test]
    fn every_version_is_checked_before_the_start_and_risers_afterwards() {
        let spec = three();
        let start = checks(&spec, "ns", None, &[100, 0, 0]);
        assert_eq!(names(&start), ["a", "b", "c"]);
        assert_eq!(start[0].service.as_deref(), Some("svc-a"));
        assert_eq!(start[0].deployment.as_deref(), Some("dep-a"));
        assert_eq!(start[2].deployment, None);
        // Only the versions whose weight rises.
        let rise = checks(&spec, "ns", Some(&[80, 20, 0]), &[60, 20, 20]);
        assert_eq!(names(&rise), ["c"]);
        let two = checks(&spec, "ns", Some(&[80, 20, 0]), &[40, 30, 30]);
        assert_eq!(names(&two), ["b", "c"]);
        // The baseline too, when it gains traffic among others.
        let back = checks(&spec, "ns", Some(&[40, 30, 30]), &[60, 20, 20]);
        assert_eq!(names(&back), ["a"]);
        // All of it back on the baseline (a rollback) is never held.
        assert!(checks(&spec, "ns", Some(&[40, 30, 30]), &[100, 0, 0]).is_empty());
    }

    #[test]
    fn istio_hosts_name_a_service_of_the_namespace_or_are_not_checked() {
        let hosts = [
            ("reviews", Some("reviews")),
            ("Reviews.NS.svc.cluster.local.", Some("reviews")),
            ("reviews.ns", Some("reviews")),
            ("reviews.ns.svc", Some("reviews")),
            ("reviews.other.svc.cluster.local", None),
            ("api.example.com", None),
        ];
        for (host, service) in hosts {
            let spec = spec(
                json!({"virtualService": {"name": "vs"}}),
                json!([{"name": "a", "backend": {"name": host, "subset": "v1"}},
                       {"name": "b", "backend": {"name": host, "subset": "v2"}}]),
            );
            let c = checks(&spec, "ns", None, &[100, 0]);
            assert_eq!(
                c.first().and_then(|c| c.service.as_deref()),
                service,
                "{host}"
            );
        }
    }

    #[test]
    fn a_rolled_out_available_deployment_is_ready_and_anything_short_of_it_is_not() {
        assert_eq!(deployment_unready(&deployment(2, |_| {})), None);
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: [(&str, Edit, &str); 7] = [
            (
                "old generation",
                Box::new(|d| d["status"]["observedGeneration"] = json!(2)),
                "has not observed its generation 3 yet (observed 2)",
            ),
            (
                "no status at all",
                Box::new(|d| d["status"] = json!({})),
                "has not observed its generation 3 yet (observed 0)",
            ),
            (
                "half updated",
                Box::new(|d| d["status"]["updatedReplicas"] = json!(1)),
                "has 1 of 2 replicas updated",
            ),
            (
                "old pods left",
                Box::new(|d| d["status"]["replicas"] = json!(3)),
                "has 1 old replicas still running",
            ),
            (
                "not all available",
                Box::new(|d| d["status"]["availableReplicas"] = json!(1)),
                "has 1 of 2 replicas available",
            ),
            (
                "condition false",
                Box::new(|d| {
                    d["status"]["conditions"] = json!([{"type": "Available", "status": "False",
                        "reason": "MinimumReplicasUnavailable", "message": "down"}])
                }),
                "is not Available (MinimumReplicasUnavailable: down)",
            ),
            (
                "scaled to zero",
                Box::new(|d| d["spec"]["replicas"] = json!(0)),
                "is scaled to 0 replicas",
            ),
        ];
        for (case, edit, why) in cases {
            assert_eq!(
                deployment_unready(&deployment(2, edit)).as_deref(),
                Some(why),
                "{case}"
            );
        }
    }

    #[test]
    fn the_verdict_names_every_version_not_ready_and_what_it_lacks() {
        let spec = three();
        let start = checks(&spec, "ns", None, &[100, 0, 0]);
        let ready = Seen {
            service: Some(Lookup::Found(())),
            deployment: Some(Lookup::Found(deployment(1, |_| {}))),
        };
        let all_ready: Vec<_> = start.iter().map(|c| (c.clone(), ready.clone())).collect();
        assert_eq!(verdict(&all_ready), Ok("ready: a, b, c".into()));
        assert_eq!(verdict(&[]), Ok("no version gains traffic".into()));

        let mut seen = all_ready.clone();
        seen[1].1.deployment = Some(Lookup::Found(deployment(2, |d| {
            d["status"]["availableReplicas"] = json!(0)
        })));
        seen[2].1.service = Some(Lookup::NotFound);
        let not = verdict(&seen).expect_err("b and c are not ready");
        assert_eq!(
            not.reason, "DeploymentNotAvailable",
            "the first one's reason"
        );
        assert_eq!(
            not.message,
            "version b: Deployment dep-b has 0 of 2 replicas available; \
             version c: Service svc-c not found"
        );

        let mut seen = all_ready.clone();
        seen[0].1.deployment = Some(Lookup::NotFound);
        assert_eq!(
            verdict(&seen).map_err(|n| n.reason),
            Err("DeploymentNotFound")
        );
        seen[0].1.deployment = Some(Lookup::Failed("forbidden".into()));
        let unknown = verdict(&seen).expect_err("a failed read is not a pass");
        assert_eq!(
            (unknown.reason, unknown.message.as_str()),
            (
                "ReadinessUnknown",
                "version a: reading Deployment dep-a: forbidden"
            )
        );
    }
}
