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

/// The least share (percent) the baseline keeps while an experiment runs under a strategy
/// that would otherwise ramp it to nothing (`safe`, `check_and_increment`,
/// `epsilon_t_greedy`): promotion needs the reward shown better than the baseline's, and a
/// baseline without traffic stops adding the evidence that would show it.
pub const BASELINE_FLOOR_PERCENT: u32 = 10;

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
