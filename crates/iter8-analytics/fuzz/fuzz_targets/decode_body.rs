//! Raw bytes as a request body: decoded as the server decodes it, validated and assessed.
//! Never panics; every refusal names a field of the request (tests/support/invariants.rs).
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    invariants::check_body(body);
});
