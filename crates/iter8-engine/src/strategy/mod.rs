//! Traffic strategies: each proposes the next split from the assessment, and may bring its own
//! rule for deciding; adding a strategy is adding one module here.

mod check_and_increment;
mod epsilon_t_greedy;
mod fixed_split;
mod fixed_thresholds;
mod mann_whitney;
mod posterior_routing;
mod safe;

use iter8_api::Algorithm;

pub use crate::context::Context;
use crate::decision::{self, Verdict};
use crate::guards::Guards;
use crate::sequential::Side;

/// The least share (percent) the baseline keeps while an experiment runs under a strategy
/// that would otherwise ramp it to nothing (`safe`, `check_and_increment`,
/// `epsilon_t_greedy`): promotion needs the reward shown better than the baseline's, and a
/// baseline without traffic stops adding the evidence that would show it.
pub const BASELINE_FLOOR_PERCENT: u32 = 10;

/// The least share (percent) the baseline keeps under the strategies that rank or ramp
/// candidates (`progressive`, `top_2`, `check_and_increment`, `epsilon_t_greedy`):
/// [`BASELINE_FLOOR_PERCENT`], and, while the reward comparison with the baseline is open,
/// `1 / (1 + sqrt(K))` for the `K` candidates still in the race (half the traffic for one).
/// Promotion needs the leader's reward shown better than the baseline's, and the variance
/// of that difference is the sum of both versions' variances: a baseline kept at 10 %
/// while the leader takes 90 % needs almost three times the traffic a balanced split needs
/// to show the same lift, and runs out of iterations. The square-root rule is the
/// allocation that makes many-to-one comparisons with a shared control most precise. The
/// comparison is open while the experiment has a reward, the baseline is not shown to break
/// a criterion (feasibility first needs no reward), and the leader among the candidates in
/// the race (the candidate with the highest P(best feasible), the one the decision rule
/// would promote unless the baseline leads) is not shown better yet.
pub fn baseline_floor_percent(ctx: &Context<'_>) -> u32 {
    let req = ctx.request;
    let n = req.versions.len();
    if n < 2 || ctx.model.reward.is_none() {
        return BASELINE_FLOOR_PERCENT;
    }
    let guards = Guards::new(req, ctx.model, req.strategy.alpha);
    let racing: Vec<usize> = (1..n)
        .filter(|&v| !guards.broken(v) && guards.reward[v] != Side::Below)
        .collect();
    // The candidate the decision rule would promote is the leader among those in the race
    // (picked as the rule picks); another candidate shown better does not settle the
    // leader's comparison.
    let leader = decision::argmax_among(&ctx.draws.win, |v| racing.contains(&v));
    let decided = leader.is_some_and(|v| guards.reward[v] == Side::Above);
    if guards.broken(0) || racing.is_empty() || decided {
        return BASELINE_FLOOR_PERCENT;
    }
    // At most 50, so the cast cannot truncate anything but the fraction.
    let open = (100.0 / (1.0 + (racing.len() as f64).sqrt())).ceil() as u32;
    open.max(BASELINE_FLOOR_PERCENT)
}

/// A way of moving traffic between versions.
pub trait Strategy: Sync {
    /// The split this strategy wants for the next iteration, before the weight limits.
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32>;

    /// Whether `maxCandidateWeight` and `maxCandidateWeightIncrement` apply to the proposal.
    fn limited(&self) -> bool {
        true
    }

    /// The decision for this iteration; by default the guarded, anytime-valid rule
    /// ([`decision::guarded`]), which only the "not worse" judges replace.
    fn decide(&self, ctx: &Context<'_>) -> Verdict {
        decision::guarded(ctx)
    }
}

/// The strategy behind an algorithm name.
pub fn for_algorithm(algorithm: Algorithm) -> &'static dyn Strategy {
    match algorithm {
        Algorithm::Safe => &safe::Safe,
        Algorithm::Progressive => &posterior_routing::PROGRESSIVE,
        Algorithm::Top2 => &posterior_routing::TOP_2,
        Algorithm::Uniform => &posterior_routing::UNIFORM,
        Algorithm::CheckAndIncrement => &check_and_increment::CheckAndIncrement,
        Algorithm::EpsilonTGreedy => &epsilon_t_greedy::EpsilonTGreedy,
        Algorithm::FixedSplit => &fixed_split::FixedSplit,
        Algorithm::FixedThresholds => &fixed_thresholds::FixedThresholds,
        Algorithm::MannWhitney => &mann_whitney::MannWhitney,
    }
}
