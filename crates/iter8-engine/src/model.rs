//! The statistical model of one request: the compiled criteria and a posterior for every
//! (version, metric) pair they use, with the warnings the data gave rise to.

use iter8_api::{
    AssessmentRequest, Direction, MeanObservation, Observation, Target, Targeted, Version, Warning,
};

use crate::histogram::QuantilePosterior;
use crate::posterior::{MeanPosterior, Posterior, RatePosterior};

/// Fewer observations than this earn a warning that estimates are wide.
const FEW_SAMPLES: f64 = 30.0;

/// A cumulative count below this fraction of an earlier one is a reset or a wrong query.
/// Smaller dips are normal: Prometheus' `increase()` extrapolates to the edges of its window,
/// so the count of a version whose traffic slowed or stopped shrinks a little as the window
/// grows. A reset that the query does not bridge drops to about nothing.
const RESET_FRACTION: f64 = 0.5;

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
}

/// One criterion, compiled.
#[derive(Debug, Clone)]
pub struct Criterion {
    /// Where it is in the request, e.g. `criteria.objectives[0]`.
    pub field: String,
    /// The criterion in words.
    pub description: String,
    /// What is checked.
    pub check: Check,
}

/// The checks criteria compile to.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// `lower <= value <= upper`.
    Absolute {
        /// Index into `Model::targets`.
        target: usize,
        /// Lower limit, inclusive.
        lower: Option<f64>,
        /// Upper limit, inclusive.
        upper: Option<f64>,
    },
    /// The candidate is at most `max_degradation` worse than the baseline.
    Relative {
        /// Index into `Model::targets`.
        target: usize,
        /// Which direction is better.
        direction: Direction,
        /// Tolerated degradation as a fraction of the baseline.
        max_degradation: f64,
    },
}

impl Check {
    /// Whether `value` meets the check, given the baseline's value of the same target.
    pub fn holds(&self, value: f64, baseline: f64, is_baseline: bool) -> bool {
        match *self {
            Check::Absolute { lower, upper, .. } => {
                !value.is_nan()
                    && lower.is_none_or(|l| value >= l)
                    && upper.is_none_or(|u| value <= u)
            }
            Check::Relative {
                direction,
                max_degradation,
                ..
            } => {
                is_baseline
                    || match direction {
                        Direction::Lower => value <= (1.0 + max_degradation) * baseline,
                        Direction::Higher => value >= (1.0 - max_degradation) * baseline,
                    }
            }
        }
    }

    /// The target index the check reads.
    pub fn target(&self) -> usize {
        match *self {
            Check::Absolute { target, .. } | Check::Relative { target, .. } => target,
        }
    }
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

        let mut model = Self {
            targets,
            posteriors: Vec::new(),
            criteria,
            reward,
            warnings: Vec::new(),
            promotion_blocked: None,
            assumed_spread: Vec::new(),
        };
        for (vi, version) in req.versions.iter().enumerate() {
            model.check_history(vi, version);
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
        let (std_error, dof) = if let Some(ss) = m.sum_of_squares {
            let var = ((ss - n * mean * mean) / (n - 1.0)).max(0.0);
            ((var / n).sqrt(), n - 1.0)
        } else if let Some(batch) = batch_means_error(version, &target.metric, m) {
            batch
        } else {
            self.assumed_spread.push((vi, ti));
            self.warn(
                &field,
                format!(
                    "no sum of squares or history for mean metric {target} of version {:?}; \
                     its spread is assumed equal to its mean",
                    version.name
                ),
            );
            (mean.abs() / n.sqrt(), n - 1.0)
        };
        MeanPosterior::new(mean, std_error, dof, n).map(Posterior::Mean)
    }

    fn check_history(&mut self, vi: usize, version: &Version) {
        for snapshot in &version.history {
            for (name, past) in &snapshot.metrics {
                let Some(now) = version.metrics.get(name) else {
                    continue;
                };
                if size(now) < size(past) * RESET_FRACTION {
                    let reason = format!(
                        "{name} of version {:?} went backwards since iteration {} ({} -> {}); \
                         a counter reset or a wrong query - no version is promoted on this data",
                        version.name,
                        snapshot.iteration,
                        size(past),
                        size(now)
                    );
                    self.warn(&format!("versions[{vi}].metrics.{name}"), reason.clone());
                    self.promotion_blocked.get_or_insert(reason);
                }
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

/// The amount of data an observation holds, which never decreases in a cumulative series.
fn size(o: &Observation) -> f64 {
    match o {
        Observation::Counter(c) => *c,
        Observation::Mean(m) => m.count,
        Observation::Histogram(h) => h.buckets.last().map_or(0.0, |b| b.count),
    }
}

/// Standard error of a mean from its per-iteration batch means (a cluster-robust estimate),
/// with `batches - 1` degrees of freedom; `None` with fewer than two usable batches.
pub fn batch_means_error(
    version: &Version,
    metric: &str,
    now: &MeanObservation,
) -> Option<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = version
        .history
        .iter()
        .filter_map(|s| match s.metrics.get(metric) {
            Some(Observation::Mean(m)) => Some((m.sum, m.count)),
            _ => None,
        })
        .collect();
    points.push((now.sum, now.count));
    let mut batches = Vec::new();
    let (mut prev_sum, mut prev_count) = (0.0, 0.0);
    for (sum, count) in points {
        let dc = count - prev_count;
        if dc < 0.0 {
            return None;
        }
        if dc > 0.0 {
            batches.push((sum - prev_sum, dc));
        }
        (prev_sum, prev_count) = (sum, count);
    }
    let b = batches.len() as f64;
    if b < 2.0 {
        return None;
    }
    let mean = now.sum / now.count;
    let spread: f64 = batches
        .iter()
        .map(|&(s, c)| {
            let d = s - c * mean;
            d * d
        })
        .sum();
    let var = spread * b / (b - 1.0) / (now.count * now.count);
    Some((var.sqrt(), b - 1.0))
}
