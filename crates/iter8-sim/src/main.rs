//! `iter8-sim`: runs the benchmark and prints a Markdown table.
#![forbid(unsafe_code)]

use std::time::Instant;

use clap::Parser;
use iter8_api::Algorithm;
use iter8_sim::{DEFAULT_SEED, Policy, markdown, oracle, run_all, scenario, targets_markdown};

/// Simulation benchmark of the decision engine's strategies.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Replicates per (scenario, strategy) cell.
    #[arg(long, default_value_t = 200)]
    replicates: usize,
    /// Base seed; each replicate's seed is derived from it and the cell.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Monte-Carlo draws per engine request.
    #[arg(long, default_value_t = 2000)]
    draws: u32,
    /// Scenario ids to run (comma separated); all by default.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Strategies to run (comma separated wire names); the compared set by default.
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<String>,
    /// Print every iteration of this many replicates per cell instead of the table.
    #[arg(long)]
    trace: Option<usize>,
}

/// The strategies the benchmark compares by default.
const COMPARED: [Algorithm; 7] = [
    Algorithm::Safe,
    Algorithm::Progressive,
    Algorithm::Top2,
    Algorithm::Uniform,
    Algorithm::CheckAndIncrement,
    Algorithm::FixedThresholds,
    Algorithm::MannWhitney,
];

fn main() {
    let args = Args::parse();
    let scenarios: Vec<_> = scenario::all()
        .into_iter()
        .enumerate()
        .filter(|(_, s)| args.scenarios.is_empty() || args.scenarios.iter().any(|x| x == s.id))
        .collect();
    let policies: Vec<_> = Algorithm::ALL
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            if args.strategies.is_empty() {
                COMPARED.contains(a)
            } else {
                args.strategies.iter().any(|x| x == a.name())
            }
        })
        .map(|(i, &a)| (i, Policy::for_algorithm(a, args.draws)))
        .collect();
    if let Some(count) = args.trace {
        for (si, s) in &scenarios {
            for (pi, p) in &policies {
                for r in 0..count {
                    let seed = iter8_sim::report::replicate_seed(args.seed, *si, *pi, r);
                    let o = iter8_sim::run::simulate_traced(s, p, seed, true);
                    println!("{} {} replicate {r}:", s.id, p.algorithm.name());
                    for line in o.trace {
                        println!("  {line}");
                    }
                }
            }
        }
        return;
    }
    let started = Instant::now();
    let summaries = run_all(
        &scenarios,
        &policies,
        args.replicates,
        args.seed,
        args.threads,
    );
    println!("| id | scenario | right answer | why | oracle power |");
    println!("|---|---|---|---|---:|");
    for (_, s) in &scenarios {
        let right = if s.right == 0 {
            "keep the baseline".to_string()
        } else {
            format!("promote v{}", s.right)
        };
        let oracle = match oracle::power(s) {
            Some(p) if p >= oracle::CORRECT_TARGET => format!("{:.1} %", 100.0 * p),
            Some(p) => format!("{:.1} % (cannot find it)", 100.0 * p),
            None => "-".to_string(),
        };
        println!("| {} | {} | {right} | {} | {oracle} |", s.id, s.name, s.why);
    }
    println!();
    print!("{}", markdown(&summaries));
    println!();
    print!("{}", targets_markdown(&summaries));
    eprintln!(
        "{} replicates per cell, seed {}, {} draws, {} threads: {:.1} s",
        args.replicates,
        args.seed,
        args.draws,
        args.threads,
        started.elapsed().as_secs_f64()
    );
    let refused: usize = summaries.iter().map(|s| s.refused).sum();
    if refused > 0 {
        eprintln!(
            "the engine refused {refused} requests the shared request path built: a defect, \
             and the tables above do not score those runs"
        );
        std::process::exit(1);
    }
}
