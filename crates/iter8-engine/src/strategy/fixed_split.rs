//! A split chosen by the user, held for the whole experiment.

use super::{Context, Strategy};

/// The split given in `strategy.split`, unchanged and not subject to the weight limits.
pub struct FixedSplit;

impl Strategy for FixedSplit {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        ctx.request
            .strategy
            .split
            .clone()
            .unwrap_or_else(|| ctx.current_weights())
    }

    fn limited(&self) -> bool {
        false
    }
}
