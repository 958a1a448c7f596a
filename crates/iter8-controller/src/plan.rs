//! What a reconcile should do, decided from the Experiment alone (no I/O), so that every
//! branch of the lifecycle is tested directly.

use std::time::{Duration, SystemTime};

use iter8_api::{Action, Decision};
use iter8_crd::{ExperimentSpec, ExperimentStatus, OverrideAction, PendingIteration, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The next step of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do until the Experiment changes.
    Idle,
    /// First reconcile: record the start and put the router in its starting split.
    Start {
        /// The starting split.
        weights: Vec<u32>,
    },
    /// An iteration was decided but not fully applied (the controller stopped midway):
    /// apply it and record it, without deciding again.
    FinishPending(PendingIteration),
    /// A person asked to end the experiment now.
    Terminate {
        /// The final split.
        weights: Vec<u32>,
    },
    /// A person asked to pause.
    Pause {
        /// A split to hold while paused, if one was given.
        weights: Option<Vec<u32>>,
    },
    /// The next iteration is not due yet.
    Wait(Duration),
    /// Run this iteration now.
    Iterate {
        /// The iteration number, `completedIterations + 1`.
        iteration: u32,
    },
}

/// Decides the next step; `generation` is the Experiment's `metadata.generation`.
pub fn plan(
    spec: &ExperimentSpec,
    status: &ExperimentStatus,
    generation: Option<i64>,
    now: SystemTime,
) -> Step {
    if status.phase.is_terminal() {
        return Step::Idle;
    }
    // A split held at an approval gate still gives way to a person's pause or terminate.
    let at_gate = status.gate.is_some()
        && spec
            .manual_override
            .as_ref()
            .is_some_and(|o| o.action != OverrideAction::Resume);
    if let Some(pending) = &status.pending
        && !at_gate
    {
        return Step::FinishPending(pending.clone());
    }
    let current = if status.weights.is_empty() {
        spec.initial_weights()
    } else {
        status.weights.iter().map(|w| w.weight).collect()
    };
    if let Some(o) = &spec.manual_override {
        match o.action {
            OverrideAction::Terminate => {
                let weights = o.split.clone().unwrap_or_else(|| match &status.decision {
                    // A decision held at an approval gate was never approved: ending the
                    // experiment must not carry it out (no winner, so `toWinner` is the
                    // baseline and `keepLast` the split in force).
                    Some(decision) if status.gate.is_some() => spec.final_weights(
                        &Decision {
                            action: Action::Continue,
                            version: None,
                            reason: decision.reason.clone(),
                        },
                        &current,
                    ),
                    Some(decision) => spec.final_weights(decision, &current),
                    // Ended before any decision: only the baseline is known to be safe.
                    None => spec.initial_weights_on_baseline(),
                });
                return Step::Terminate { weights };
            }
            OverrideAction::Pause => {
                let wanted = o.split.clone().filter(|s| *s != current);
                return if status.phase == Phase::Paused && wanted.is_none() {
                    Step::Idle
                } else {
                    Step::Pause { weights: wanted }
                };
            }
            OverrideAction::Resume => {}
        }
    }
    // Paused by the failure policy: only a newer spec (say, a fixed analytics URL, or a
    // resume) goes on.
    if status.phase == Phase::Paused
        && status
            .paused_at_generation
            .is_some_and(|at| generation.is_none_or(|g| g <= at))
    {
        return Step::Idle;
    }
    if status.start_time.is_none() {
        return Step::Start {
            weights: spec.initial_weights(),
        };
    }
    let due = next_iteration_due(spec, status).unwrap_or(now);
    match due.duration_since(now) {
        Ok(wait) if !wait.is_zero() => Step::Wait(wait),
        _ => Step::Iterate {
            iteration: status.completed_iterations + 1,
        },
    }
}

/// When the next iteration is due: one interval after the last one, or after the start;
/// `None` before the experiment starts.
pub fn next_iteration_due(spec: &ExperimentSpec, status: &ExperimentStatus) -> Option<SystemTime> {
    let interval = parse_interval(&spec.duration.interval).unwrap_or(Duration::from_secs(30));
    let since = status
        .last_iteration_time
        .as_ref()
        .or(status.start_time.as_ref())?;
    Some(system_time(since) + interval)
}

/// Helpers on the spec that only the controller needs.
pub trait SpecExt {
    /// All traffic on the baseline.
    fn initial_weights_on_baseline(&self) -> Vec<u32>;
}

impl SpecExt for ExperimentSpec {
    fn initial_weights_on_baseline(&self) -> Vec<u32> {
        (0..self.versions.len())
            .map(|i| if i == 0 { 100 } else { 0 })
            .collect()
    }
}

/// Parses a duration such as `30s`, `5m`, `1h30m` or `250ms` (the CRD's pattern).
pub fn parse_interval(text: &str) -> Option<Duration> {
    iter8_crd::parse_duration(text)
}

/// A Kubernetes timestamp as a `SystemTime`.
pub fn system_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iter8_api::{Action, Decision, VersionWeight};
    use iter8_crd::{ManualOverride, TerminationPolicy};
    use k8s_openapi::jiff::Timestamp;

    fn spec() -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "canary",
            "versions": [{"name": "stable", "backend": {"name": "s"}},
                         {"name": "next", "backend": {"name": "n"}}],
            "router": {"httpRoute": {"name": "r"}},
            "duration": {"interval": "30s", "maxIterations": 5}
        }))
        .expect("valid spec")
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid"))
    }

    fn now(seconds: i64) -> SystemTime {
        system_time(&at(seconds))
    }

    fn running(completed: u32, last: i64) -> ExperimentStatus {
        ExperimentStatus {
            phase: Phase::Running,
            completed_iterations: completed,
            start_time: Some(at(1000)),
            last_iteration_time: (completed > 0).then(|| at(last)),
            weights: vec![
                VersionWeight {
                    version: "stable".into(),
                    weight: 80,
                },
                VersionWeight {
                    version: "next".into(),
                    weight: 20,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_new_experiment_starts_on_the_baseline() {
        let step = plan(&spec(), &ExperimentStatus::default(), None, now(1000));
        assert_eq!(
            step,
            Step::Start {
                weights: vec![100, 0]
            }
        );
    }

    #[test]
    fn the_first_iteration_comes_one_interval_after_the_start() {
        let status = running(0, 0);
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1010)),
            Step::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1030)),
            Step::Iterate { iteration: 1 }
        );
    }

    #[test]
    fn the_next_iteration_is_numbered_from_the_completed_ones() {
        let status = running(3, 1090);
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1100)),
            Step::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1200)),
            Step::Iterate { iteration: 4 }
        );
    }

    #[test]
    fn a_pending_iteration_is_finished_before_anything_else() {
        let mut status = running(3, 1090);
        let pending = PendingIteration {
            iteration: 4,
            weights: vec![60, 40],
            next_phase: Phase::Running,
            ledger: None,
        };
        status.pending = Some(pending.clone());
        let mut s = spec();
        s.manual_override = Some(ManualOverride {
            action: OverrideAction::Terminate,
            split: None,
        });
        assert_eq!(
            plan(&s, &status, Some(1), now(1100)),
            Step::FinishPending(pending)
        );
    }

    #[test]
    fn terminate_uses_the_given_split_or_the_policy() {
        let status = running(2, 1060);
        let mut s = spec();
        s.manual_override = Some(ManualOverride {
            action: OverrideAction::Terminate,
            split: Some(vec![30, 70]),
        });
        assert_eq!(
            plan(&s, &status, Some(1), now(1100)),
            Step::Terminate {
                weights: vec![30, 70]
            }
        );
        s.manual_override = Some(ManualOverride {
            action: OverrideAction::Terminate,
            split: None,
        });
        assert_eq!(
            plan(&s, &status, Some(1), now(1100)),
            Step::Terminate {
                weights: vec![100, 0]
            },
            "without a decision, terminate goes to the baseline"
        );
        let mut decided = status.clone();
        decided.decision = Some(Decision {
            action: Action::Continue,
            version: None,
            reason: String::new(),
        });
        s.on_termination = TerminationPolicy::KeepLast;
        assert_eq!(
            plan(&s, &decided, Some(1), now(1100)),
            Step::Terminate {
                weights: vec![80, 20]
            }
        );
    }

    #[test]
    fn pause_holds_and_resume_goes_on() {
        let mut status = running(2, 1060);
        let mut s = spec();
        s.manual_override = Some(ManualOverride {
            action: OverrideAction::Pause,
            split: None,
        });
        assert_eq!(
            plan(&s, &status, Some(1), now(1200)),
            Step::Pause { weights: None }
        );
        status.phase = Phase::Paused;
        assert_eq!(plan(&s, &status, Some(1), now(1200)), Step::Idle);
        s.manual_override = Some(ManualOverride {
            action: OverrideAction::Resume,
            split: None,
        });
        assert_eq!(
            plan(&s, &status, Some(1), now(1200)),
            Step::Iterate { iteration: 3 }
        );
    }

    #[test]
    fn a_failure_policy_pause_holds_until_the_spec_changes() {
        let mut status = running(2, 1060);
        status.phase = Phase::Paused;
        status.paused_at_generation = Some(3);
        assert_eq!(plan(&spec(), &status, Some(3), now(1200)), Step::Idle);
        assert_eq!(
            plan(&spec(), &status, Some(4), now(1200)),
            Step::Iterate { iteration: 3 }
        );
    }

    #[test]
    fn finished_experiments_are_left_alone() {
        let mut status = running(5, 1150);
        status.phase = Phase::Completed;
        assert_eq!(plan(&spec(), &status, Some(1), now(5000)), Step::Idle);
    }
}
