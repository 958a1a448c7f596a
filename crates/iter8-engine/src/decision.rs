//! The Bayesian decision rule of iter8's strategies: promote the version that is best with
//! probability at least `winnerProbability`, roll back when every candidate is shown to fail
//! its criteria (at any iteration), otherwise continue until the last iteration.

use iter8_api::{Action, Decision, Winner};

use crate::context::Context;

/// The decision and the winner behind it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// The version declared best, if any.
    pub winner: Option<Winner>,
}

/// The shared Bayesian rule.
pub fn bayesian(ctx: &Context<'_>) -> Verdict {
    let req = ctx.request;
    let threshold = req.strategy.winner_probability;
    let names: Vec<&str> = req.versions.iter().map(|v| v.name.as_str()).collect();
    let too_early = req.iteration < req.min_iterations;
    let last = req.max_iterations.is_some_and(|m| req.iteration >= m);

    let best = argmax(&ctx.draws.win);
    let p_best = ctx.draws.win[best];
    let winner = (p_best >= threshold).then(|| Winner {
        version: names[best].to_string(),
        probability: p_best,
    });

    // Failing means shown to fail on data; a version without data is merely unknown.
    let failing: Vec<usize> = (usize::from(names.len() > 1)..names.len())
        .filter(|&v| {
            ctx.draws.all_criteria[v] <= 1.0 - threshold && ctx.model.has_data_for_criteria(v)
        })
        .collect();
    let all_failing = failing.len() == names.len() - usize::from(names.len() > 1);
    // Nothing is decided about a version without data: not that it lost, not that it won.
    // Its draws fail every criterion, so the others would "win" by default.
    let without_data: Vec<&str> = (0..names.len())
        .filter(|&v| !ctx.model.has_data(v))
        .map(|v| names[v])
        .collect();

    let (action, version, reason) = if all_failing {
        let details: Vec<String> = failing.iter().map(|&v| ctx.weakest_criterion(v)).collect();
        let reason = if names.len() == 1 {
            format!("{} fails its criteria: {}", names[0], details.join("; "))
        } else {
            format!(
                "every candidate fails its criteria: {}; traffic goes back to the baseline {}",
                details.join("; "),
                names[0]
            )
        };
        (Action::Rollback, None, reason)
    } else if let (Some(_), false, false) = (&winner, too_early, without_data.is_empty()) {
        hold(
            last,
            format!(
                "{} leads, but {} has no data yet for its criteria or reward; nothing is \
                 decided before every version has data",
                names[best],
                without_data.join(", ")
            ),
        )
    } else if let (Some(w), false) = (&winner, too_early) {
        if names.len() > 1 && best == 0 {
            (
                Action::Rollback,
                None,
                format!(
                    "the baseline {} is the best version meeting all criteria with probability \
                     {:.3}",
                    names[0], w.probability
                ),
            )
        } else if let Some(why) = &ctx.model.promotion_blocked {
            hold(last, format!("{} leads, but {why}", names[best]))
        } else {
            (
                Action::Promote,
                Some(names[best].to_string()),
                promotion_reason(ctx, best, w.probability),
            )
        }
    } else if winner.is_some() {
        hold(
            last,
            format!(
                "{} leads with probability {p_best:.3}, but no version is promoted before \
                 iteration {}",
                names[best], req.min_iterations
            ),
        )
    } else {
        let leader = if names.len() == 1 {
            format!(
                "{} meets all criteria with probability {p_best:.3}",
                names[best]
            )
        } else {
            format!(
                "the leader {} is best with probability {p_best:.3}",
                names[best]
            )
        };
        hold(last, format!("{leader}; {threshold} is needed"))
    };
    Verdict {
        decision: Decision {
            action,
            version,
            reason,
        },
        winner,
    }
}

/// Keep going, or stop without an answer at the last iteration.
fn hold(last: bool, why: String) -> (Action, Option<String>, String) {
    if last {
        (
            Action::Inconclusive,
            None,
            format!("the last iteration ended without a confident answer: {why}"),
        )
    } else {
        (Action::Continue, None, why)
    }
}

fn promotion_reason(ctx: &Context<'_>, v: usize, p: f64) -> String {
    let name = &ctx.request.versions[v].name;
    if ctx.request.versions.len() == 1 {
        return format!("{name} meets all criteria with probability {p:.3}");
    }
    match (ctx.model.reward, ctx.draws.beats_baseline[v]) {
        (Some((t, _)), Some(beats)) => format!(
            "{name} is the best version meeting all criteria with probability {p:.3}; it beats \
             the baseline on {} with probability {beats:.3}",
            ctx.model.targets[t]
        ),
        _ => format!("{name} meets all criteria with probability {p:.3}"),
    }
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
