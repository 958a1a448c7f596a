//! iter8's command line: steering experiments on a cluster ([`cluster`]) and local mode,
//! experiments with no cluster. In local mode iter8 generates the
//! traffic itself, splits it by the current weights, measures each version and asks the
//! analytics engine (in process, or a remote service) what to do next.
//!
//! Local mode measures these built-in metrics for every version, usable in criteria:
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `requests` | counter | requests sent |
//! | `errors` | counter | 5xx answers, timeouts and connection errors |
//! | `conversions` | counter | successful answers marked as conversions (`spec.load.conversion`) |
//! | `latency` | histogram (ms) | time to the full response; use with a `quantile` |
//! | `mean-latency` | mean (ms) | the same, as a mean with its sum of squares |
//! | `error-rate` | ratio | `errors / requests` (added unless the file defines it) |
//! | `conversion-rate` | ratio | `conversions / requests` (added unless the file defines it) |
#![forbid(unsafe_code)]

pub mod analytics;
pub mod cluster;
pub mod demo;
pub mod load;
pub mod local;
pub mod progress;
pub mod record;
pub mod report;
pub mod spec;
pub mod split;
pub mod stats;

pub use analytics::Analytics;
pub use record::RunRecord;
pub use spec::{LocalExperiment, SpecError};
