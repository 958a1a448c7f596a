//! Property tests of bad input (docs/reliability.md, "Bad input"), on stable Rust so CI runs
//! them: for any body, decoding, validation and the engine never panic; every refusal is a
//! 4xx naming a field the request has, with a reason; every accepted request gets a split
//! over its versions summing to 100, probabilities in [0, 1] and finite numbers. The case
//! counts and seeds are fixed, so each run checks the same bodies.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

mod support;

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use support::invariants::{self, Outcome};
use support::{generate, mutate};

/// Generated requests checked per run (with their JSON bodies).
const GENERATED_CASES: u32 = 1_500;
/// Mutated example bodies checked per run.
const MUTATED_CASES: u32 = 2_000;
/// Raw byte strings checked per run.
const RAW_CASES: u32 = 1_000;

/// A runner with a fixed seed, no failure files, and shrinking bounded in time.
fn runner(cases: u32, seed: u8) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// Runs `property` on random bytes and returns how many cases ended each way.
fn tally(
    cases: u32,
    seed: u8,
    max_len: usize,
    property: impl Fn(&[u8]) -> Option<Outcome>,
) -> BTreeMap<String, u32> {
    let counts = std::sync::Mutex::new(BTreeMap::<String, u32>::new());
    // Shrinking panics many times; the runner reports the smallest failure itself.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = runner(cases, seed).run(&vec(any::<u8>(), 0..max_len), |bytes| {
        let key = match property(&bytes) {
            Some(outcome) => format!("{outcome:?}"),
            None => "out of bytes".to_owned(),
        };
        *counts.lock().unwrap().entry(key).or_default() += 1;
        Ok(())
    });
    std::panic::set_hook(hook);
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let counts = counts.into_inner().unwrap();
    println!("{counts:?}");
    counts
}

fn at_least(counts: &BTreeMap<String, u32>, outcome: Outcome, n: u32) {
    let got = counts.get(&format!("{outcome:?}")).copied().unwrap_or(0);
    assert!(got >= n, "only {got} cases ended {outcome:?}: {counts:?}");
}

#[test]
fn generated_extreme_requests_are_assessed_or_refused_naming_the_field() {
    let counts = tally(GENERATED_CASES, 1, 4096, |bytes| {
        let request = generate::request(&mut Unstructured::new(bytes)).ok()?;
        let direct = invariants::check_request(&request);
        // The same request as the server receives it: JSON bytes.
        let body = serde_json::to_vec(&request).unwrap();
        let decoded = invariants::check_body(&body);
        // Only non-finite numbers (JSON null) change on the way; those fail either way.
        if direct == Outcome::Assessed {
            assert_eq!(decoded, Outcome::Assessed);
        }
        Some(direct)
    });
    at_least(&counts, Outcome::Assessed, GENERATED_CASES / 20);
    at_least(&counts, Outcome::Invalid, GENERATED_CASES / 10);
}

#[test]
fn mutated_example_bodies_are_assessed_or_refused_naming_the_field() {
    let counts = tally(MUTATED_CASES, 2, 64, |bytes| {
        let body = mutate::body(&mut Unstructured::new(bytes), mutate::EXAMPLE.as_bytes()).ok()?;
        Some(invariants::check_body(&body))
    });
    at_least(&counts, Outcome::Undecodable, MUTATED_CASES / 5);
    at_least(&counts, Outcome::Invalid, MUTATED_CASES / 50);
    at_least(&counts, Outcome::Assessed, MUTATED_CASES / 50);
}

#[test]
fn raw_bytes_are_refused_naming_the_body_or_a_field() {
    let counts = tally(RAW_CASES, 3, 512, |bytes| {
        Some(invariants::check_body(bytes))
    });
    at_least(&counts, Outcome::Undecodable, RAW_CASES * 9 / 10);
}

proptest! {
    #![proptest_config(Config { cases: 200, failure_persistence: None, ..Config::default() })]

    /// Any JSON number where the example has a counter: refused naming that counter unless
    /// it is a finite non-negative count.
    #[test]
    fn any_counter_value_is_accepted_only_when_finite_and_non_negative(x in any::<f64>()) {
        let mut document: serde_json::Value = serde_json::from_str(mutate::EXAMPLE).unwrap();
        document["versions"][1]["metrics"]["conversions"]["counter"] = serde_json::json!(x);
        let body = serde_json::to_vec(&document).unwrap();
        let outcome = invariants::check_body(&body);
        if !(x.is_finite() && x >= 0.0) {
            prop_assert_ne!(outcome, Outcome::Assessed);
        }
    }
}
