//! `fixed_thresholds`: Flagger and Argo Rollouts semantics, for users who migrate and for
//! comparison.
//!
//! Every interval, the candidate's point values *of that interval alone* (differences of the
//! history snapshots) are checked against the criteria. While the latest check passes the
//! candidate gains `maxCandidateWeightIncrement` points, up to its maximum weight; a passing
//! check at the maximum weight promotes it. After `maxFailedChecks` failed interval checks in
//! total, it is rolled back. An interval in which the candidate had traffic but no data counts
//! as a failed check, as in Flagger. There is no error control: every interval is a test.
//!
//! The maximum weight is `maxCandidateWeight`; absent, it is 50, Flagger's usual `maxWeight`
//! (for the other algorithms an absent value means 100, "no cap"). A ramp to 100 % hands
//! the candidate all the traffic before it is promoted, with no baseline left to compare a
//! relative criterion with; at 50 % the baseline serves at least half the requests until
//! promotion, so a candidate that breaks a criterion never gets most of the traffic. A user
//! who wants the full ramp asks for it with an explicit 100.

use iter8_api::{Action, Decision};

use super::{Context, Strategy};
use crate::decision::Verdict;

/// Per-interval threshold checks with a step ramp.
pub struct FixedThresholds;

/// The weight at which the ramp stops and a passing check promotes: `maxCandidateWeight`,
/// [`Algorithm::default_max_candidate_weight`](iter8_api::Algorithm) (50) when absent.
fn max_weight(s: &iter8_api::Strategy) -> u32 {
    s.candidate_weight_limit()
}

impl Strategy for FixedThresholds {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let s = &ctx.request.strategy;
        let current = ctx.current_weights()[1];
        let checks = interval_checks(ctx);
        let next = match checks.last() {
            Some(&(_, false)) => current,
            _ => (current + s.max_candidate_weight_increment).min(max_weight(s)),
        };
        vec![100 - next, next]
    }

    fn decide(&self, ctx: &Context<'_>) -> Verdict {
        let req = ctx.request;
        let s = &req.strategy;
        let names: Vec<&str> = req.versions.iter().map(|v| v.name.as_str()).collect();
        let checks = interval_checks(ctx);
        let failed = ctx.model.evidence.versions[1].failed_checks as usize;
        let latest = checks.last().copied();
        let max = max_weight(s);
        let at_max = req.versions[1].weight >= max;
        let last = req.max_iterations.is_some_and(|m| req.iteration >= m);
        let (action, version, reason) = if failed >= s.max_failed_checks as usize {
            (
                Action::Rollback,
                None,
                format!(
                    "{} failed {failed} interval checks (limit {}); traffic goes back to {}",
                    names[1], s.max_failed_checks, names[0]
                ),
            )
        } else if matches!(latest, Some((i, true)) if i == req.iteration)
            && at_max
            && req.iteration >= req.min_iterations
            && ctx.model.promotion_blocked.is_none()
        {
            (
                Action::Promote,
                Some(names[1].to_string()),
                format!(
                    "{} passed its interval check at the maximum weight {max} ({failed} \
                     failed checks)",
                    names[1]
                ),
            )
        } else {
            let why = format!(
                "{} is at weight {} with {failed} failed interval checks",
                names[1], req.versions[1].weight
            );
            if last {
                (
                    Action::Inconclusive,
                    None,
                    format!("the last iteration ended before promotion: {why}"),
                )
            } else {
                (Action::Continue, None, why)
            }
        };
        Verdict {
            decision: Decision {
                action,
                version,
                reason,
            },
            winner: None,
        }
    }
}

/// For each recent interval in which the candidate had traffic: its iteration and whether
/// every criterion held on that interval's point values (folded into the evidence).
fn interval_checks(ctx: &Context<'_>) -> Vec<(u32, bool)> {
    ctx.model.evidence.versions[1]
        .recent
        .iter()
        .filter_map(|r| r.check.map(|ok| (r.iteration, ok)))
        .collect()
}
