//! What a strategy and the decision rules see of one assessment: [`Context`]. Its own
//! module, so that `decision` and `strategy` both depend on it and not on each other.

use iter8_api::AssessmentRequest;

use crate::draws::DrawSummary;
use crate::model::Model;

/// What a strategy sees: the request and everything estimated from it.
pub struct Context<'a> {
    /// The validated request.
    pub request: &'a AssessmentRequest,
    /// Posteriors and compiled criteria.
    pub model: &'a Model,
    /// The joint draws.
    pub draws: &'a DrawSummary,
}

impl Context<'_> {
    /// The current weights, in version order.
    pub fn current_weights(&self) -> Vec<u32> {
        self.request.versions.iter().map(|v| v.weight).collect()
    }

    /// Whether a version is shown by an anytime-valid test to break a criterion, at this
    /// iteration or an earlier one (the evidence remembers it): it gets no more traffic.
    pub fn removed(&self, version: usize) -> bool {
        self.model
            .evidence
            .versions
            .get(version)
            .is_some_and(|e| e.removed.is_some())
    }

    /// Whether a version meets every criterion on its observed values alone (iter8 v0's
    /// check); a criterion without data is not met.
    pub fn meets_criteria_on_observed_values(&self, version: usize) -> bool {
        let row = &self.model.posteriors[version];
        let baseline = &self.model.posteriors[0];
        self.model.criteria.iter().all(|c| {
            let t = c.check.target();
            match (&row[t], &baseline[t]) {
                (Some(v), Some(b)) => c.check.holds(v.value(), b.value(), version == 0),
                (Some(v), None) => {
                    matches!(c.check, crate::criteria::Check::Absolute { .. })
                        && c.check.holds(v.value(), f64::NAN, version == 0)
                }
                (None, _) => false,
            }
        })
    }
}

impl Context<'_> {
    /// P(version meets criterion `c`): a closed form for absolute limits, the joint draws for
    /// limits relative to the baseline. Without data the probability is 0.
    pub fn criterion_probability(&self, version: usize, c: usize) -> f64 {
        let criterion = &self.model.criteria[c];
        match criterion.check {
            crate::criteria::Check::Absolute {
                target,
                lower,
                upper,
            } => match &self.model.posteriors[version][target] {
                Some(p) => {
                    let below_upper = upper.map_or(1.0, |u| p.cdf(u));
                    let below_lower = lower.map_or(0.0, |l| p.cdf(l));
                    (below_upper - below_lower).clamp(0.0, 1.0)
                }
                None => 0.0,
            },
            crate::criteria::Check::Relative { .. } if version == 0 => 1.0,
            crate::criteria::Check::Relative { .. } => self.draws.per_criterion[version][c],
        }
    }

    /// The criterion a version is least likely to meet, in words.
    pub fn weakest_criterion(&self, version: usize) -> String {
        let name = &self.request.versions[version].name;
        let weakest = (0..self.model.criteria.len())
            .map(|c| (c, self.criterion_probability(version, c)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match weakest {
            Some((c, p)) => format!(
                "{name} meets {} with probability {p:.3}",
                self.model.criteria[c].description
            ),
            None => format!("{name} has no criteria"),
        }
    }
}
