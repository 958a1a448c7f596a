//! `iter8 get [NAME]`: Experiments in a table like `kubectl get`, or as JSON or YAML.

use iter8_crd::Experiment;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use super::{Cluster, EXPERIMENTS, Error, Output, age, table};

/// Lists the namespace's Experiments (all namespaces with `all_namespaces`), or the one named.
pub async fn run(
    cluster: &Cluster,
    name: Option<&str>,
    all_namespaces: bool,
    output: Output,
) -> Result<String, Error> {
    let experiments = match name {
        Some(name) => vec![cluster.experiment(name).await?],
        None => {
            let api = if all_namespaces {
                kube::Api::all(cluster.client.clone())
            } else {
                cluster.experiments()
            };
            let namespace = if all_namespaces {
                "*"
            } else {
                &cluster.namespace
            };
            let mut list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| super::api_error(e, "list", EXPERIMENTS, namespace, None))?
                .items;
            list.sort_by_key(|e| (e.namespace(), e.name_any()));
            list
        }
    };
    match (output, name) {
        (Output::Table, _) if experiments.is_empty() => Ok(if all_namespaces {
            "No experiments found.\n".to_string()
        } else {
            format!("No experiments found in namespace {}.\n", cluster.namespace)
        }),
        (Output::Table, _) => Ok(render(&experiments, all_namespaces, super::now())),
        (_, Some(_)) => {
            // The one Experiment asked for (an `Option` serializes as its value).
            let one = experiments.into_iter().next().map(super::for_printing);
            super::encode(&one, output)
        }
        (_, None) => {
            let items: Vec<Experiment> = experiments.into_iter().map(super::for_printing).collect();
            super::encode(
                &json!({"apiVersion": "v1", "kind": "List", "items": items}),
                output,
            )
        }
    }
}

/// The table: NAMESPACE (with `-A`), NAME, TYPE, PHASE, ITERATION, WINNER, WEIGHTS, AGE.
pub fn render(experiments: &[Experiment], all_namespaces: bool, now: i64) -> String {
    let mut headers = vec![
        "NAME",
        "TYPE",
        "PHASE",
        "ITERATION",
        "WINNER",
        "WEIGHTS",
        "AGE",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = experiments
        .iter()
        .map(|e| {
            let mut row = vec![
                e.name_any(),
                kind(e),
                phase(e),
                iteration(e),
                e.status
                    .as_ref()
                    .and_then(|s| s.winner.as_ref())
                    .map_or_else(|| "-".into(), |w| w.version.clone()),
                weights(e),
                e.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or_else(|| "-".into(), |t| age(t, now)),
            ];
            if all_namespaces {
                row.insert(0, e.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table::render(&headers, &rows, 0)
}

/// The experiment's kind as written in the spec: `canary`, `abn`, ...
pub fn kind(e: &Experiment) -> String {
    serde_json::to_value(e.spec.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", e.spec.kind))
}

/// The phase; `Pending` until the controller has written a status.
pub fn phase(e: &Experiment) -> String {
    e.status
        .as_ref()
        .map(|s| s.phase)
        .unwrap_or_default()
        .to_string()
}

/// `completed/max`, e.g. `3/10`.
pub fn iteration(e: &Experiment) -> String {
    format!(
        "{}/{}",
        e.status.as_ref().map_or(0, |s| s.completed_iterations),
        e.spec.duration.max_iterations
    )
}

/// The split now applied, `v1=70,v2=30`; `-` before the controller has set one.
pub fn weights(e: &Experiment) -> String {
    let Some(status) = e.status.as_ref().filter(|s| !s.weights.is_empty()) else {
        return "-".into();
    };
    status
        .weights
        .iter()
        .map(|w| format!("{}={}", w.version, w.weight))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn experiment(yaml: &str) -> Experiment {
        serde_yaml::from_str(yaml).expect("experiment")
    }

    #[test]
    fn the_table_shows_phase_iteration_winner_weights_and_age() {
        let e = experiment(
            "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\n\
             metadata: {name: reviews, namespace: shop, creationTimestamp: '1970-01-12T13:46:40Z'}\n\
             spec:\n  kind: canary\n  versions: [{name: v1}, {name: v2}]\n  duration: {maxIterations: 10}\n\
             status:\n  phase: Running\n  completedIterations: 3\n\
               \x20 weights: [{version: v1, weight: 70}, {version: v2, weight: 30}]\n\
               \x20 winner: {version: v2, probability: 0.97}\n",
        );
        let fresh = experiment(
            "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\n\
             metadata: {name: a-new-one, namespace: shop}\n\
             spec:\n  kind: abn\n  versions: [{name: a}, {name: b}]\n",
        );
        let table = render(&[e.clone(), fresh], true, 1_000_000 + 300);
        assert_eq!(
            table,
            "NAMESPACE   NAME        TYPE     PHASE     ITERATION   WINNER   WEIGHTS       AGE\n\
             shop        reviews     canary   Running   3/10        v2       v1=70,v2=30   5m\n\
             shop        a-new-one   abn      Pending   0/20        -        -             -\n"
        );
        assert!(render(&[e], false, 0).starts_with("NAME "));
    }
}
