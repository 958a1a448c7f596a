//! Well-formed but extreme requests (tests/support/generate.rs: NaN and infinite numbers,
//! huge counts, empty buckets, up to 17 versions) sent through validation and the engine,
//! both directly and as JSON bodies. Never panics; answers are well-formed.
#![no_main]

#[path = "../../tests/support/generate.rs"]
mod generate;
#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut bytes = arbitrary::Unstructured::new(data);
    let Ok(request) = generate::request(&mut bytes) else {
        return;
    };
    invariants::check_request(&request);
    if let Ok(body) = serde_json::to_vec(&request) {
        invariants::check_body(&body);
    }
});
