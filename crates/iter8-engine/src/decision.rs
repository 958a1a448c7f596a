//! The decision rule every strategy uses unless it brings its own judge: promotion on
//! anytime-valid evidence, rollback on anytime-valid evidence with a minimum of observations.
//!
//! * **Promotion** needs all of: P(best feasible) and P(meets all criteria) at least
//!   `winnerProbability`; every criterion shown met by its confidence sequence; the reward
//!   shown better than the baseline's by the one-sided mSPRT at `alpha`, unless the
//!   baseline is shown to break a criterion (feasibility first: then the feasible candidate
//!   needs no better reward); no breach in the latest interval (the regression guard); no
//!   posterior suspicion ([`likely_failing`]); no earlier than the bake time (a quarter of
//!   `maxIterations`, or `minIterations` if later); data for every version still in the race;
//!   and clean data (no counter reset, sample-ratio mismatch or stale data).
//!   Because promotion needs the anytime-valid confirmation, assessing every iteration keeps
//!   the chance of promoting a candidate that is not better at or below `alpha`, whatever
//!   the strategy's allocation: the tests are valid under any data-dependent sampling. With
//!   `K` candidates each confirming test runs at `alpha / K` (Bonferroni; see `guards`), so
//!   the bound holds for the experiment, not per candidate; every criterion of the promoted
//!   version must be shown met (an intersection-union test, which needs no split over the
//!   `M` criteria). A mean counts only once its spread is estimated from a sum of squares or
//!   from at least ten batch means over the experiment's whole life, widened by the
//!   Student-t factor for the batches it rests on.
//! * **Rollback** when every candidate is removed or shown worse than a feasible baseline
//!   (both by anytime-valid tests, on at least
//!   [`crate::guards::MIN_OBSERVATIONS_TO_REJECT`] observations). Otherwise the experiment
//!   continues, and ends inconclusive on the baseline at `maxIterations`.
//! * **Winner**: the version most likely best feasible among those still in the race,
//!   reported when that probability reaches `winnerProbability` and the baseline and every
//!   version still in the race have data (the same rule promotion uses).
//!   It is a posterior summary, not a decision. A version that is out (removed for good, or
//!   shown worse) is never promoted nor named the winner, whatever its later data says.

use iter8_api::{Action, Decision, Winner};

use crate::context::Context;
use crate::guards::{Guards, Status};
use crate::quality;
use crate::sequential::Side;

/// The decision and the winner behind it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// The version declared best, if any.
    pub winner: Option<Winner>,
}

/// Observations a candidate needs before it can be suspended on posterior evidence alone.
pub const MIN_SAMPLES_TO_SUSPEND: f64 = 200.0;
/// The share of the planned iterations (`maxIterations`) a candidate bakes before it can be
/// promoted, unless `minIterations` asks for longer. Some regressions only start after a
/// while (a leak, a cache filling, a nightly job); every judge that waits catches them, and
/// the ones that promote as soon as the numbers allow ship them.
pub const BAKE_FRACTION: f64 = 0.25;

/// The guarded, anytime-valid rule (see the module documentation).
pub fn guarded(ctx: &Context<'_>) -> Verdict {
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

    // Feasibility first: a baseline shown to break a criterion is no yardstick for reward.
    let baseline_broken = n > 1 && guards.broken(0);
    // A version shown to break a criterion, or (candidates) shown worse than a feasible
    // baseline.
    let out: Vec<Option<String>> = (0..n)
        .map(|v| {
            if guards.broken(v) {
                Some(breaks(ctx, &guards, v))
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

    // The leader among the versions still in the race: a version that is out (removed for
    // good, or shown worse) is neither promoted nor named the winner, whatever its draws say
    // (the draws know nothing of removals, and a removed version's data may change later).
    let best = argmax_among(&ctx.draws.win, |v| out[v].is_none()).unwrap_or(0);
    let p_best = ctx.draws.win[best];
    // A version without data "loses" every draw by default: the others' win probability
    // then says nothing about them, so neither a winner nor a promotion until every version
    // still in the race (and the baseline, the yardstick) has data.
    let unmeasured: Vec<&str> = (0..n)
        .filter(|&v| (v == 0 || out[v].is_none()) && !ctx.model.has_data(v))
        .map(|v| names[v])
        .collect();
    let winner =
        (p_best >= threshold && unmeasured.is_empty() && out[best].is_none()).then(|| Winner {
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
            "the baseline {} leads (P(best) {p_best:.3}), and not every candidate is shown \
             worse or broken yet",
            names[0]
        ));
    }
    // A probability that is not a number meets no threshold.
    let below = |p: f64| p.is_nan() || p < threshold;
    if n > 1 && below(p_best) {
        missing.push(format!("P(best) {p_best:.3} < {threshold}"));
    }
    if below(p_feasible) {
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
                "the baseline {}; {} meets all criteria with probability {p_feasible:.3} and \
                 every criterion is shown met (feasibility first)",
                breaks(ctx, &guards, 0),
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

/// The first iteration at which a version may be promoted: `minIterations`, or the bake
/// time ([`BAKE_FRACTION`] of `maxIterations`, rounded up) when that is later.
fn earliest_promotion(req: &iter8_api::AssessmentRequest) -> u32 {
    let bake = req
        .max_iterations
        .map_or(0, |m| (f64::from(m) * BAKE_FRACTION).ceil() as u32);
    req.min_iterations.max(bake)
}

/// Whether a candidate with data fails its criteria with posterior probability at least
/// `winnerProbability`, on at least [`MIN_SAMPLES_TO_SUSPEND`] observations: `safe` holds it
/// at its exploration floor and the guarded rule does not promote it while this holds, but
/// it is not removed (only an anytime-valid test removes a version). Even that needs
/// evidence: a mean whose spread had to be assumed (no sum of squares, no history yet) says
/// more about the assumption than about the version, and one heavy-tailed outlier would
/// otherwise end a good candidate's experiment.
pub fn likely_failing(ctx: &Context<'_>, v: usize) -> bool {
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
pub fn samples(ctx: &Context<'_>, v: usize) -> f64 {
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

/// Why version `v`, which the guards show broken, is out: the criteria shown broken now, or,
/// when its current data no longer shows any (it was removed for good at an earlier
/// iteration), the removal the evidence remembers.
fn breaks(ctx: &Context<'_>, guards: &Guards, v: usize) -> String {
    let name = &ctx.request.versions[v].name;
    let alpha = ctx.request.strategy.alpha;
    let now = broken_list(ctx, guards, v);
    match ctx
        .model
        .evidence
        .versions
        .get(v)
        .and_then(|e| e.removed.as_deref())
    {
        Some(removal) if now.is_empty() => format!("{name} was {removal}"),
        _ => format!("{name} breaks {now} (anytime-valid test at alpha {alpha})"),
    }
}

/// Whether the regression guard holds version `v`: its latest interval shows a limit broken.
pub fn regressed(ctx: &Context<'_>, guards: &Guards, v: usize) -> bool {
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

/// The index of the largest value among those `keep` admits; the earliest on ties.
pub(crate) fn argmax_among(xs: &[f64], keep: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in xs.iter().enumerate().filter(|(i, _)| keep(*i)) {
        if best.is_none_or(|b| x > xs[b]) {
            best = Some(i);
        }
    }
    best
}
