//! `iter8 watch NAME`: one line per iteration as the controller records it, until the
//! experiment ends; the exit code says how it ended ([`Outcome::exit_code`]).

use std::io::Write;

use futures::{Stream, StreamExt};
use iter8_api::Action;
use iter8_crd::{Experiment, Phase};
use kube::runtime::{WatchStreamExt, watcher};

use super::{Cluster, EXPERIMENTS, Error, get};

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed: a version was promoted (or passed), or it ended inconclusive with traffic
    /// placed by the termination policy.
    Completed,
    /// Completed with a rollback: the candidate failed and traffic went back to the baseline.
    RolledBack,
    /// The controller could not go on (failure policy, router gone).
    Failed,
    /// A person terminated it (`iter8 terminate`).
    Aborted,
}

impl Outcome {
    /// The outcome of an experiment that has ended; `None` while it runs.
    pub fn of(e: &Experiment) -> Option<Outcome> {
        let status = e.status.as_ref()?;
        match status.phase {
            Phase::Completed
                if status
                    .decision
                    .as_ref()
                    .is_some_and(|d| d.action == Action::Rollback) =>
            {
                Some(Outcome::RolledBack)
            }
            Phase::Completed => Some(Outcome::Completed),
            Phase::Failed => Some(Outcome::Failed),
            Phase::Aborted => Some(Outcome::Aborted),
            Phase::Pending | Phase::Running | Phase::Paused => None,
        }
    }

    /// The exit code of `iter8 watch`: 0 completed (promoted, passed or inconclusive),
    /// 2 rolled back, 3 failed, 4 aborted. (1 is any error of the command itself.)
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Completed => 0,
            Outcome::RolledBack => 2,
            Outcome::Failed => 3,
            Outcome::Aborted => 4,
        }
    }
}

/// Watches the Experiment `name`, writing a line to `out` whenever its iteration, phase,
/// split or decision changes, and returns how it ended.
pub async fn run(cluster: &Cluster, name: &str, out: &mut impl Write) -> Result<Outcome, Error> {
    // A named, missing experiment is an error now, not a watch that never ends.
    cluster.experiment(name).await?;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(cluster.experiments(), config).default_backoff();
    follow(stream, &cluster.namespace, name, out).await
}

/// The watch loop of [`run`], over the watcher's events for the one Experiment `name`.
pub async fn follow(
    stream: impl Stream<Item = Result<watcher::Event<Experiment>, watcher::Error>>,
    namespace: &str,
    name: &str,
    out: &mut impl Write,
) -> Result<Outcome, Error> {
    let not_found = || Error::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    };
    let mut stream = std::pin::pin!(stream);
    let mut last: Option<String> = None;
    // Whether the current (re)list has returned the experiment: a relist after a dropped
    // watch reports a deletion only by leaving the object out, never by a Delete event.
    let mut listed = false;
    while let Some(event) = stream.next().await {
        let experiment = match event {
            Ok(watcher::Event::Apply(e)) => e,
            Ok(watcher::Event::InitApply(e)) => {
                listed = true;
                e
            }
            Ok(watcher::Event::Init) => {
                listed = false;
                continue;
            }
            Ok(watcher::Event::InitDone) if !listed => return Err(not_found()),
            Ok(watcher::Event::InitDone) => continue,
            Ok(watcher::Event::Delete(_)) => return Err(not_found()),
            Err(
                watcher::Error::InitialListFailed(e)
                | watcher::Error::WatchStartFailed(e)
                | watcher::Error::WatchFailed(e),
            ) if matches!(&e, kube::Error::Api(s) if s.is_forbidden()) => {
                return Err(super::api_error(
                    e,
                    "watch",
                    EXPERIMENTS,
                    namespace,
                    Some(name),
                ));
            }
            Err(e) => {
                // The watch is restarted with a backoff; say so once per error.
                eprintln!("watch interrupted ({e}); retrying");
                continue;
            }
        };
        let line = line(&experiment);
        if last.as_ref() != Some(&line) {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
            last = Some(line);
        }
        if let Some(outcome) = Outcome::of(&experiment) {
            let _ = out.write_all(outcome_line(&experiment, outcome).as_bytes());
            return Ok(outcome);
        }
    }
    Err(Error::WatchEnded {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// `iteration 3/10  Running  v1=70,v2=30  continue: <reason>`.
pub fn line(e: &Experiment) -> String {
    let decision = e
        .status
        .as_ref()
        .and_then(|s| s.decision.as_ref())
        .map_or_else(
            || "no decision yet".into(),
            |d| format!("{d}: {}", d.reason),
        );
    format!(
        "iteration {:<6} {:<9}  {:<24}  {decision}\n",
        get::iteration(e),
        get::phase(e),
        get::weights(e),
    )
}

/// The last line: how it ended and the split left in place.
pub fn outcome_line(e: &Experiment, outcome: Outcome) -> String {
    let what = match outcome {
        Outcome::Completed => "completed",
        Outcome::RolledBack => "rolled back",
        Outcome::Failed => "failed",
        Outcome::Aborted => "aborted",
    };
    let winner = e
        .status
        .as_ref()
        .and_then(|s| s.winner.as_ref())
        .map(|w| format!(", winner {}", w.version))
        .unwrap_or_default();
    let message = e
        .status
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "experiment {what}{winner}; final split {}{message}\n",
        get::weights(e)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(status: &str) -> Experiment {
        serde_yaml::from_str(&format!(
            "apiVersion: iter8.tools/v3alpha1\nkind: Experiment\nmetadata: {{name: r}}\n\
             spec:\n  kind: canary\n  versions: [{{name: v1}}, {{name: v2}}]\n\
             status:\n{status}"
        ))
        .expect("experiment")
    }

    #[test]
    fn exit_codes_tell_promotion_from_rollback_failure_and_abort() {
        let decision = |action: &str| {
            format!("  phase: Completed\n  decision: {{action: {action}, reason: r}}\n")
        };
        let code = |s: &str| Outcome::of(&with_status(s)).map(Outcome::exit_code);
        assert_eq!(code(&decision("promote")), Some(0));
        assert_eq!(code(&decision("inconclusive")), Some(0));
        assert_eq!(code(&decision("rollback")), Some(2));
        assert_eq!(code("  phase: Failed\n"), Some(3));
        assert_eq!(code("  phase: Aborted\n"), Some(4));
        assert_eq!(code("  phase: Running\n"), None);
        assert_eq!(code("  phase: Paused\n"), None);
    }

    #[tokio::test]
    async fn an_experiment_missing_from_a_relist_is_reported_deleted() {
        let running = with_status("  phase: Running\n  completedIterations: 1\n");
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(running)),
            Ok(watcher::Event::InitDone),
            // The watch dropped, the object was deleted meanwhile: the relist lacks it.
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
        ];
        let mut out = Vec::new();
        let err = follow(futures::stream::iter(events), "shop", "r", &mut out)
            .await
            .expect_err("deleted");
        assert_eq!(
            err.to_string(),
            r#"experiment "r" not found in namespace "shop""#
        );
        assert!(String::from_utf8_lossy(&out).starts_with("iteration 1/20 "));
    }

    #[test]
    fn a_line_shows_the_iteration_phase_split_and_decision() {
        let e = with_status(
            "  phase: Running\n  completedIterations: 2\n\
             \x20 weights: [{version: v1, weight: 70}, {version: v2, weight: 30}]\n\
             \x20 decision: {action: continue, reason: v2 meets the criteria}\n",
        );
        assert_eq!(
            line(&e),
            "iteration 2/20   Running    v1=70,v2=30               continue: v2 meets the criteria\n"
        );
    }
}
