//! `safe`, the default: safe top-two allocation with anytime-valid guards.
//!
//! * **Allocation.** Each live version gets its top-two share: half the probability of being
//!   the best feasible version plus half the probability of being the runner-up, from the
//!   joint draws (top-two Thompson sampling with beta = 1/2, which keeps sampling the
//!   challenger that plain Thompson sampling starves). Then limits: a candidate is capped at
//!   [`NEW_CANDIDATE_CAP`] until it has [`ENOUGH_SAMPLES`] observations, and below
//!   P(meets all criteria) [`ENOUGH_FEASIBLE`] that cap shrinks in proportion (down to
//!   [`EXPLORATION_FLOOR`]). With enough observations the cap is the risk-bounded ramp: the
//!   share the candidate would serve while breaking a criterion, share x P(breaks one), is
//!   kept within [`NEW_CANDIDATE_CAP`], so a candidate that is probably safe earns traffic
//!   and a version close to a limit gets the data that can show it feasible; from
//!   P(meets all criteria) [`ENOUGH_FEASIBLE`] on, only `maxCandidateWeight` caps it. The
//!   baseline keeps [`BASELINE_FLOOR`] and every live candidate [`EXPLORATION_FLOOR`] (or
//!   `maxCandidateWeight` if lower).
//!   `maxCandidateWeightIncrement` does not apply: the evidence-based cap replaces it.
//! * **Removal.** A version shown by an anytime-valid test to break a criterion gets no
//!   more traffic. Its cumulative data then stops changing, so the test keeps rejecting on
//!   every later request: removal is for good, although the service keeps no state.
//! * **Suspension.** A candidate that fails its criteria with posterior probability at least
//!   `winnerProbability` (on at least [`crate::decision::MIN_SAMPLES_TO_SUSPEND`]
//!   observations), or whose latest interval alone shows an absolute limit broken (the
//!   regression guard), is held at [`EXPLORATION_FLOOR`]; the decision rule does not promote
//!   it while this lasts. It is not removed: only an anytime-valid test ends a candidate, so
//!   posterior doubt, which the next intervals may clear, bounds the risk (its traffic)
//!   without ending the experiment (a risk-bounded ramp).
//! * **Decision**: the guarded rule every strategy shares ([`crate::decision::guarded`]):
//!   promotion on anytime-valid evidence (criteria shown met, the reward shown better at
//!   `alpha / K`, bake time, regression guard, clean data), rollback when every candidate is
//!   shown broken or worse on at least [`crate::guards::MIN_OBSERVATIONS_TO_REJECT`]
//!   observations.

use super::{Context, Strategy};
use crate::decision::{likely_failing, regressed, samples};
use crate::guards::Guards;
use crate::split::to_percentages;

/// Safe top-two allocation with anytime-valid guards.
pub struct Safe;

/// The most traffic a candidate gets before it has proved itself.
pub const NEW_CANDIDATE_CAP: f64 = 0.10;
/// Observations a candidate needs (on every criterion's metric) to leave the cap.
pub const ENOUGH_SAMPLES: f64 = 1_000.0;
/// P(meets all criteria) a candidate needs to leave the cap.
pub const ENOUGH_FEASIBLE: f64 = 0.8;
/// The baseline's least share while the experiment runs.
pub const BASELINE_FLOOR: f64 = super::BASELINE_FLOOR_PERCENT as f64 / 100.0;
/// Every live candidate's least share, and the share a suspended one (posterior doubt, or
/// the regression guard) is held at. A good candidate can look bad by chance for a while (a
/// few early errors against a 1 % limit): at 2 % of the traffic its doubt took most of the
/// experiment to clear, at 5 % it clears in a few intervals, while a candidate that really
/// breaks a criterion serves little and is removed by its anytime-valid test. Being every
/// live candidate's least share, it is never more than a candidate gets unsuspended:
/// stronger evidence of failure never earns more traffic.
pub const EXPLORATION_FLOOR: f64 = 0.05;

impl Strategy for Safe {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let req = ctx.request;
        let guards = Guards::new(req, ctx.model, req.strategy.alpha);
        let n = req.versions.len();
        let max_candidate = f64::from(req.strategy.candidate_weight_limit()) / 100.0;
        let mut lower = vec![0.0; n];
        let mut upper = vec![0.0; n];
        let mut shares = ctx.draws.top_share[1].clone();
        for v in 0..n {
            if v == 0 {
                lower[v] = BASELINE_FLOOR;
                upper[v] = 1.0;
            } else if guards.broken(v) {
                shares[v] = 0.0;
            } else {
                // No probability (it cannot come from the draws, but a NaN must not open
                // the ramp) counts as no evidence of feasibility.
                let feasible = Some(ctx.draws.all_criteria[v])
                    .filter(|p| p.is_finite())
                    .unwrap_or(0.0);
                let seasoned = samples(ctx, v) >= ENOUGH_SAMPLES;
                let floor = EXPLORATION_FLOOR.min(max_candidate);
                let cap = if seasoned && feasible >= ENOUGH_FEASIBLE {
                    max_candidate
                } else if seasoned {
                    // Enough data and still in doubt: the doubt is the data's spread, and
                    // only more data settles it, so starving the candidate would not help.
                    // The risk-bounded ramp: the share the candidate would serve while
                    // breaking a criterion, share x P(breaks), stays within the new
                    // candidate's cap, so a probably safe candidate earns traffic. The
                    // bound is per candidate: K candidates in doubt may together serve up
                    // to K times it.
                    (NEW_CANDIDATE_CAP / (1.0 - feasible).max(f64::EPSILON))
                        .clamp(floor, max_candidate)
                } else {
                    // A new candidate in doubt gets less than a promising one.
                    let doubt = (feasible / ENOUGH_FEASIBLE).min(1.0);
                    (NEW_CANDIDATE_CAP * doubt).clamp(floor, max_candidate)
                };
                lower[v] = floor;
                // Doubt bounds the risk, not the experiment: a suspended candidate keeps
                // measuring at the floor, a share that lets chance doubt clear in time.
                let suspended = likely_failing(ctx, v) || regressed(ctx, &guards, v);
                upper[v] = if suspended { floor } else { cap };
            }
        }
        to_percentages(&water_fill(&shares, &lower, &upper))
    }

    fn limited(&self) -> bool {
        false
    }
}

/// Shares proportional to `weights`, within `[lower, upper]` per version, summing to 1:
/// versions that hit a bound are fixed there and the rest is spread over the others.
pub fn water_fill(weights: &[f64], lower: &[f64], upper: &[f64]) -> Vec<f64> {
    let n = weights.len();
    let mut fixed: Vec<Option<f64>> = vec![None; n];
    let mut out = vec![0.0; n];
    for _ in 0..=n {
        let free: Vec<usize> = (0..n).filter(|&v| fixed[v].is_none()).collect();
        let remaining = 1.0 - fixed.iter().flatten().sum::<f64>();
        let mass: f64 = free.iter().map(|&v| weights[v].max(0.0)).sum();
        for &v in &free {
            out[v] = if mass > 0.0 {
                remaining * weights[v].max(0.0) / mass
            } else {
                remaining / free.len() as f64
            };
        }
        for v in 0..n {
            if let Some(x) = fixed[v] {
                out[v] = x;
            }
        }
        let over: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&v| out[v] > upper[v])
            .collect();
        let under: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&v| out[v] < lower[v])
            .collect();
        if over.is_empty() && under.is_empty() {
            break;
        }
        // Fix the side that is further off first; the other may resolve itself.
        let excess: f64 = over.iter().map(|&v| out[v] - upper[v]).sum();
        let deficit: f64 = under.iter().map(|&v| lower[v] - out[v]).sum();
        if excess >= deficit {
            for v in over {
                fixed[v] = Some(upper[v]);
            }
        } else {
            for v in under {
                fixed[v] = Some(lower[v]);
            }
        }
        if fixed.iter().all(Option::is_some) {
            for v in 0..n {
                out[v] = fixed[v].unwrap_or(0.0);
            }
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_caps_new_candidates_and_keeps_floors() {
        let out = water_fill(&[0.1, 0.9], &[0.1, 0.02], &[1.0, 0.1]);
        assert!((out[0] - 0.9).abs() < 1e-12 && (out[1] - 0.1).abs() < 1e-12);
        let out = water_fill(&[0.0, 0.5, 0.5], &[0.1, 0.02, 0.02], &[1.0, 1.0, 1.0]);
        assert!((out[0] - 0.1).abs() < 1e-12 && (out[1] - 0.45).abs() < 1e-12);
        let out = water_fill(&[0.5, 0.5, 0.0], &[0.1, 0.02, 0.0], &[1.0, 1.0, 0.0]);
        assert_eq!(out[2], 0.0);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
