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

/// When the next iteration is due: one interval after the last one; the first at
/// `firstIterationDue` (one interval after the start when an older controller started it);
/// `None` before the experiment starts.
pub fn next_iteration_due(spec: &ExperimentSpec, status: &ExperimentStatus) -> Option<SystemTime> {
    let interval = interval_of(spec);
    match (&status.last_iteration_time, &status.first_iteration_due) {
        (Some(last), _) => Some(system_time(last) + interval),
        (None, Some(first)) => Some(system_time(first)),
        (None, None) => Some(system_time(status.start_time.as_ref()?) + interval),
    }
}

/// The widest spread of first iterations: a longer interval still spreads its starts over
/// at most a minute, so no experiment waits long for its first look.
pub const MAX_START_SPREAD: Duration = Duration::from_secs(60);

/// How long after its first interval an experiment's first iteration is due: an offset in
/// `[0, min(interval, MAX_START_SPREAD))` from a hash of `key` (`namespace/name`), as
/// Prometheus spreads its targets' scrapes. A thousand experiments created within seconds
/// would otherwise fall due within the same seconds at every iteration, and ask the API
/// server for more than it serves (docs/performance.md).
pub fn start_offset(spec: &ExperimentSpec, key: &str) -> Duration {
    let spread = interval_of(spec).min(MAX_START_SPREAD).as_millis() as u64;
    if spread == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(fnv1a(key.as_bytes()) % spread)
}

/// The spec's interval, or the default 30 s if it does not parse: one rule for the
/// schedule, the first iteration's due time and the requeue.
pub fn interval_of(spec: &ExperimentSpec) -> Duration {
    parse_interval(&spec.duration.interval).unwrap_or(Duration::from_secs(30))
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike the standard hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
    fn the_first_iteration_waits_for_its_recorded_due_time_and_later_ones_do_not() {
        let mut status = running(0, 0);
        status.first_iteration_due = Some(at(1047));
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1030)),
            Step::Wait(Duration::from_secs(17))
        );
        assert_eq!(
            plan(&spec(), &status, Some(1), now(1047)),
            Step::Iterate { iteration: 1 }
        );
        // Once an iteration completed, the next is one interval after it.
        let mut later = running(1, 1050);
        later.first_iteration_due = Some(at(1047));
        assert_eq!(
            plan(&spec(), &later, Some(1), now(1060)),
            Step::Wait(Duration::from_secs(20))
        );
    }

    #[test]
    fn experiments_created_together_have_their_first_iterations_spread_over_the_interval() {
        // A thousand experiments, as a GitOps sync would create them: at most a few share
        // any one second of a 30 s interval, and the same name always gets the same offset.
        let spec = spec();
        let mut per_second = [0u32; 30];
        for i in 0..1000 {
            let offset = start_offset(&spec, &format!("team-a/exp-{i}"));
            assert!(offset < Duration::from_secs(30), "{offset:?}");
            per_second[offset.as_secs() as usize] += 1;
        }
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(busiest <= 2 * 1000 / 30, "{per_second:?}");
        assert_eq!(
            start_offset(&spec, "team-a/exp-7"),
            start_offset(&spec, "team-a/exp-7")
        );
        // A long interval spreads over at most a minute.
        let mut hourly = spec.clone();
        hourly.duration.interval = "1h".into();
        let longest = (0..1000)
            .map(|i| start_offset(&hourly, &format!("team-a/exp-{i}")))
            .max()
            .unwrap_or_default();
        assert!(longest < MAX_START_SPREAD && longest > Duration::from_secs(50));
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
