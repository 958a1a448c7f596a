//! The iter8 decision engine: pure functions from an [`AssessmentRequest`] to an
//! [`AssessmentResponse`], with no I/O.
//!
//! Each metric of each version gets a conjugate posterior (Beta for rates, Student-t for means,
//! Dirichlet over histogram buckets for quantiles). Criteria probabilities use closed forms
//! where they exist; everything joint (all criteria at once, the winner, beating the baseline,
//! top-k routing) uses joint Monte-Carlo draws from a portable generator seeded by the request,
//! so the same request always gives the same answer.
#![forbid(unsafe_code)]

mod context;
mod criteria;
mod decision;
mod draws;
mod guards;
mod histogram;
mod model;
mod posterior;
mod quality;
mod sequential;
mod series;
mod split;
mod strategy;

use iter8_api::{
    Action, AssessmentRequest, AssessmentResponse, CriterionAssessment, Interval, InvalidRequest,
    MetricEstimate, VersionAssessment, VersionWeight,
};

use crate::context::Context;
use crate::model::Model;

pub use crate::guards::MIN_OBSERVATIONS_TO_REJECT;
pub use crate::posterior::CREDIBLE_MASS;

/// Assesses one iteration: validates the request, estimates every version's metrics,
/// finds the winner, decides, and computes the next traffic split.
pub fn assess(request: &AssessmentRequest) -> Result<AssessmentResponse, InvalidRequest> {
    request.validate()?;
    let seed = request.strategy.seed.unwrap_or_else(|| seed_of(request));
    let mut model = Model::new(request);
    remember_guards(request, &mut model);
    let draws = draws::summarize(&model, request.strategy.draws, seed);
    let ctx = Context {
        request,
        model: &model,
        draws: &draws,
    };
    let strategy = strategy::for_algorithm(request.strategy.algorithm);
    let verdict = strategy.decide(&ctx);
    let weights = next_weights(
        &ctx,
        strategy,
        verdict.decision.action,
        verdict.decision.version.as_deref(),
    );

    let versions = request
        .versions
        .iter()
        .enumerate()
        .map(|(v, version)| VersionAssessment {
            name: version.name.clone(),
            metrics: metric_estimates(&model, v),
            criteria: model
                .criteria
                .iter()
                .enumerate()
                .map(|(c, criterion)| CriterionAssessment {
                    criterion: criterion.field.clone(),
                    description: criterion.description.clone(),
                    probability: ctx.criterion_probability(v, c),
                })
                .collect(),
            probability_all_criteria: draws.all_criteria[v],
            probability_beats_baseline: draws.beats_baseline[v],
            win_probability: draws.win[v],
        })
        .collect();
    Ok(AssessmentResponse {
        iteration: request.iteration,
        algorithm: request.strategy.algorithm,
        seed,
        versions,
        winner: verdict.winner,
        decision: verdict.decision,
        split: request
            .versions
            .iter()
            .zip(weights)
            .map(|(v, weight)| VersionWeight {
                version: v.name.clone(),
                weight,
            })
            .collect(),
        warnings: model.warnings,
        evidence: model.evidence,
    })
}

/// Keeps in the evidence what the anytime-valid guards settled for good: a version shown to
/// break a criterion stays removed (its data stops changing, but its spread estimate or a
/// changed criterion must not bring it back), and the one fixed-horizon look of the reward.
fn remember_guards(request: &AssessmentRequest, model: &mut Model) {
    let guards = guards::Guards::new(request, model, request.strategy.alpha);
    for (v, evidence) in model.evidence.versions.iter_mut().enumerate() {
        if evidence.removed.is_none() && guards.broken(v) {
            evidence.removed = Some(format!(
                "shown to break a criterion at iteration {}",
                request.iteration
            ));
        }
    }
    if guards.final_look.is_some() {
        model.evidence.final_look = guards.final_look;
    }
}

/// The split to apply next: the strategy's (within the weight limits) while the experiment
/// goes on; everything on the promoted version, or on the baseline when it stops otherwise.
fn next_weights(
    ctx: &Context<'_>,
    strategy: &dyn strategy::Strategy,
    action: Action,
    promoted: Option<&str>,
) -> Vec<u32> {
    let names = ctx.request.versions.iter().map(|v| v.name.as_str());
    let all_on = |target: usize| -> Vec<u32> {
        (0..ctx.request.versions.len())
            .map(|i| if i == target { 100 } else { 0 })
            .collect()
    };
    match action {
        Action::Continue => {
            let proposed = strategy.propose(ctx);
            if strategy.limited() {
                let s = &ctx.request.strategy;
                split::apply_limits(
                    &proposed,
                    &ctx.current_weights(),
                    s.candidate_weight_limit(),
                    s.max_candidate_weight_increment,
                )
            } else {
                proposed
            }
        }
        Action::Promote => {
            let target = names.clone().position(|n| Some(n) == promoted).unwrap_or(0);
            all_on(target)
        }
        Action::Rollback | Action::Inconclusive => all_on(0),
    }
}

fn metric_estimates(model: &Model, v: usize) -> Vec<MetricEstimate> {
    model
        .targets
        .iter()
        .zip(&model.posteriors[v])
        .map(|(target, posterior)| {
            let (value, credible_interval, sample_size) = match posterior {
                Some(p) => {
                    let (lower, upper) = p.credible_interval();
                    let cap = match p {
                        posterior::Posterior::Quantile(q) => q.last_bound(),
                        _ => p.value(),
                    };
                    let finite = |x: f64| finite_or(x, cap);
                    (
                        Some(p.value()),
                        Some(Interval {
                            lower: finite(lower),
                            upper: finite(upper),
                        }),
                        p.sample_size(),
                    )
                }
                None => (None, None, 0.0),
            };
            MetricEstimate {
                metric: target.metric.clone(),
                quantile: target.quantile,
                value,
                credible_interval,
                sample_size,
            }
        })
        .collect()
}

/// JSON has no infinity: an interval end beyond the last histogram bound is reported as the
/// largest finite value known (the model warns about it).
fn finite_or(x: f64, fallback: f64) -> f64 {
    if x.is_finite() { x } else { fallback }
}

/// A seed derived from the request's canonical JSON (FNV-1a), stable across runs, machines
/// and Rust versions.
fn seed_of(request: &AssessmentRequest) -> u64 {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
