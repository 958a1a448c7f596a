//! iter8 v0's decaying epsilon-greedy: with epsilon = 1/t at iteration t, a candidate that
//! meets every criterion on its observed values gets (1 - epsilon/2) of the traffic, one that
//! does not gets epsilon/2, and one shown to break a criterion (removed) gets nothing. The
//! baseline keeps at least [`baseline_floor_percent`] until the decision: the guarded rule
//! compares the candidate with it.

use super::{Context, Strategy, baseline_floor_percent};

/// Decaying epsilon-greedy between a baseline and one candidate.
pub struct EpsilonTGreedy;

impl Strategy for EpsilonTGreedy {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let epsilon = 1.0 / f64::from(ctx.request.iteration.max(1));
        let share = if ctx.removed(1) {
            0.0
        } else if ctx.meets_criteria_on_observed_values(1) {
            1.0 - epsilon / 2.0
        } else {
            epsilon / 2.0
        };
        // `share` is in [0, 1], so the percentage fits.
        let candidate = ((share * 100.0).floor() as u32).min(100 - baseline_floor_percent(ctx));
        vec![100 - candidate, candidate]
    }
}
