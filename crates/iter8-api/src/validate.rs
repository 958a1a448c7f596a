//! Checks of a request that JSON decoding cannot express; each failure names the field.

use std::collections::{BTreeMap, BTreeSet};

use crate::evidence::{Evidence, VersionEvidence};
use crate::request::{
    AssessmentRequest, HistogramObservation, MeanObservation, Observation, Targeted,
};
use crate::requirements::Shape;

pub use crate::error::{ErrorResponse, InvalidRequest};
pub use crate::limits::*;

type Check = Result<(), InvalidRequest>;

impl AssessmentRequest {
    /// Checks everything JSON decoding cannot: counts, limits, cross-references and shapes.
    pub fn validate(&self) -> Check {
        self.check_iterations()?;
        self.check_versions()?;
        self.check_evidence()?;
        self.check_ratios()?;
        self.check_criteria()?;
        self.check_strategy()
    }

    /// For a client that reports every metric it knows (even at zero, as local mode does): a
    /// criterion on a metric no version reports and no ratio defines is a typo. The service
    /// cannot tell that from data that has not arrived yet, so `validate` accepts it.
    pub fn check_metrics_known(&self) -> Check {
        let c = &self.criteria;
        let targets = c
            .objectives
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("criteria.objectives[{i}]"), o.target()))
            .chain(
                c.relative_objectives
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (format!("criteria.relativeObjectives[{i}]"), o.target())),
            )
            .chain(
                c.rewards
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (format!("criteria.rewards[{i}]"), o.target())),
            );
        for (at, target) in targets {
            if self.metric_kind(&target.metric).is_none() {
                return Err(InvalidRequest::new(
                    format!("{at}.metric"),
                    format!(
                        "no version has data for metric {:?}, and no ratio defines it",
                        target.metric
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The candidate versions (all but the baseline).
    pub fn candidates(&self) -> &[crate::request::Version] {
        self.versions.get(1..).unwrap_or(&[])
    }

    /// What kind of data a metric name refers to, looking across all versions.
    pub fn metric_kind(&self, metric: &str) -> Option<MetricKind> {
        if self.ratios.iter().any(|r| r.name == metric) {
            return Some(MetricKind::Ratio);
        }
        self.versions
            .iter()
            .find_map(|v| v.metrics.get(metric))
            .map(MetricKind::of)
    }

    fn check_iterations(&self) -> Check {
        if self.iteration == 0 {
            return Err(InvalidRequest::new(
                "iteration",
                "iterations are counted from 1",
            ));
        }
        if self.min_iterations == 0 {
            return Err(InvalidRequest::new("minIterations", "must be at least 1"));
        }
        if let Some(max) = self.max_iterations
            && max < self.min_iterations
        {
            return Err(InvalidRequest::new(
                "maxIterations",
                format!("must be at least minIterations ({})", self.min_iterations),
            ));
        }
        Ok(())
    }

    fn check_versions(&self) -> Check {
        let n = self.versions.len();
        if n == 0 {
            return Err(InvalidRequest::new(
                "versions",
                "at least one version is required",
            ));
        }
        if n > MAX_VERSIONS {
            return Err(InvalidRequest::new(
                "versions",
                format!("{n} versions given; at most {MAX_VERSIONS} are supported"),
            ));
        }
        self.check_requirements()?;
        let mut names = BTreeSet::new();
        for (i, v) in self.versions.iter().enumerate() {
            let at = format!("versions[{i}]");
            check_name(&format!("{at}.name"), &v.name)?;
            if !names.insert(v.name.as_str()) {
                return Err(InvalidRequest::new(
                    format!("{at}.name"),
                    format!("version name {:?} is used twice", v.name),
                ));
            }
            if v.weight > 100 {
                return Err(InvalidRequest::new(
                    format!("{at}.weight"),
                    format!("must be between 0 and 100, got {}", v.weight),
                ));
            }
            check_metrics(&format!("{at}.metrics"), &v.metrics)?;
            check_history(&at, self.iteration, v)?;
        }
        let mut kinds: BTreeMap<&str, MetricKind> = BTreeMap::new();
        for (i, v) in self.versions.iter().enumerate() {
            for (name, o) in &v.metrics {
                let kind = MetricKind::of(o);
                let first = *kinds.entry(name.as_str()).or_insert(kind);
                if first != kind {
                    return Err(InvalidRequest::new(
                        format!("versions[{i}].metrics.{name}"),
                        format!(
                            "{name:?} is a {} here and a {} for an earlier version; a metric \
                             has one kind for every version",
                            kind.name(),
                            first.name()
                        ),
                    ));
                }
            }
        }
        let total: u32 = self.versions.iter().map(|v| v.weight).sum();
        if total != 100 {
            return Err(InvalidRequest::new(
                "versions[].weight",
                format!("weights must sum to 100, got {total}"),
            ));
        }
        Ok(())
    }

    /// What the kind and the algorithm need (versions, split, rewards, objectives), as
    /// declared in [`crate::requirements`].
    fn check_requirements(&self) -> Check {
        let c = &self.criteria;
        let shape = Shape {
            versions: self.versions.len(),
            split: self.strategy.split.is_some(),
            rewards: !c.rewards.is_empty(),
            objectives: !c.objectives.is_empty() || !c.relative_objectives.is_empty(),
            min_iterations: self.min_iterations,
            max_iterations: self.max_iterations,
        };
        self.kind
            .requirements()
            .check(self.kind.subject(), "versions", &shape)?;
        let algorithm = self.strategy.algorithm;
        algorithm
            .requirements()
            .check(algorithm.name(), "strategy.algorithm", &shape)
    }

    /// The evidence must come from an earlier iteration of this experiment: the same version
    /// names in the same order, metrics of the same kinds, and bounded in size.
    fn check_evidence(&self) -> Check {
        let Some(e) = &self.evidence else {
            return Ok(());
        };
        if e.iteration == 0 || e.iteration >= self.iteration {
            return Err(InvalidRequest::new(
                "evidence.iteration",
                format!(
                    "the evidence covers iteration {}; it must come from an earlier iteration \
                     than this one ({}) and from at least iteration 1",
                    e.iteration, self.iteration
                ),
            ));
        }
        if e.versions.len() != self.versions.len() {
            return Err(InvalidRequest::new(
                "evidence.versions",
                format!(
                    "the evidence is about {} versions; this request has {}",
                    e.versions.len(),
                    self.versions.len()
                ),
            ));
        }
        if e.targets.len() > MAX_METRICS + MAX_CRITERIA {
            return Err(InvalidRequest::new(
                "evidence.targets",
                format!(
                    "{} targets; at most {}",
                    e.targets.len(),
                    MAX_METRICS + MAX_CRITERIA
                ),
            ));
        }
        for (i, (ev, v)) in e.versions.iter().zip(&self.versions).enumerate() {
            let at = format!("evidence.versions[{i}]");
            if ev.name != v.name {
                return Err(InvalidRequest::new(
                    format!("{at}.name"),
                    format!(
                        "the evidence is about version {:?} here, the request about {:?}; \
                         versions keep their names and order for the whole experiment",
                        ev.name, v.name
                    ),
                ));
            }
            if !v.history.is_empty() {
                return Err(InvalidRequest::new(
                    format!("versions[{i}].history"),
                    "send either evidence or history, not both: the evidence already holds \
                     what the history would say",
                ));
            }
            check_metrics(&format!("{at}.last"), &ev.last)?;
            for (name, past) in &ev.last {
                if let Some(now) = v.metrics.get(name)
                    && MetricKind::of(now) != MetricKind::of(past)
                {
                    return Err(InvalidRequest::new(
                        format!("versions[{i}].metrics.{name}"),
                        format!(
                            "{name:?} was a {} in earlier iterations and is a {} now; a \
                             metric keeps its kind for the whole experiment",
                            MetricKind::of(past).name(),
                            MetricKind::of(now).name()
                        ),
                    ));
                }
            }
            if ev.batches.len() > MAX_METRICS {
                return Err(InvalidRequest::new(
                    format!("{at}.batches"),
                    format!("{} entries; at most {MAX_METRICS}", ev.batches.len()),
                ));
            }
            for (name, b) in &ev.batches {
                let fields = [b.reference, b.sum, b.count, b.sum_sq, b.cross, b.count_sq];
                if fields.iter().any(|x| !x.is_finite())
                    || b.count < 0.0
                    || b.sum_sq < 0.0
                    || b.count_sq < 0.0
                {
                    return Err(InvalidRequest::new(
                        format!("{at}.batches.{name}"),
                        "must hold finite numbers, with non-negative count, sumSq and countSq",
                    ));
                }
                one_per_iteration(
                    &format!("{at}.batches.{name}.batches"),
                    b.batches,
                    e.iteration,
                )?;
            }
            one_per_iteration(&format!("{at}.failedChecks"), ev.failed_checks, e.iteration)?;
            evidence_iteration(&format!("{at}.resetAt"), ev.reset_at, e.iteration)?;
            check_recent(&at, e, ev)?;
        }
        evidence_iteration("evidence.finalLook", e.final_look, e.iteration)
    }

    fn check_ratios(&self) -> Check {
        let mut names = BTreeSet::new();
        for (i, r) in self.ratios.iter().enumerate() {
            let at = format!("ratios[{i}]");
            check_name(&format!("{at}.name"), &r.name)?;
            if !names.insert(r.name.as_str()) {
                return Err(InvalidRequest::new(
                    format!("{at}.name"),
                    format!("ratio name {:?} is used twice", r.name),
                ));
            }
            for (j, v) in self.versions.iter().enumerate() {
                if v.metrics.contains_key(&r.name) {
                    return Err(InvalidRequest::new(
                        format!("{at}.name"),
                        format!("{:?} is also an observed metric of versions[{j}]", r.name),
                    ));
                }
                // A numerator above its denominator (two counters extrapolated separately)
                // is a data problem of that version, not of the request: the engine treats
                // the ratio as missing for it and says so.
                counter(v, &r.numerator, &format!("{at}.numerator"), j)?;
                counter(v, &r.denominator, &format!("{at}.denominator"), j)?;
            }
        }
        Ok(())
    }

    fn check_criteria(&self) -> Check {
        let c = &self.criteria;
        let total = c.objectives.len() + c.relative_objectives.len() + c.rewards.len();
        if total > MAX_CRITERIA {
            return Err(InvalidRequest::new(
                "criteria",
                format!("{total} criteria given; at most {MAX_CRITERIA} are supported"),
            ));
        }
        for (i, o) in c.objectives.iter().enumerate() {
            let at = format!("criteria.objectives[{i}]");
            self.check_target(&at, o)?;
            if o.upper_limit.is_none() && o.lower_limit.is_none() {
                return Err(InvalidRequest::new(
                    at,
                    "an objective needs an upperLimit, a lowerLimit or both",
                ));
            }
            for (name, limit) in [("upperLimit", o.upper_limit), ("lowerLimit", o.lower_limit)] {
                if let Some(l) = limit
                    && !l.is_finite()
                {
                    return Err(InvalidRequest::new(
                        format!("{at}.{name}"),
                        "must be a finite number",
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (o.lower_limit, o.upper_limit)
                && lo > hi
            {
                return Err(InvalidRequest::new(
                    format!("{at}.lowerLimit"),
                    format!("lowerLimit ({lo}) is above upperLimit ({hi})"),
                ));
            }
        }
        for (i, r) in c.relative_objectives.iter().enumerate() {
            let at = format!("criteria.relativeObjectives[{i}]");
            self.check_target(&at, r)?;
            if !(r.max_degradation.is_finite() && r.max_degradation >= 0.0) {
                return Err(InvalidRequest::new(
                    format!("{at}.maxDegradation"),
                    "must be a non-negative fraction (0.1 means 10 % worse than the baseline)",
                ));
            }
        }
        for (i, r) in c.rewards.iter().enumerate() {
            self.check_target(&format!("criteria.rewards[{i}]"), r)?;
        }
        Ok(())
    }

    fn check_target(&self, at: &str, criterion: &impl Targeted) -> Check {
        let target = criterion.target();
        // No version has data for the metric yet (an experiment created before its load
        // starts): a state of the data, not a fault of the request. The engine reports it.
        let Some(kind) = self.metric_kind(&target.metric) else {
            return Ok(());
        };
        match (kind, target.quantile) {
            (MetricKind::Histogram, None) => Err(InvalidRequest::new(
                format!("{at}.quantile"),
                format!(
                    "metric {:?} is a histogram; name the quantile (0.95 for p95)",
                    target.metric
                ),
            )),
            (MetricKind::Counter, _) => Err(InvalidRequest::new(
                format!("{at}.metric"),
                format!(
                    "metric {:?} is a counter, which grows with traffic; define a ratio \
                     (for example errors per request) and use that",
                    target.metric
                ),
            )),
            (MetricKind::Ratio | MetricKind::Mean, Some(_)) => Err(InvalidRequest::new(
                format!("{at}.quantile"),
                format!(
                    "quantiles need a histogram metric; {:?} is not one",
                    target.metric
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_strategy(&self) -> Check {
        let s = &self.strategy;
        if let Some(weight) = s.max_candidate_weight.filter(|&w| w > 100) {
            return Err(InvalidRequest::new(
                "strategy.maxCandidateWeight",
                format!("must be between 0 and 100, got {weight}"),
            ));
        }
        if !(1..=100).contains(&s.max_candidate_weight_increment) {
            return Err(InvalidRequest::new(
                "strategy.maxCandidateWeightIncrement",
                format!(
                    "must be between 1 and 100, got {}",
                    s.max_candidate_weight_increment
                ),
            ));
        }
        if s.exploration_weight > 50 {
            return Err(InvalidRequest::new(
                "strategy.explorationWeight",
                format!("must be between 0 and 50, got {}", s.exploration_weight),
            ));
        }
        if !(s.winner_probability > 0.5 && s.winner_probability < 1.0) {
            return Err(InvalidRequest::new(
                "strategy.winnerProbability",
                format!(
                    "must be above 0.5 and below 1, got {}",
                    s.winner_probability
                ),
            ));
        }
        if !DRAWS_RANGE.contains(&s.draws) {
            return Err(InvalidRequest::new(
                "strategy.draws",
                format!(
                    "must be between {} and {}, got {}",
                    DRAWS_RANGE.start(),
                    DRAWS_RANGE.end(),
                    s.draws
                ),
            ));
        }
        if !(s.alpha >= 1e-4 && s.alpha <= 0.5) {
            return Err(InvalidRequest::new(
                "strategy.alpha",
                format!("must be between 0.0001 and 0.5, got {}", s.alpha),
            ));
        }
        if !(1..=1000).contains(&s.max_failed_checks) {
            return Err(InvalidRequest::new(
                "strategy.maxFailedChecks",
                format!("must be between 1 and 1000, got {}", s.max_failed_checks),
            ));
        }
        if let Some(split) = &s.split {
            if split.len() != self.versions.len() {
                return Err(InvalidRequest::new(
                    "strategy.split",
                    format!(
                        "{} weights given for {} versions",
                        split.len(),
                        self.versions.len()
                    ),
                ));
            }
            let total: u32 = split.iter().map(|&w| w.min(101)).sum();
            if total != 100 {
                return Err(InvalidRequest::new(
                    "strategy.split",
                    format!("weights must sum to 100, got {total}"),
                ));
            }
        }
        Ok(())
    }
}

/// The four shapes of metric data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// An observed counter.
    Counter,
    /// An observed sum and count.
    Mean,
    /// An observed histogram.
    Histogram,
    /// A ratio of two counters, defined in the request.
    Ratio,
}

impl MetricKind {
    /// The kind's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Mean => "mean",
            Self::Histogram => "histogram",
            Self::Ratio => "ratio",
        }
    }

    /// The kind of an observation.
    pub fn of(o: &Observation) -> Self {
        match o {
            Observation::Counter(_) => Self::Counter,
            Observation::Mean(_) => Self::Mean,
            Observation::Histogram(_) => Self::Histogram,
        }
    }
}

/// A count of events that happen at most once per iteration, over `iterations` iterations.
fn one_per_iteration(at: &str, n: u32, iterations: u32) -> Check {
    if n > iterations {
        return Err(InvalidRequest::new(
            at,
            format!("{n} in {iterations} iterations; there is at most one per iteration"),
        ));
    }
    Ok(())
}

/// An iteration the evidence covers, if given: 1 to `last`.
fn evidence_iteration(at: &str, iteration: Option<u32>, last: u32) -> Check {
    match iteration {
        Some(i) if i == 0 || i > last => Err(InvalidRequest::new(
            at,
            format!("iteration {i}; it must be one of the evidence's iterations (1 to {last})"),
        )),
        _ => Ok(()),
    }
}

/// The recent intervals of one version's evidence: at most [`RECENT_INTERVALS`] of them, in
/// increasing iterations up to the evidence's own, each with a weight of at most 100, a
/// non-negative traffic and one value per target.
///
/// [`RECENT_INTERVALS`]: crate::evidence::RECENT_INTERVALS
fn check_recent(at: &str, e: &Evidence, ev: &VersionEvidence) -> Check {
    if ev.recent.len() > crate::evidence::RECENT_INTERVALS {
        return Err(InvalidRequest::new(
            format!("{at}.recent"),
            format!(
                "{} intervals; at most {}",
                ev.recent.len(),
                crate::evidence::RECENT_INTERVALS
            ),
        ));
    }
    let mut previous = 0;
    for (k, r) in ev.recent.iter().enumerate() {
        let at = format!("{at}.recent[{k}]");
        if r.iteration <= previous || r.iteration > e.iteration {
            return Err(InvalidRequest::new(
                format!("{at}.iteration"),
                format!(
                    "iteration {}; the recent intervals are in increasing iterations, after \
                     {previous} and up to the evidence's iteration {}",
                    r.iteration, e.iteration
                ),
            ));
        }
        previous = r.iteration;
        if let Some(w) = r.weight.filter(|&w| w > 100) {
            return Err(InvalidRequest::new(
                format!("{at}.weight"),
                format!("{w}; a weight is a percentage, at most 100"),
            ));
        }
        // Engines before 2026-12-01 wrote a negative traffic after a count dipped (Prometheus
        // extrapolation); an experiment running across an upgrade sends it back. It is read as
        // unknown (`series::latest_traffic`), so only its size is checked.
        if let Some(traffic) = r.traffic {
            count(&format!("{at}.traffic"), traffic.abs())?;
        }
        if r.values.len() != e.targets.len() {
            return Err(InvalidRequest::new(
                format!("{at}.values"),
                format!(
                    "{} values; there is one per target ({})",
                    r.values.len(),
                    e.targets.len()
                ),
            ));
        }
    }
    Ok(())
}

fn check_name(at: &str, name: &str) -> Check {
    if name.trim().is_empty() {
        return Err(InvalidRequest::new(at, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidRequest::new(
            at,
            format!(
                "is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn check_metrics(at: &str, metrics: &BTreeMap<String, Observation>) -> Check {
    if metrics.len() > MAX_METRICS {
        return Err(InvalidRequest::new(
            at,
            format!(
                "{} metrics given; at most {MAX_METRICS} are supported",
                metrics.len()
            ),
        ));
    }
    for (name, obs) in metrics {
        let at = format!("{at}.{name}");
        check_name(&at, name)?;
        match obs {
            Observation::Counter(c) => count(&format!("{at}.counter"), *c)?,
            Observation::Mean(m) => check_mean(&format!("{at}.mean"), m)?,
            Observation::Histogram(h) => check_histogram(&format!("{at}.histogram"), h)?,
        }
    }
    Ok(())
}

fn check_mean(at: &str, m: &MeanObservation) -> Check {
    if !m.sum.is_finite() {
        return Err(InvalidRequest::new(
            format!("{at}.sum"),
            "must be a finite number",
        ));
    }
    count(&format!("{at}.count"), m.count)?;
    if let Some(ss) = m.sum_of_squares {
        non_negative(&format!("{at}.sumOfSquares"), ss)?;
        // By Cauchy-Schwarz, sum^2 <= count * sumOfSquares; allow rounding slack.
        if m.count > 0.0 && m.sum * m.sum > m.count * ss * (1.0 + 1e-9) + 1e-9 {
            return Err(InvalidRequest::new(
                format!("{at}.sumOfSquares"),
                "is too small for the sum and count (sum^2 must not exceed count * sumOfSquares)",
            ));
        }
    }
    Ok(())
}

fn check_histogram(at: &str, h: &HistogramObservation) -> Check {
    let n = h.buckets.len();
    if n == 0 {
        return Err(InvalidRequest::new(
            format!("{at}.buckets"),
            "at least one bucket is required",
        ));
    }
    if n > MAX_BUCKETS {
        return Err(InvalidRequest::new(
            format!("{at}.buckets"),
            format!("{n} buckets given; at most {MAX_BUCKETS} are supported"),
        ));
    }
    let mut prev: Option<(f64, f64)> = None;
    for (i, b) in h.buckets.iter().enumerate() {
        let le = b.le.value();
        let bat = format!("{at}.buckets[{i}]");
        if le.is_nan() || (le.is_infinite() && (le < 0.0 || i + 1 != n)) {
            return Err(InvalidRequest::new(
                format!("{bat}.le"),
                "must be a finite number; only the last bucket may be \"+Inf\"",
            ));
        }
        count(&format!("{bat}.count"), b.count)?;
        if let Some((ple, pcount)) = prev {
            if le <= ple {
                return Err(InvalidRequest::new(
                    format!("{bat}.le"),
                    format!("bucket bounds must increase; {le} follows {ple}"),
                ));
            }
            if b.count < pcount {
                return Err(InvalidRequest::new(
                    format!("{bat}.count"),
                    format!(
                        "cumulative bucket counts must not decrease; {} follows {pcount}",
                        b.count
                    ),
                ));
            }
        }
        prev = Some((le, b.count));
    }
    if let Some(sum) = h.sum
        && !sum.is_finite()
    {
        return Err(InvalidRequest::new(
            format!("{at}.sum"),
            "must be a finite number",
        ));
    }
    Ok(())
}

fn check_history(at: &str, iteration: u32, v: &crate::request::Version) -> Check {
    if v.history.len() > MAX_HISTORY {
        return Err(InvalidRequest::new(
            format!("{at}.history"),
            format!(
                "{} snapshots given; at most {MAX_HISTORY} are supported",
                v.history.len()
            ),
        ));
    }
    let mut last = 0;
    for (i, s) in v.history.iter().enumerate() {
        let sat = format!("{at}.history[{i}]");
        if s.iteration <= last || s.iteration >= iteration {
            return Err(InvalidRequest::new(
                format!("{sat}.iteration"),
                format!(
                    "snapshots must be in increasing order of iteration and before the \
                     current iteration ({iteration}); got {} after {last}",
                    s.iteration
                ),
            ));
        }
        last = s.iteration;
        if let Some(w) = s.weight
            && w > 100
        {
            return Err(InvalidRequest::new(
                format!("{sat}.weight"),
                format!("must be between 0 and 100, got {w}"),
            ));
        }
        check_metrics(&format!("{sat}.metrics"), &s.metrics)?;
    }
    Ok(())
}

fn counter(
    v: &crate::request::Version,
    name: &str,
    field: &str,
    index: usize,
) -> Result<Option<f64>, InvalidRequest> {
    match v.metrics.get(name) {
        None => Ok(None),
        Some(Observation::Counter(c)) => Ok(Some(*c)),
        Some(_) => Err(InvalidRequest::new(
            field,
            format!("{name:?} must be a counter, but versions[{index}] reports another kind"),
        )),
    }
}

fn non_negative(at: &str, x: f64) -> Check {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            at,
            format!("must be a finite, non-negative number, got {x}"),
        ))
    }
}

/// A count of events: non-negative, finite and at most [`MAX_COUNT`].
fn count(at: &str, x: f64) -> Check {
    non_negative(at, x)?;
    if x > MAX_COUNT {
        return Err(InvalidRequest::new(
            at,
            format!("must be at most 2^53 ({MAX_COUNT}), got {x}"),
        ));
    }
    Ok(())
}
