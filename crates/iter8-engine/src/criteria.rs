//! The request's criteria, compiled: what is checked against which target. Read by the
//! model, the guards, the draws, the interval checks of the fold and the judges.

use iter8_api::Direction;

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
