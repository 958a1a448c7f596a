//! The bounds of a request: how many versions, metrics, buckets and criteria, how large a count.

/// The most versions one experiment may compare.
pub const MAX_VERSIONS: usize = 16;
/// The most metrics one version may report.
pub const MAX_METRICS: usize = 64;
/// The most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 256;
/// The most criteria (objectives, relative objectives and rewards together).
pub const MAX_CRITERIA: usize = 32;
/// The most earlier snapshots one version may carry.
pub const MAX_HISTORY: usize = 1_000;
/// The fewest and the most Monte-Carlo draws a request may ask for.
pub const DRAWS_RANGE: std::ops::RangeInclusive<u32> = 100..=200_000;
/// The largest count (2^53): beyond it an f64 no longer holds every integer, and the
/// posteriors' sums of squares overflow.
pub const MAX_COUNT: f64 = 9_007_199_254_740_992.0;
/// The longest name (of a version or a metric).
pub const MAX_NAME_LEN: usize = 253;
