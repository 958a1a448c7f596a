//! iter8 v0's `check_and_increment`: the candidate gains a fixed step
//! (`maxCandidateWeightIncrement`) at the first iteration and then while its observed values
//! meet every criterion, and holds its weight otherwise. The first step needs no check: a
//! candidate without traffic has no data to pass with. A candidate shown to break a
//! criterion (removed) gets no more traffic, and the baseline keeps
//! [`baseline_floor_percent`] until the decision: the guarded rule compares the candidate with
//! it.

use super::{Context, Strategy, baseline_floor_percent};

/// The fixed-step canary ramp.
pub struct CheckAndIncrement;

impl Strategy for CheckAndIncrement {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let current = ctx.current_weights();
        let s = &ctx.request.strategy;
        let candidate = current[1];
        let next = if ctx.removed(1) {
            0
        } else if ctx.request.iteration == 1 || ctx.meets_criteria_on_observed_values(1) {
            (candidate + s.max_candidate_weight_increment)
                .min(s.candidate_weight_limit().max(candidate))
        } else {
            candidate
        };
        let next = next.min(100 - baseline_floor_percent(ctx));
        vec![100 - next, next]
    }
}
