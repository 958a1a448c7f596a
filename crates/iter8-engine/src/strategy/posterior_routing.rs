//! iter8 v1's top-k posterior routing: `progressive` (k = 1), `top_2` (k = 2) and `uniform`.
//!
//! Each version gets the share of draws in which it is among the k best feasible versions,
//! mixed with an even exploration share. A version shown to break a criterion (removed) gets
//! neither.

use super::{Context, Strategy};
use crate::split::to_percentages;

/// Routing to the k best versions of each draw; `None` routes evenly.
pub struct PosteriorRouting {
    top: Option<usize>,
}

/// iter8's `progressive`.
pub const PROGRESSIVE: PosteriorRouting = PosteriorRouting { top: Some(1) };
/// iter8's `top_2`.
pub const TOP_2: PosteriorRouting = PosteriorRouting { top: Some(2) };
/// iter8's `uniform`.
pub const UNIFORM: PosteriorRouting = PosteriorRouting { top: None };

impl Strategy for PosteriorRouting {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let n = ctx.request.versions.len();
        let live = (0..n).filter(|&v| !ctx.removed(v)).count().max(1) as f64;
        let explore = f64::from(ctx.request.strategy.exploration_weight) / 100.0;
        let exploit: Vec<f64> = match self.top {
            Some(k) => ctx.draws.top_share[k.clamp(1, 2) - 1].clone(),
            None => vec![1.0 / live; n],
        };
        let shares: Vec<f64> = exploit
            .iter()
            .enumerate()
            .map(|(v, f)| {
                if ctx.removed(v) {
                    0.0
                } else {
                    explore / live + (1.0 - explore) * f
                }
            })
            .collect();
        to_percentages(&shares)
    }
}
