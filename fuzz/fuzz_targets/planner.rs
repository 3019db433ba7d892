// Fuzz target `planner`: the invariants are in ../checks.rs (shared with the corpus replay test
// tests/integration/fuzz_corpus.rs); README.md describes them and the input format.
#![no_main]

#[allow(dead_code)]
mod checks {
    include!("../checks.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_planner(data));
