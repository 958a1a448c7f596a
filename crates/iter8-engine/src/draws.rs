//! Joint Monte-Carlo draws from all posteriors at once.
//!
//! Each draw samples every metric of every version once, and every question (does a version
//! meet all criteria, is it the best feasible one, does it beat the baseline) is answered on
//! that same draw. So a reward and a criterion on the same metric stay correlated, unlike
//! iter8's independent masks.

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

use crate::model::{Check, Model};

/// What the draws say, as fractions of the draws.
#[derive(Debug, Clone)]
pub struct DrawSummary {
    /// P(version meets all criteria).
    pub all_criteria: Vec<f64>,
    /// P(version meets relative criterion j): `relative[version][j]`, in criteria order
    /// (absolute criteria hold `NaN`: they have closed forms).
    pub per_criterion: Vec<Vec<f64>>,
    /// P(version is the best version meeting all criteria).
    pub win: Vec<f64>,
    /// P(candidate's reward is better than the baseline's); `None` without a reward.
    pub beats_baseline: Vec<Option<f64>>,
    /// Share of top-1 and top-2 places among feasible versions (the baseline takes the place
    /// of a draw in which no version is feasible), normalised to sum to 1.
    pub top_share: [Vec<f64>; 2],
}

/// Draws `draws` joint samples with a seeded, portable generator.
pub fn summarize(model: &Model, draws: u32, seed: u64) -> DrawSummary {
    let versions = model.posteriors.len();
    let targets = model.targets.len();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut values = vec![f64::NAN; versions * targets];
    let mut feasible = vec![false; versions];
    let mut utility = vec![0.0; versions];

    let mut all = vec![0u64; versions];
    let mut per_criterion = vec![vec![0u64; model.criteria.len()]; versions];
    let mut win = vec![0u64; versions];
    let mut beats = vec![0u64; versions];
    let mut top = [vec![0u64; versions], vec![0u64; versions]];

    for _ in 0..draws {
        for (v, row) in model.posteriors.iter().enumerate() {
            for (t, post) in row.iter().enumerate() {
                values[v * targets + t] = post.as_ref().map_or(f64::NAN, |p| p.draw(&mut rng));
            }
        }
        for v in 0..versions {
            let mut ok = true;
            for (c, criterion) in model.criteria.iter().enumerate() {
                let t = criterion.check.target();
                let holds = criterion
                    .check
                    .holds(values[v * targets + t], values[t], v == 0);
                if holds {
                    per_criterion[v][c] += 1;
                }
                ok &= holds;
            }
            feasible[v] = ok;
            if ok {
                all[v] += 1;
            }
            utility[v] = match model.reward {
                Some((t, direction)) => oriented(values[v * targets + t], direction),
                // Without a reward a candidate is preferred to the baseline (a canary), and
                // a later candidate to an earlier one.
                None => v as f64,
            };
            if v > 0
                && let Some((t, direction)) = model.reward
                && oriented(values[v * targets + t], direction) > oriented(values[t], direction)
            {
                beats[v] += 1;
            }
        }
        let (first, second) = best_two(&feasible, &utility);
        match first {
            Some(b) => {
                win[b] += 1;
                top[0][b] += 1;
                top[1][b] += 1;
                if let Some(s) = second {
                    top[1][s] += 1;
                }
            }
            None => {
                top[0][0] += 1;
                top[1][0] += 1;
            }
        }
    }

    let n = f64::from(draws.max(1));
    let frac = |c: &[u64]| c.iter().map(|&x| x as f64 / n).collect::<Vec<_>>();
    let share = |c: &[u64]| {
        let total: u64 = c.iter().sum();
        c.iter()
            .map(|&x| x as f64 / total.max(1) as f64)
            .collect::<Vec<_>>()
    };
    DrawSummary {
        all_criteria: frac(&all),
        per_criterion: per_criterion
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&model.criteria)
                    .map(|(&x, c)| match c.check {
                        Check::Relative { .. } => x as f64 / n,
                        Check::Absolute { .. } => f64::NAN,
                    })
                    .collect()
            })
            .collect(),
        win: frac(&win),
        beats_baseline: (0..versions)
            .map(|v| (v > 0 && model.reward.is_some()).then(|| beats[v] as f64 / n))
            .collect(),
        top_share: [share(&top[0]), share(&top[1])],
    }
}

/// A reward oriented so that larger is better; a missing value ranks last.
fn oriented(value: f64, direction: iter8_api::Direction) -> f64 {
    if value.is_nan() {
        return f64::NEG_INFINITY;
    }
    match direction {
        iter8_api::Direction::Higher => value,
        iter8_api::Direction::Lower => -value,
    }
}

/// The best and second-best feasible versions by utility; ties go to the earlier version.
fn best_two(feasible: &[bool], utility: &[f64]) -> (Option<usize>, Option<usize>) {
    let mut first: Option<usize> = None;
    let mut second: Option<usize> = None;
    for v in (0..feasible.len()).filter(|&v| feasible[v]) {
        match first {
            Some(f) if utility[v] <= utility[f] => match second {
                Some(s) if utility[v] <= utility[s] => {}
                _ => second = Some(v),
            },
            _ => {
                second = first;
                first = Some(v);
            }
        }
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_two_ranks_feasible_versions_only() {
        let feasible = [true, false, true, true];
        let utility = [1.0, 9.0, 3.0, 2.0];
        assert_eq!(best_two(&feasible, &utility), (Some(2), Some(3)));
        assert_eq!(best_two(&[false, false], &[1.0, 2.0]), (None, None));
        assert_eq!(best_two(&[true, true], &[1.0, 1.0]), (Some(0), Some(1)));
    }
}
