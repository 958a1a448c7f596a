//! A simulation benchmark of the iter8 decision engine: scenarios with a known right answer,
//! run through the engine's public request and response types exactly as the analytics
//! service receives them, with traffic and ground truth owned by the simulator.
#![forbid(unsafe_code)]

pub mod oracle;
pub mod report;
pub mod run;
pub mod scenario;

pub use report::{
    Summary, binomial_at_least, binomial_at_most, markdown, run_all, targets_markdown, wilson,
};
pub use run::{Outcome, Policy, simulate};
pub use scenario::Scenario;

/// The seed the published benchmark uses.
pub const DEFAULT_SEED: u64 = 20_261_129;
