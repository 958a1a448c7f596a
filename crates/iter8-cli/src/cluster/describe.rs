//! `iter8 describe NAME`: why the experiment is where it is. The versions with their
//! estimates and credible intervals, the probability of each criterion, the decision and its
//! reason, the conditions, the history of splits and the recent Events.

use std::fmt::Write as _;

use iter8_crd::Experiment;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Cluster, Error, Output, age, get, table};

/// The most Events shown.
const RECENT_EVENTS: usize = 10;

/// Describes the Experiment `name`: as text, or (JSON, YAML) the object and its Events.
pub async fn run(cluster: &Cluster, name: &str, output: Output) -> Result<String, Error> {
    let experiment = cluster.experiment(name).await?;
    // Like `kubectl describe`, a user who may read the Experiment but not Events still gets
    // the description; the Events section says why it is empty.
    let events = match events(cluster, &experiment).await {
        Ok(events) => Some(events),
        Err(e @ Error::Forbidden { .. }) => {
            eprintln!("warning: {e}; Events are not shown");
            None
        }
        Err(e) => return Err(e),
    };
    match output {
        Output::Table => Ok(render(&experiment, events.as_deref(), super::now())),
        _ => super::encode(
            &json!({"experiment": super::for_printing(experiment), "events": events}),
            output,
        ),
    }
}

/// The Events about `experiment` (the Events API, as `kubectl describe` reads them), oldest
/// first, at most the last [`RECENT_EVENTS`].
pub async fn events(cluster: &Cluster, experiment: &Experiment) -> Result<Vec<Event>, Error> {
    let mut selector = format!(
        "involvedObject.kind=Experiment,involvedObject.name={}",
        experiment.name_any()
    );
    if let Some(uid) = experiment.uid() {
        let _ = write!(selector, ",involvedObject.uid={uid}");
    }
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| cluster.api_error(e, "list", "events", None))?
        .items;
    events.sort_by_key(|e| last_seen(e).unwrap_or(0));
    let skip = events.len().saturating_sub(RECENT_EVENTS);
    Ok(events.split_off(skip))
}

fn last_seen(e: &Event) -> Option<i64> {
    e.last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// The description, as text; `events` is `None` when they could not be listed.
pub fn render(e: &Experiment, events: Option<&[Event]>, now: i64) -> String {
    let mut out = String::new();
    let status = e.status.clone().unwrap_or_default();
    let spec = &e.spec;
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{:<13} {value}", format!("{name}:"));
    };
    field(&mut out, "Name", &e.name_any());
    field(&mut out, "Namespace", &e.namespace().unwrap_or_default());
    field(&mut out, "Type", &get::kind(e));
    field(&mut out, "Phase", &status.phase.to_string());
    field(
        &mut out,
        "Iteration",
        &format!(
            "{} of {} (no promotion before {}), every {}",
            status.completed_iterations,
            spec.duration.max_iterations,
            spec.duration.min_iterations,
            spec.duration.interval
        ),
    );
    if let Some(start) = &status.start_time {
        field(
            &mut out,
            "Started",
            &format!("{} ({} ago)", start.0, age(start, now)),
        );
    }
    if let (0, Some(due)) = (status.completed_iterations, &status.first_iteration_due)
        && !status.phase.is_terminal()
    {
        field(
            &mut out,
            "First due",
            &format!("{} (the first iteration)", due.0),
        );
    }
    field(&mut out, "Weights", &get::weights(e));
    field(
        &mut out,
        "Winner",
        &status.winner.as_ref().map_or_else(
            || "none yet".into(),
            |w| format!("{} (probability {:.3})", w.version, w.probability),
        ),
    );
    match &status.decision {
        Some(d) => {
            field(&mut out, "Decision", &d.to_string());
            field(&mut out, "Reason", &d.reason);
        }
        None => field(
            &mut out,
            "Decision",
            "none yet (no iteration has completed)",
        ),
    }
    if let Some(o) = &spec.manual_override {
        let action = serde_json::to_value(o.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let split = o
            .split
            .as_ref()
            .map(|s| {
                format!(
                    " with split {}",
                    iter8_crd::weights_summary(&spec.versions, s)
                )
            })
            .unwrap_or_default();
        field(&mut out, "Override", &format!("{action}{split}"));
    }
    if let Some(gate) = &status.gate {
        let timed_out = if gate.timed_out {
            ", past its timeout"
        } else {
            ""
        };
        field(
            &mut out,
            "Gate",
            &format!(
                "{} waits for approval (for {}{timed_out}): iter8 approve {}",
                gate.name,
                age(&gate.since, now),
                e.name_any()
            ),
        );
    }
    if let Some(message) = &status.message {
        field(&mut out, "Message", message);
    }

    versions(&mut out, e, &status);
    criteria(&mut out, &status);

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(&c.last_transition_time, now),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            &rows,
            2,
        ));
    }

    out.push_str("\nHistory (splits, oldest first):\n");
    if status.history.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .history
            .iter()
            .map(|r| {
                let decision = iter8_api::Decision {
                    action: r.action,
                    version: r.version.clone(),
                    reason: String::new(),
                };
                vec![
                    r.iteration.to_string(),
                    r.time.0.to_string(),
                    iter8_crd::weights_summary(&spec.versions, &r.weights),
                    decision.to_string(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["ITERATION", "TIME", "WEIGHTS", "DECISION"],
            &rows,
            2,
        ));
    }

    if !status.approvals.is_empty() {
        out.push_str("\nApprovals (gates opened, oldest first):\n");
        let rows: Vec<Vec<String>> = status
            .approvals
            .iter()
            .map(|a| {
                vec![
                    a.gate.clone(),
                    a.by.clone(),
                    a.at.as_ref()
                        .map_or_else(|| "-".into(), |t| t.0.to_string()),
                ]
            })
            .collect();
        out.push_str(&table::render(&["GATE", "BY", "AT"], &rows, 2));
    }

    out.push_str("\nEvents:\n");
    let Some(events) = events else {
        out.push_str("  <not shown: no permission to list events>\n");
        return out;
    };
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|ev| {
                let seen = last_seen(ev).map_or_else(
                    || "-".into(),
                    |t| {
                        let t = k8s_openapi::jiff::Timestamp::from_second(t)
                            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
                        t.map_or_else(|_| "-".into(), |t| age(&t, now))
                    },
                );
                let from = ev
                    .reporting_component
                    .clone()
                    .filter(|c| !c.is_empty())
                    .or_else(|| ev.source.as_ref().and_then(|s| s.component.clone()))
                    .unwrap_or_else(|| "-".into());
                vec![
                    ev.type_.clone().unwrap_or_default(),
                    ev.reason.clone().unwrap_or_default(),
                    seen,
                    from,
                    ev.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["TYPE", "REASON", "AGE", "FROM", "MESSAGE"],
            &rows,
            2,
        ));
    }
    out
}

/// Each version's probabilities and its metrics' estimates with 95 % credible intervals.
fn versions(out: &mut String, e: &Experiment, status: &iter8_crd::ExperimentStatus) {
    let _ = writeln!(
        out,
        "\nVersions (assessed at iteration {}):",
        status.completed_iterations
    );
    for (i, v) in e.spec.versions.iter().enumerate() {
        let role = if i == 0 { "baseline" } else { "candidate" };
        let weight = status
            .weights
            .iter()
            .find(|w| w.version == v.name)
            .map_or_else(String::new, |w| format!(", weight {}%", w.weight));
        let Some(a) = status.versions.iter().find(|a| a.name == v.name) else {
            let _ = writeln!(out, "  {} ({role}{weight}): not assessed yet", v.name);
            continue;
        };
        let beats = a
            .probability_beats_baseline
            .map(|p| format!(", P(beats baseline) {p:.3}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} ({role}{weight}): P(win) {:.3}, P(all criteria) {:.3}{beats}",
            v.name, a.win_probability, a.probability_all_criteria
        );
        let rows: Vec<Vec<String>> = a
            .metrics
            .iter()
            .map(|m| {
                let target = iter8_api::Target {
                    metric: m.metric.clone(),
                    quantile: m.quantile,
                };
                let (value, interval) = match (m.value, m.credible_interval) {
                    (Some(value), Some(ci)) => (
                        format!("{value:.4}"),
                        format!("[{:.4}, {:.4}]", ci.lower, ci.upper),
                    ),
                    (Some(value), None) => (format!("{value:.4}"), "-".into()),
                    _ => ("no data".into(), "-".into()),
                };
                vec![
                    target.to_string(),
                    value,
                    interval,
                    format!("{}", m.sample_size),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&table::render(
                &["METRIC", "ESTIMATE", "95% CREDIBLE INTERVAL", "SAMPLES"],
                &rows,
                4,
            ));
        }
    }
}

/// One row per criterion, one column per version: the probability of meeting it.
fn criteria(out: &mut String, status: &iter8_crd::ExperimentStatus) {
    let Some(first) = status.versions.first() else {
        return;
    };
    if first.criteria.is_empty() {
        return;
    }
    out.push_str("\nCriteria (probability each version meets it):\n");
    let mut headers = vec!["CRITERION".to_string()];
    headers.extend(status.versions.iter().map(|v| v.name.clone()));
    let rows: Vec<Vec<String>> = first
        .criteria
        .iter()
        .map(|c| {
            let mut row = vec![c.description.clone()];
            row.extend(status.versions.iter().map(|v| {
                v.criteria
                    .iter()
                    .find(|x| x.criterion == c.criterion)
                    .map_or_else(|| "-".into(), |x| format!("{:.3}", x.probability))
            }));
            row
        })
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    out.push_str(&table::render(&headers, &rows, 2));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(yaml: &str) -> Experiment {
        serde_yaml::from_str(yaml).expect("experiment")
    }

    #[test]
    fn the_first_iterations_due_time_is_shown_until_it_has_run() {
        let waiting = |completed: u32, phase: &str| {
            experiment(&format!(
                "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\n\
                 metadata: {{name: reviews, namespace: shop}}\n\
                 spec:\n  kind: canary\n  versions: [{{name: v1}}, {{name: v2}}]\n\
                 status:\n  phase: {phase}\n  completedIterations: {completed}\n\
                 \x20 startTime: '1970-01-12T13:46:40Z'\n\
                 \x20 firstIterationDue: '1970-01-12T13:47:17Z'\n"
            ))
        };
        let line = "First due:    1970-01-12T13:47:17Z (the first iteration)\n";
        assert!(
            render(&waiting(0, "Running"), None, 1_000_010).contains(line),
            "{}",
            render(&waiting(0, "Running"), None, 1_000_010)
        );
        assert!(!render(&waiting(1, "Running"), None, 1_000_040).contains("First due"));
        assert!(!render(&waiting(0, "Completed"), None, 1_000_040).contains("First due"));
    }
}
