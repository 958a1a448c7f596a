//! `safe`, the default: safe top-two allocation with anytime-valid guards.
//!
//! * **Allocation.** Each live version gets its top-two share: half the probability of being
//!   the best feasible version plus half the probability of being the runner-up, from the
//!   joint draws (top-two Thompson sampling with beta = 1/2, which keeps sampling the
//!   challenger that plain Thompson sampling starves). Then limits: a candidate is capped at
//!   [`NEW_CANDIDATE_CAP`] until it has [`ENOUGH_SAMPLES`] observations and P(meets all
//!   criteria) >= [`ENOUGH_FEASIBLE`], and below that probability the cap shrinks in
//!   proportion (down to the exploration floor); no candidate exceeds `maxCandidateWeight`; the
//!   baseline keeps [`BASELINE_FLOOR`] and every live version [`EXPLORATION_FLOOR`].
//!   `maxCandidateWeightIncrement` does not apply: the evidence-based cap replaces it.
//! * **Removal.** A version shown by an anytime-valid test to break a criterion gets no
//!   more traffic. Its cumulative data then stops changing, so the test keeps rejecting on
//!   every later request: removal is for good, although the service keeps no state.
//! * **Suspension.** A candidate that fails its criteria with posterior probability at least
//!   `winnerProbability` (on at least [`MIN_SAMPLES_TO_SUSPEND`] observations), or whose
//!   latest interval alone shows an absolute limit broken (the regression guard), drops to
//!   the exploration floor and cannot be promoted while it lasts. It is not removed: only an
//!   anytime-valid test ends a candidate, so posterior doubt, which the next intervals may
//!   clear, bounds the risk (its traffic) without ending the experiment (a risk-bounded
//!   ramp).
//! * **Promotion** needs all of: P(best feasible) and P(meets all criteria) at least
//!   `winnerProbability`; every criterion shown met by its confidence sequence; the reward
//!   shown better than the baseline's by the one-sided mSPRT at `alpha`, unless the
//!   baseline is shown to break a criterion (feasibility first: then the feasible candidate
//!   needs no better reward); no breach in the latest interval; no earlier than
//!   the bake time (a quarter of `maxIterations`, or `minIterations` if later); and clean
//!   data (no counter reset, sample-ratio mismatch or stale data).
//!   Because promotion needs the anytime-valid confirmation, assessing every iteration keeps
//!   the chance of promoting a candidate that is not better at or below `alpha`. With `K`
//!   candidates each confirming test runs at `alpha / K` (Bonferroni; see `guards`), so the
//!   bound holds for the experiment, not per candidate; every criterion of the promoted
//!   version must be shown met (an intersection-union test, which needs no split over the
//!   `M` criteria). A mean counts only once its spread is estimated from a sum of squares or
//!   from at least ten batch means over the experiment's whole life, widened by the
//!   Student-t factor for the batches it rests on.
//! * **Rollback** when every candidate is removed or shown worse than a feasible baseline
//!   (both by anytime-valid tests, on at least
//!   [`crate::guards::MIN_OBSERVATIONS_TO_REJECT`] observations). Otherwise the experiment
//!   continues, and ends inconclusive on the baseline at `maxIterations`.

use iter8_api::{Action, Decision, Winner};

use super::{Context, Strategy};
use crate::decision::Verdict;
use crate::guards::{Guards, Status};
use crate::quality;
use crate::sequential::Side;
use crate::split::to_percentages;

/// Safe top-two allocation with anytime-valid guards.
pub struct Safe;

/// The most traffic a candidate gets before it has proved itself.
pub const NEW_CANDIDATE_CAP: f64 = 0.10;
/// Observations a candidate needs (on every criterion's metric) to leave the cap.
pub const ENOUGH_SAMPLES: f64 = 1_000.0;
/// P(meets all criteria) a candidate needs to leave the cap.
pub const ENOUGH_FEASIBLE: f64 = 0.8;
/// Observations a candidate needs before it can be suspended on posterior evidence alone.
pub const MIN_SAMPLES_TO_SUSPEND: f64 = 200.0;
/// The baseline's least share while the experiment runs.
pub const BASELINE_FLOOR: f64 = 0.10;
/// Every live version's least share.
pub const EXPLORATION_FLOOR: f64 = 0.02;
/// The share of the planned iterations (`maxIterations`) a candidate bakes before it can be
/// promoted, unless `minIterations` asks for longer. Some regressions only start after a
/// while (a leak, a cache filling, a nightly job); every judge that waits catches them, and
/// the ones that promote as soon as the numbers allow ship them.
pub const BAKE_FRACTION: f64 = 0.25;

impl Strategy for Safe {
    fn propose(&self, ctx: &Context<'_>) -> Vec<u32> {
        let req = ctx.request;
        let guards = Guards::new(req, ctx.model, req.strategy.alpha);
        let n = req.versions.len();
        let max_candidate = f64::from(req.strategy.max_candidate_weight) / 100.0;
        let mut lower = vec![0.0; n];
        let mut upper = vec![0.0; n];
        let mut shares = ctx.draws.top_share[1].clone();
        for v in 0..n {
            if v == 0 {
                lower[v] = BASELINE_FLOOR;
                upper[v] = 1.0;
            } else if guards.broken(v) {
                shares[v] = 0.0;
            } else if likely_failing(ctx, v) || regressed(ctx, &guards, v) {
                // Doubt bounds the risk, not the experiment: keep measuring at the floor.
                let floor = EXPLORATION_FLOOR.min(max_candidate);
                lower[v] = floor;
                upper[v] = floor;
            } else {
                let feasible = ctx.draws.all_criteria[v];
                let seasoned = samples(ctx, v) >= ENOUGH_SAMPLES;
                lower[v] = EXPLORATION_FLOOR.min(max_candidate);
                upper[v] = if seasoned && feasible >= ENOUGH_FEASIBLE {
                    max_candidate
                } else if seasoned {
                    // Enough data and still in doubt: the doubt is the data's spread, and
                    // only more data settles it, so starving the candidate would not help.
                    NEW_CANDIDATE_CAP.clamp(lower[v], max_candidate)
                } else {
                    // A new candidate in doubt gets less than a promising one.
                    let doubt = (feasible / ENOUGH_FEASIBLE).min(1.0);
                    (NEW_CANDIDATE_CAP * doubt).clamp(lower[v], max_candidate)
                };
            }
        }
        to_percentages(&water_fill(&shares, &lower, &upper))
    }

    fn limited(&self) -> bool {
        false
    }

    fn decide(&self, ctx: &Context<'_>) -> Verdict {
        let req = ctx.request;
        let alpha = req.strategy.alpha;
        let threshold = req.strategy.winner_probability;
        let guards = Guards::new(req, ctx.model, alpha);
        let names: Vec<&str> = req.versions.iter().map(|v| v.name.as_str()).collect();
        let n = names.len();
        let last = req.max_iterations.is_some_and(|m| req.iteration >= m);
        let earliest = earliest_promotion(req);
        let too_early = req.iteration < earliest;
        let data_problem = ctx
            .model
            .promotion_blocked
            .clone()
            .or_else(|| quality::problem(req, &ctx.model.evidence));

        let best = argmax(&ctx.draws.win);
        let p_best = ctx.draws.win[best];
        let winner = (p_best >= threshold).then(|| Winner {
            version: names[best].to_string(),
            probability: p_best,
        });
        let verdict = |action, version: Option<String>, reason: String| Verdict {
            decision: Decision {
                action,
                version,
                reason,
            },
            winner: winner.clone(),
        };

        // Feasibility first: a baseline shown to break a criterion is no yardstick for reward.
        let baseline_broken = n > 1 && guards.broken(0);
        // A version shown to break a criterion, or (candidates) shown worse than a feasible
        // baseline.
        let out: Vec<Option<String>> = (0..n)
            .map(|v| {
                if guards.broken(v) {
                    Some(format!(
                        "{} breaks {} (anytime-valid test at alpha {alpha})",
                        names[v],
                        broken_list(ctx, &guards, v)
                    ))
                } else if guards.reward[v] == Side::Below && !baseline_broken {
                    Some(format!(
                        "{} is worse than the baseline {} (mSPRT at alpha {alpha})",
                        names[v], names[0]
                    ))
                } else {
                    None
                }
            })
            .collect();
        let candidates = usize::from(n > 1)..n;
        if candidates.clone().all(|v| out[v].is_some()) {
            let details: Vec<&str> = candidates.filter_map(|v| out[v].as_deref()).collect();
            let reason = if n == 1 {
                details.join("; ")
            } else {
                format!(
                    "every candidate is out: {}; traffic goes back to the baseline {}",
                    details.join("; "),
                    names[0]
                )
            };
            return verdict(Action::Rollback, None, reason);
        }

        // The candidate to promote: the best feasible version (the only one, in a
        // performance test), and its gates.
        let pick = if n == 1 { 0 } else { best };
        let p_feasible = ctx.draws.all_criteria[pick];
        let mut missing = Vec::new();
        if n > 1 && pick == 0 {
            missing.push(format!(
                "the baseline {} leads (P(best) {p_best:.3}), and no candidate is shown worse \
                 or broken yet",
                names[0]
            ));
        }
        if n > 1 && p_best < threshold {
            missing.push(format!("P(best) {p_best:.3} < {threshold}"));
        }
        if p_feasible < threshold {
            missing.push(format!(
                "P(meets all criteria) {p_feasible:.3} < {threshold}"
            ));
        }
        let open = open_list(ctx, &guards, pick);
        if !open.is_empty() {
            missing.push(format!("not yet shown met: {open}"));
        }
        if likely_failing(ctx, pick) {
            missing.push(format!(
                "it fails its criteria with posterior probability {:.3} (weakest: {})",
                1.0 - ctx.draws.all_criteria[pick],
                ctx.weakest_criterion(pick)
            ));
        }
        let recent = latest_list(ctx, &guards, pick);
        if !recent.is_empty() {
            missing.push(format!(
                "the latest interval alone shows broken: {recent} (regression guard)"
            ));
        }
        if n > 1
            && pick > 0
            && ctx.model.reward.is_some()
            && !baseline_broken
            && guards.reward[pick] != Side::Above
        {
            missing.push(format!(
                "not yet shown better than the baseline (mSPRT at alpha {alpha})"
            ));
        }
        if too_early {
            missing.push(format!(
                "no version is promoted before iteration {earliest} (bake time)"
            ));
        }
        if let Some(why) = &data_problem {
            missing.push(why.clone());
        }
        // Every version still in the race must have data: a winner among versions some of
        // which were never measured is not a winner.
        let unmeasured: Vec<&str> = (0..n)
            .filter(|&v| (v == 0 || out[v].is_none()) && !ctx.model.has_data(v))
            .map(|v| names[v])
            .collect();
        if !unmeasured.is_empty() {
            missing.push(format!("no data yet for {}", unmeasured.join(", ")));
        }
        let removed: Vec<&str> = (1..n).filter_map(|v| out[v].as_deref()).collect();
        let removed = if removed.is_empty() {
            String::new()
        } else {
            format!("; out: {}", removed.join("; "))
        };
        if missing.is_empty() {
            let claim = match ctx.model.reward {
                _ if baseline_broken => format!(
                    "the baseline {} breaks {}; {} meets all criteria with probability \
                     {p_feasible:.3} and every criterion is shown met (feasibility first)",
                    names[0],
                    broken_list(ctx, &guards, 0),
                    names[pick]
                ),
                Some((t, _)) if n > 1 => format!(
                    "{} is the best version meeting all criteria with probability {p_best:.3}; \
                     every criterion is shown met and it is shown to beat the baseline on {}",
                    names[pick], ctx.model.targets[t]
                ),
                _ => format!(
                    "{} meets all criteria with probability {p_feasible:.3}; every criterion is \
                     shown met",
                    names[pick]
                ),
            };
            let reason = format!("{claim} (anytime-valid tests at alpha {alpha}){removed}");
            return verdict(Action::Promote, Some(names[pick].to_string()), reason);
        }
        let why = if n > 1 && pick == 0 {
            format!("{}{removed}", missing.join("; "))
        } else {
            format!("{} leads; {}{removed}", names[pick], missing.join("; "))
        };
        if last {
            verdict(
                Action::Inconclusive,
                None,
                format!("the last iteration ended without a confirmed answer: {why}"),
            )
        } else {
            verdict(Action::Continue, None, why)
        }
    }
}

/// The first iteration at which a version may be promoted: `minIterations`, or the bake
/// time ([`BAKE_FRACTION`] of `maxIterations`, rounded up) when that is later.
fn earliest_promotion(req: &iter8_api::AssessmentRequest) -> u32 {
    let bake = req
        .max_iterations
        .map_or(0, |m| (f64::from(m) * BAKE_FRACTION).ceil() as u32);
    req.min_iterations.max(bake)
}

/// Whether a candidate with data fails its criteria with posterior probability at least
/// `winnerProbability`, on at least [`MIN_SAMPLES_TO_SUSPEND`] observations: it drops to the
/// exploration floor and cannot be promoted while this holds, but it is not removed (only
/// an anytime-valid test removes a version). Even that needs evidence: a mean whose spread had to be assumed
/// (no sum of squares, no history yet) says more about the assumption than about the
/// version, and one heavy-tailed outlier would otherwise end a good candidate's experiment.
fn likely_failing(ctx: &Context<'_>, v: usize) -> bool {
    let fails = |p: f64| p <= 1.0 - ctx.request.strategy.winner_probability;
    let model = ctx.model;
    let criteria = 0..model.criteria.len();
    let suspect = if criteria.clone().all(|c| model.evidence_based(v, c)) {
        fails(ctx.draws.all_criteria[v])
    } else {
        criteria
            .filter(|&c| model.evidence_based(v, c))
            .any(|c| fails(ctx.criterion_probability(v, c)))
    };
    v > 0 && suspect && samples(ctx, v) >= MIN_SAMPLES_TO_SUSPEND && model.has_data_for_criteria(v)
}

/// The fewest observations behind any metric the version's criteria read.
fn samples(ctx: &Context<'_>, v: usize) -> f64 {
    let model = ctx.model;
    let mut targets: Vec<usize> = model.criteria.iter().map(|c| c.check.target()).collect();
    if let Some((t, _)) = model.reward {
        targets.push(t);
    }
    targets
        .iter()
        .map(|&t| {
            model.posteriors[v][t]
                .as_ref()
                .map_or(0.0, |p| p.sample_size())
        })
        .fold(f64::INFINITY, f64::min)
}

fn broken_list(ctx: &Context<'_>, guards: &Guards, v: usize) -> String {
    list(ctx, guards, v, Status::Broken)
}

/// Whether the regression guard holds version `v`: its latest interval shows a limit broken.
fn regressed(ctx: &Context<'_>, guards: &Guards, v: usize) -> bool {
    !latest_list(ctx, guards, v).is_empty()
}

/// The criteria the latest interval alone shows broken for version `v`.
fn latest_list(ctx: &Context<'_>, guards: &Guards, v: usize) -> String {
    ctx.model
        .criteria
        .iter()
        .zip(&guards.latest[v])
        .filter(|(_, breached)| **breached)
        .map(|(c, _)| c.description.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_list(ctx: &Context<'_>, guards: &Guards, v: usize) -> String {
    list(ctx, guards, v, Status::Open)
}

fn list(ctx: &Context<'_>, guards: &Guards, v: usize, status: Status) -> String {
    ctx.model
        .criteria
        .iter()
        .zip(&guards.criteria[v])
        .filter(|(_, s)| **s == status)
        .map(|(c, _)| c.description.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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

/// The index of the largest value; the earliest on ties.
fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
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
