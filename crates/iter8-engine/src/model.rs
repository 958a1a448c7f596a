//! The statistical model of one request: the compiled criteria and a posterior for every
//! (version, metric) pair they use, with the warnings the data gave rise to.

use iter8_api::{
    AssessmentRequest, Direction, Evidence, MeanObservation, Observation, Target, Targeted,
    Version, Warning,
};

use crate::criteria::{Check, Criterion};
use crate::histogram::QuantilePosterior;
use crate::posterior::{MeanPosterior, Posterior, RatePosterior};
use crate::series::{self, RESET_HOLD, Reset, batch_means_error};

/// Fewer observations than this earn a warning that estimates are wide.
const FEW_SAMPLES: f64 = 30.0;

/// Batch means needed before a mean without a sum of squares is tested, or compared.
pub const MIN_BATCHES: f64 = 10.0;

/// Everything the engine derives from a request before drawing.
#[derive(Debug)]
pub struct Model {
    /// The distinct metric targets the criteria use, in order of first use.
    pub targets: Vec<Target>,
    /// `posteriors[version][target]`; `None` where there is no data.
    pub posteriors: Vec<Vec<Option<Posterior>>>,
    /// The criteria, compiled against `targets`.
    pub criteria: Vec<Criterion>,
    /// The reward that ranks versions: its target index and direction.
    pub reward: Option<(usize, Direction)>,
    /// Warnings for the response.
    pub warnings: Vec<Warning>,
    /// Set when the data is not trustworthy enough to promote anything (for example a
    /// counter went backwards); the text says why.
    pub promotion_blocked: Option<String>,
    /// The (version, target) pairs whose mean has an assumed spread, not an estimated one:
    /// their posteriors are guesses about the tails, not evidence.
    pub assumed_spread: Vec<(usize, usize)>,
    /// The evidence after this iteration: the request's, with this iteration folded in.
    pub evidence: Evidence,
}

impl Model {
    /// Builds the model of a validated request.
    pub fn new(req: &AssessmentRequest) -> Self {
        let mut targets: Vec<Target> = Vec::new();
        let mut index_of = |t: Target| match targets.iter().position(|x| *x == t) {
            Some(i) => i,
            None => {
                targets.push(t);
                targets.len() - 1
            }
        };
        let mut criteria = Vec::new();
        for (i, o) in req.criteria.objectives.iter().enumerate() {
            let target = o.target();
            let description = match (o.lower_limit, o.upper_limit) {
                (Some(l), Some(u)) => format!("{l} <= {target} <= {u}"),
                (Some(l), None) => format!("{target} >= {l}"),
                (None, Some(u)) => format!("{target} <= {u}"),
                (None, None) => target.to_string(),
            };
            criteria.push(Criterion {
                field: format!("criteria.objectives[{i}]"),
                description,
                check: Check::Absolute {
                    target: index_of(target),
                    lower: o.lower_limit,
                    upper: o.upper_limit,
                },
            });
        }
        for (i, r) in req.criteria.relative_objectives.iter().enumerate() {
            let target = r.target();
            let pct = r.max_degradation * 100.0;
            let description = match r.preferred_direction {
                Direction::Lower => format!("{target} at most {pct}% above the baseline"),
                Direction::Higher => format!("{target} at most {pct}% below the baseline"),
            };
            criteria.push(Criterion {
                field: format!("criteria.relativeObjectives[{i}]"),
                description,
                check: Check::Relative {
                    target: index_of(target),
                    direction: r.preferred_direction,
                    max_degradation: r.max_degradation,
                },
            });
        }
        let reward = req
            .criteria
            .rewards
            .first()
            .map(|r| (index_of(r.target()), r.preferred_direction));
        for r in req.criteria.rewards.iter().skip(1) {
            index_of(r.target());
        }
        for r in &req.ratios {
            index_of(Target {
                metric: r.name.clone(),
                quantile: None,
            });
        }

        let (evidence, resets) = series::fold(req, &targets, &criteria);
        let mut model = Self {
            targets,
            posteriors: Vec::new(),
            criteria,
            reward,
            warnings: Vec::new(),
            promotion_blocked: None,
            assumed_spread: Vec::new(),
            evidence,
        };
        model.note_resets(req, &resets);
        for vi in 0..req.versions.len() {
            let row = (0..model.targets.len())
                .map(|ti| model.posterior(req, vi, ti))
                .collect();
            model.posteriors.push(row);
        }
        model
    }

    /// Whether a version has data for every metric its criteria read (the baseline's too, for
    /// relative criteria). A version without data is unknown, not failing.
    pub fn has_data_for_criteria(&self, version: usize) -> bool {
        self.criteria.iter().all(|c| {
            let t = c.check.target();
            self.posteriors[version][t].is_some()
                && (matches!(c.check, Check::Absolute { .. }) || self.posteriors[0][t].is_some())
        })
    }

    /// Whether the spread of a target's estimate is known well enough to test or compare it:
    /// always for rates and quantiles; for a mean, from a sum of squares or from at least
    /// [`MIN_BATCHES`] batch means, never from an assumed one.
    pub fn spread_estimated(&self, version: usize, target: usize) -> bool {
        match &self.posteriors[version][target] {
            Some(Posterior::Mean(m)) => {
                !self.assumed_spread.contains(&(version, target)) && m.dof() + 1.0 >= MIN_BATCHES
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Whether a version has data for everything that judges it: every criterion's metric
    /// (the baseline's too, for relative criteria) and the reward. Nothing is decided about
    /// a version without it.
    pub fn has_data(&self, version: usize) -> bool {
        self.has_data_for_criteria(version)
            && self
                .reward
                .is_none_or(|(t, _)| self.posteriors[version][t].is_some())
    }

    /// Whether a criterion's verdict for a version rests on estimated spreads only (the
    /// baseline's too, for relative criteria).
    pub fn evidence_based(&self, version: usize, criterion: usize) -> bool {
        let check = self.criteria[criterion].check;
        let t = check.target();
        let assumed = |v: usize| self.assumed_spread.contains(&(v, t));
        !assumed(version) && (matches!(check, Check::Absolute { .. }) || !assumed(0))
    }

    fn posterior(&mut self, req: &AssessmentRequest, vi: usize, ti: usize) -> Option<Posterior> {
        let version = &req.versions[vi];
        let target = self.targets[ti].clone();
        let field = format!("versions[{vi}].metrics.{}", target.metric);
        let posterior = if let Some(ratio) = req.ratios.iter().find(|r| r.name == target.metric) {
            let count = |name: &str| match version.metrics.get(name) {
                Some(Observation::Counter(c)) => Some(*c),
                _ => None,
            };
            match (count(&ratio.numerator), count(&ratio.denominator)) {
                (Some(events), Some(trials)) if events > trials => {
                    self.warn(
                        &format!("versions[{vi}].metrics.{}", ratio.numerator),
                        format!(
                            "{} of version {:?} ({events}) exceeds {} ({trials}), so the rate \
                             {} is not known for it (counters extrapolated separately, or a \
                             wrong query); it counts as no data",
                            ratio.numerator, version.name, ratio.denominator, ratio.name
                        ),
                    );
                    None
                }
                (Some(events), Some(trials)) => {
                    RatePosterior::new(events, trials).map(Posterior::Rate)
                }
                _ => None,
            }
        } else {
            match (version.metrics.get(&target.metric), target.quantile) {
                (Some(Observation::Mean(m)), _) => {
                    self.mean_posterior((vi, ti), version, &target, m)
                }
                (Some(Observation::Histogram(h)), Some(_))
                    if !h.buckets.last().is_some_and(|b| b.le.value().is_infinite()) =>
                {
                    self.warn(
                        &field,
                        format!(
                            "the histogram {} of version {:?} has no \"+Inf\" bucket, so its \
                             total and the values above its last bound are unknown; it counts \
                             as no data",
                            target.metric, version.name
                        ),
                    );
                    None
                }
                (Some(Observation::Histogram(h)), Some(q)) => {
                    let post = QuantilePosterior::new(h, q.fraction());
                    if let Some(p) = post.as_ref().filter(|p| p.beyond_last_bound()) {
                        self.warn(
                            &field,
                            format!(
                                "{target} lies beyond the last finite bucket bound ({}); it is \
                                 reported as that bound, and limits above it cannot be confirmed",
                                p.last_bound()
                            ),
                        );
                    }
                    post.map(Posterior::Quantile)
                }
                _ => None,
            }
        };
        match &posterior {
            None => self.warn(
                &field,
                format!(
                    "no data for {target} of version {:?}; criteria on it count as not met",
                    version.name
                ),
            ),
            Some(p) if p.sample_size() < FEW_SAMPLES => self.warn(
                &field,
                format!(
                    "only {} observations of {target} for version {:?}; estimates are wide",
                    p.sample_size(),
                    version.name
                ),
            ),
            Some(_) => {}
        }
        posterior
    }

    /// A mean's spread comes, in order of preference, from the sum of squares, from the
    /// per-iteration batch means in the history, or, failing both, from an assumed
    /// coefficient of variation of 1 (typical of latency), with a warning.
    fn mean_posterior(
        &mut self,
        (vi, ti): (usize, usize),
        version: &Version,
        target: &Target,
        m: &MeanObservation,
    ) -> Option<Posterior> {
        let n = m.count;
        if n < 2.0 {
            return None;
        }
        let mean = m.sum / n;
        let field = format!("versions[{vi}].metrics.{}", target.metric);
        let batches = self.evidence.versions[vi].batches.get(&target.metric);
        let (std_error, dof) = if let Some(ss) = m.sum_of_squares {
            let var = ((ss - n * mean * mean) / (n - 1.0)).max(0.0);
            ((var / n).sqrt(), n - 1.0)
        } else if let Some(batch) = batches
            .and_then(batch_means_error)
            // Too few or too unequal batches (any two of different sizes, a low-traffic
            // start) hold fewer than two effective batches: too little to estimate a spread
            // from, and a Student-t needs a degree of freedom. The version still has data;
            // its spread is then assumed, as with no history.
            .filter(|&(_, dof)| dof >= 1.0)
        {
            batch
        } else {
            self.assumed_spread.push((vi, ti));
            let why = if batches.is_some_and(|b| b.batches >= 2) {
                "no sum of squares, and too few or too unequal intervals to estimate a spread \
                 from (fewer than two effective batches)"
            } else {
                "no sum of squares or history"
            };
            self.warn(
                &field,
                format!(
                    "{why} for mean metric {target} of version {:?}; its spread is assumed \
                     equal to its mean",
                    version.name
                ),
            );
            (mean.abs() / n.sqrt(), n - 1.0)
        };
        MeanPosterior::new(mean, std_error, dof, n).map(Posterior::Mean)
    }

    /// Counter resets: this iteration's get a warning each; any within [`RESET_HOLD`]
    /// iterations blocks promotion.
    fn note_resets(&mut self, req: &AssessmentRequest, resets: &[Reset]) {
        for r in resets {
            let reason = format!(
                "{} of version {:?} went backwards since iteration {} ({} -> {}); a counter \
                 reset or a wrong query - no version is promoted on this data",
                r.metric, req.versions[r.version].name, r.since, r.sizes.0, r.sizes.1
            );
            self.warn(
                &format!("versions[{}].metrics.{}", r.version, r.metric),
                reason.clone(),
            );
            self.promotion_blocked.get_or_insert(reason);
        }
        for (v, ev) in self.evidence.versions.iter().enumerate() {
            if let Some(at) = ev.reset_at
                && req.iteration < at + RESET_HOLD
            {
                self.promotion_blocked.get_or_insert(format!(
                    "a metric of version {:?} went backwards at iteration {at}; nothing is \
                     promoted before iteration {}",
                    req.versions[v].name,
                    at + RESET_HOLD
                ));
            }
        }
    }

    fn warn(&mut self, field: &str, message: String) {
        self.warnings.push(Warning {
            field: Some(field.to_string()),
            message,
        });
    }
}
