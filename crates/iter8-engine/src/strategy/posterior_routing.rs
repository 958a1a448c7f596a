//! iter8 v1's top-k posterior routing: `progressive` (k = 1), `top_2` (k = 2) and `uniform`.
//!
//! Each version gets the share of draws in which it is among the k best feasible versions,
//! mixed with an even exploration share. A version shown to break a criterion (removed) gets
//! neither. Under `progressive` and `top_2` the baseline keeps [`baseline_floor_percent`]
//! (`uniform` already splits evenly).

use super::{Context, Strategy, baseline_floor_percent};
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
        match self.top {
            // Ranking routes the leader most of the traffic; the baseline keeps the share
            // its comparison with the leader needs.
            Some(_) => {
                let floor = f64::from(baseline_floor_percent(ctx)) / 100.0;
                to_percentages(&with_baseline_floor(&shares, floor))
            }
            None => to_percentages(&shares),
        }
    }
}

/// `shares` with the baseline raised to at least `floor` of the total, the others scaled down
/// in proportion.
fn with_baseline_floor(shares: &[f64], floor: f64) -> Vec<f64> {
    let total: f64 = shares.iter().sum();
    let others = total - shares[0];
    if total <= 0.0 || others <= 0.0 || shares[0] >= floor * total {
        return shares.to_vec();
    }
    let scale = (1.0 - floor) * total / others;
    shares
        .iter()
        .enumerate()
        .map(|(v, &s)| if v == 0 { floor * total } else { s * scale })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_floor_scales_the_others_down_in_proportion() {
        let out = with_baseline_floor(&[0.1, 0.6, 0.3], 0.5);
        assert!((out[0] - 0.5).abs() < 1e-12);
        assert!((out[1] - 0.5 * 2.0 / 3.0).abs() < 1e-12);
        assert!((out[2] - 0.5 / 3.0).abs() < 1e-12);
        // Already above the floor: unchanged.
        assert_eq!(with_baseline_floor(&[0.6, 0.4], 0.5), vec![0.6, 0.4]);
    }
}
