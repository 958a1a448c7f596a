//! Joint Monte-Carlo draws from all posteriors at once.
//!
//! Each draw samples every metric of every version once, and every question (does a version
//! meet all criteria, is it the best feasible one, does it beat the baseline) is answered on
//! that same draw. So a reward and a criterion on the same metric stay correlated, unlike
//! iter8's independent masks.

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

use crate::criteria::Check;
use crate::model::Model;

/// What the draws say, as fractions of the draws.
#[derive(Debug, Clone)]
pub struct DrawSummary {
    /// P(version meets all criteria).
    pub all_criteria: Vec<f64>,
    /// P(version meets relative criterion j): `relative[version][j]`, in criteria order
    /// (absolute criteria hold `NaN`: they have closed forms).
    pub per_criterion: Vec<Vec<f64>>,
    /// P(version is the best version meeting all criteria).
    pub win: Vec<f64>,
    /// P(candidate's reward is better than the baseline's); `None` without a reward.
    pub beats_baseline: Vec<Option<f64>>,
    /// Share of top-1 and top-2 places among feasible versions (the baseline takes the place
    /// of a draw in which no version is feasible), normalised to sum to 1.
    pub top_share: [Vec<f64>; 2],
}

/// Draws in a block: one column per (version, target), so each sampler runs in a tight loop
/// and the block stays in cache. The block is versions x targets x draws, draws last, in a
/// flat `Vec`: an `ndarray::Array3` of the same layout gave the same answers 5-10 % slower
/// (docs/performance.md, "ndarray for the joint draws").
const BLOCK: usize = 1024;

/// Draws `draws` joint samples with a seeded, portable generator.
pub fn summarize(model: &Model, draws: u32, seed: u64) -> DrawSummary {
    let versions = model.posteriors.len();
    let targets = model.targets.len();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut tally = Tally::new(model);
    let mut block = vec![f64::NAN; versions * targets * BLOCK];
    let mut done = 0;
    while done < draws as usize {
        let size = BLOCK.min(draws as usize - done);
        for (v, row) in model.posteriors.iter().enumerate() {
            for (t, post) in row.iter().enumerate() {
                let column = &mut block[(v * targets + t) * BLOCK..][..size];
                match post {
                    Some(p) => p.fill(&mut rng, column),
                    None => column.fill(f64::NAN),
                }
            }
        }
        tally.add_block(model, &block, size);
        done += size;
    }
    tally.summary(model, draws)
}

/// Counts of what held, over the draws so far.
struct Tally {
    /// Per version, whether each draw of the block met every criterion.
    feasible: Vec<Vec<bool>>,
    /// Per version, each draw's utility (larger is better).
    utility: Vec<Vec<f64>>,
    all: Vec<u64>,
    per_criterion: Vec<Vec<u64>>,
    win: Vec<u64>,
    beats: Vec<u64>,
    top: [Vec<u64>; 2],
}

impl Tally {
    fn new(model: &Model) -> Self {
        let versions = model.posteriors.len();
        Self {
            feasible: vec![vec![false; BLOCK]; versions],
            utility: vec![vec![0.0; BLOCK]; versions],
            all: vec![0; versions],
            per_criterion: vec![vec![0; model.criteria.len()]; versions],
            win: vec![0; versions],
            beats: vec![0; versions],
            top: [vec![0; versions], vec![0; versions]],
        }
    }

    /// Counts the first `size` joint draws of a block, whose column for (version, target)
    /// starts at `(version * targets + target) * BLOCK`. Criteria are evaluated a column at
    /// a time, so each check runs as a tight loop; only the ranking goes draw by draw.
    fn add_block(&mut self, model: &Model, block: &[f64], size: usize) {
        let targets = model.targets.len();
        let column = |v: usize, t: usize| &block[(v * targets + t) * BLOCK..][..size];
        let versions = self.feasible.len();
        for v in 0..versions {
            let feasible = &mut self.feasible[v][..size];
            feasible.fill(true);
            for (c, criterion) in model.criteria.iter().enumerate() {
                let t = criterion.check.target();
                let (values, baseline) = (column(v, t), column(0, t));
                // One loop per kind of check, so the match is not redone for every draw.
                let held = match criterion.check {
                    Check::Absolute { lower, upper, .. } => {
                        let (lo, hi) = (
                            lower.unwrap_or(f64::NEG_INFINITY),
                            upper.unwrap_or(f64::INFINITY),
                        );
                        // NaN (no data) fails both comparisons, as `Check::holds` says.
                        count_into(feasible, values.iter().map(|&x| x >= lo && x <= hi))
                    }
                    Check::Relative { .. } if v == 0 => {
                        count_into(feasible, values.iter().map(|_| true))
                    }
                    Check::Relative { .. } => count_into(
                        feasible,
                        values
                            .iter()
                            .zip(baseline)
                            .map(|(&x, &b)| criterion.check.holds(x, b, false)),
                    ),
                };
                self.per_criterion[v][c] += held;
            }
            self.all[v] += feasible.iter().map(|&ok| u64::from(ok)).sum::<u64>();
            let utility = &mut self.utility[v][..size];
            match model.reward {
                Some((t, direction)) => {
                    for (u, &x) in utility.iter_mut().zip(column(v, t)) {
                        *u = oriented(x, direction);
                    }
                    if v > 0 {
                        self.beats[v] += column(v, t)
                            .iter()
                            .zip(column(0, t))
                            .map(|(&x, &b)| {
                                u64::from(oriented(x, direction) > oriented(b, direction))
                            })
                            .sum::<u64>();
                    }
                }
                // Without a reward a candidate is preferred to the baseline (a canary), and
                // a later candidate to an earlier one.
                None => utility.fill(v as f64),
            }
        }
        for d in 0..size {
            match best_two(versions, |v| self.feasible[v][d], |v| self.utility[v][d]) {
                (Some(best), second) => {
                    self.win[best] += 1;
                    self.top[0][best] += 1;
                    self.top[1][best] += 1;
                    if let Some(s) = second {
                        self.top[1][s] += 1;
                    }
                }
                // No version is feasible: the baseline keeps the place.
                (None, _) => {
                    self.top[0][0] += 1;
                    self.top[1][0] += 1;
                }
            }
        }
    }

    fn summary(self, model: &Model, draws: u32) -> DrawSummary {
        let n = f64::from(draws.max(1));
        let frac = |c: &[u64]| c.iter().map(|&x| x as f64 / n).collect::<Vec<_>>();
        let share = |c: &[u64]| {
            let total: u64 = c.iter().sum();
            c.iter()
                .map(|&x| x as f64 / total.max(1) as f64)
                .collect::<Vec<_>>()
        };
        DrawSummary {
            all_criteria: frac(&self.all),
            per_criterion: self
                .per_criterion
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(&model.criteria)
                        .map(|(&x, c)| match c.check {
                            Check::Relative { .. } => x as f64 / n,
                            Check::Absolute { .. } => f64::NAN,
                        })
                        .collect()
                })
                .collect(),
            win: frac(&self.win),
            beats_baseline: (0..self.beats.len())
                .map(|v| (v > 0 && model.reward.is_some()).then(|| self.beats[v] as f64 / n))
                .collect(),
            top_share: [share(&self.top[0]), share(&self.top[1])],
        }
    }
}

/// ANDs each outcome into `feasible` and counts the outcomes that held.
fn count_into(feasible: &mut [bool], outcomes: impl Iterator<Item = bool>) -> u64 {
    let mut held = 0;
    for (ok, holds) in feasible.iter_mut().zip(outcomes) {
        held += u64::from(holds);
        *ok &= holds;
    }
    held
}

/// A reward oriented so that larger is better; a missing value ranks last.
fn oriented(value: f64, direction: iter8_api::Direction) -> f64 {
    if value.is_nan() {
        return f64::NEG_INFINITY;
    }
    match direction {
        iter8_api::Direction::Higher => value,
        iter8_api::Direction::Lower => -value,
    }
}

/// The best and second-best feasible versions by utility; ties go to the earlier version.
fn best_two(
    versions: usize,
    feasible: impl Fn(usize) -> bool,
    utility: impl Fn(usize) -> f64,
) -> (Option<usize>, Option<usize>) {
    let mut first: Option<usize> = None;
    let mut second: Option<usize> = None;
    for v in (0..versions).filter(|&v| feasible(v)) {
        match first {
            Some(f) if utility(v) <= utility(f) => match second {
                Some(s) if utility(v) <= utility(s) => {}
                _ => second = Some(v),
            },
            _ => {
                second = first;
                first = Some(v);
            }
        }
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The draws' answers checked in: any change of layout or tally must give the very same
    /// bits. `ITER8_UPDATE_GOLDEN=1 cargo test -p iter8-engine draws` rewrites the file, for a
    /// change meant to alter the draws (a new sampler, another model).
    const GOLDEN: &str = "tests/golden/draw-summaries.json";

    #[test]
    fn summaries_equal_the_checked_in_answers() {
        let answers: serde_json::Map<String, Value> = golden_cases()
            .into_iter()
            .map(|(name, request)| {
                let request: iter8_api::AssessmentRequest = serde_json::from_value(request)
                    .unwrap_or_else(|e| panic!("case {name} does not decode: {e}"));
                if let Err(e) = request.validate() {
                    panic!("case {name} is refused: {e}");
                }
                let summary = summarize(&Model::new(&request), request.strategy.draws, 8);
                (name.to_owned(), summary_json(&summary))
            })
            .collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
        let text = serde_json::to_string_pretty(&answers).unwrap_or_default() + "\n";
        if std::env::var_os("ITER8_UPDATE_GOLDEN").is_some()
            && let Err(e) = std::fs::write(&path, &text)
        {
            panic!("cannot write {}: {e}", path.display());
        }
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            checked_in == text,
            "the draws' answers differ from {GOLDEN}:\n{text}"
        );
    }

    /// Requests that reach every path of the tally: both kinds of check in both directions,
    /// a reward to maximise and one to minimise, none at all, a version without data, many
    /// versions, and a number of draws that leaves the last block part-full.
    fn golden_cases() -> Vec<(&'static str, Value)> {
        // Its own request, not docs/examples: an edit of the example must not move the bits.
        let base = json!({
            "kind": "abn", "iteration": 6, "minIterations": 3, "maxIterations": 20,
            "versions": [
                golden_version("v1", 40, [4200.0, 21.0, 420.0], 146.0, [0.07, 0.4, 0.85, 0.95, 0.99, 0.999]),
                golden_version("v2", 30, [3100.0, 14.0, 372.0], 146.0, [0.08, 0.41, 0.86, 0.95, 0.99, 0.999]),
                golden_version("v3", 30, [3050.0, 61.0, 400.0], 230.0, [0.04, 0.23, 0.62, 0.82, 0.93, 0.987])
            ],
            "ratios": [
                {"name": "error-rate", "numerator": "errors", "denominator": "requests"},
                {"name": "conversion-rate", "numerator": "conversions", "denominator": "requests"}
            ],
            "criteria": {
                "objectives": [
                    {"metric": "error-rate", "upperLimit": 0.01},
                    {"metric": "latency", "quantile": 0.95, "upperLimit": 500}
                ],
                "relativeObjectives": [
                    {"metric": "latency", "quantile": 0.95, "preferredDirection": "lower",
                     "maxDegradation": 0.1}
                ],
                "rewards": [{"metric": "conversion-rate", "preferredDirection": "higher"}]
            },
            "strategy": {"algorithm": "progressive"}
        });
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut request = base.clone();
            edit(&mut request);
            request
        };
        vec![
            ("three versions", base.clone()),
            (
                "lower reward, higher relative objective, lower limit, 2500 draws",
                with(&|r| {
                    r["strategy"]["draws"] = json!(2500);
                    r["criteria"] = json!({
                        "objectives": [
                            {"metric": "conversion-rate", "lowerLimit": 0.1, "upperLimit": 0.2},
                            {"metric": "latency", "quantile": 0.95, "upperLimit": 500}
                        ],
                        "relativeObjectives": [
                            {"metric": "latency", "quantile": 0.95,
                             "preferredDirection": "lower", "maxDegradation": 0.1},
                            {"metric": "conversion-rate",
                             "preferredDirection": "higher", "maxDegradation": 0.05}
                        ],
                        "rewards": [{"metric": "error-rate", "preferredDirection": "lower"}]
                    });
                }),
            ),
            (
                "a candidate without latency",
                with(&|r| {
                    if let Some(m) = r["versions"][1]["metrics"].as_object_mut() {
                        m.remove("latency");
                    }
                }),
            ),
            (
                "no reward",
                with(&|r| {
                    r["kind"] = json!("canary");
                    if let Some(versions) = r["versions"].as_array_mut() {
                        versions.truncate(2);
                    }
                    r["versions"][0]["weight"] = json!(70);
                    if let Some(c) = r["criteria"].as_object_mut() {
                        c.remove("rewards");
                    }
                }),
            ),
            (
                "nine versions, 3000 draws",
                with(&|r| {
                    r["strategy"]["draws"] = json!(3000);
                    let versions: Vec<Value> = (0..9)
                        .map(|i| {
                            let mut v = base["versions"][i % 3].clone();
                            v["name"] = json!(format!("v{i}"));
                            v["weight"] = json!(if i == 0 { 12 } else { 11 });
                            v
                        })
                        .collect();
                    r["versions"] = json!(versions);
                }),
            ),
        ]
    }

    /// A version with the counters requests, errors, conversions and a latency histogram whose
    /// cumulative shares at 50, 100, 200, 300, 500 and 1000 ms are `shares`.
    fn golden_version(
        name: &str,
        weight: u32,
        counters: [f64; 3],
        mean: f64,
        shares: [f64; 6],
    ) -> Value {
        let [requests, errors, conversions] = counters;
        let mut buckets: Vec<Value> = [50, 100, 200, 300, 500, 1000]
            .iter()
            .zip(shares)
            .map(|(le, share)| json!({"le": le, "count": (requests * share).round()}))
            .collect();
        buckets.push(json!({"le": "+Inf", "count": requests}));
        json!({
            "name": name, "weight": weight,
            "metrics": {
                "requests": {"counter": requests},
                "errors": {"counter": errors},
                "conversions": {"counter": conversions},
                "latency": {"histogram": {"sum": requests * mean, "buckets": buckets}}
            }
        })
    }

    /// A summary as JSON (NaN, the closed-form criteria's placeholder, becomes null).
    fn summary_json(s: &DrawSummary) -> Value {
        json!({
            "allCriteria": s.all_criteria,
            "perCriterion": s.per_criterion,
            "win": s.win,
            "beatsBaseline": s.beats_baseline,
            "topShare": s.top_share,
        })
    }

    #[test]
    fn best_two_ranks_feasible_versions_only() {
        let rank = |feasible: &[bool], utility: &[f64]| {
            best_two(feasible.len(), |v| feasible[v], |v| utility[v])
        };
        assert_eq!(
            rank(&[true, false, true, true], &[1.0, 9.0, 3.0, 2.0]),
            (Some(2), Some(3))
        );
        assert_eq!(rank(&[false, false], &[1.0, 2.0]), (None, None));
        assert_eq!(rank(&[true, true], &[1.0, 1.0]), (Some(0), Some(1)));
    }
}
