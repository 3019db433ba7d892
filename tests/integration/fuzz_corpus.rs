//! The fuzz corpora replayed on stable, without libFuzzer: every file of
//! `fuzz/corpus/<target>/` goes through the same invariant checks as the fuzz targets
//! (`fuzz/checks.rs`, see `fuzz/README.md`), so every seed and every input a fuzzing session
//! kept stays a regression test of the normal suite.

use std::path::{Path, PathBuf};

mod checks {
    include!("../../fuzz/checks.rs");
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Run every file of `dir` through the checks of `target`; the number of files, and the
/// failures as "file: panic message".
fn replay(dir: &Path, target: &str) -> (usize, Vec<String>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("read the corpus directory").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if let Err(panic) = std::panic::catch_unwind(|| checks::check(target, &data)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    (files.len(), failures)
}

#[test]
fn every_corpus_file_keeps_the_fuzz_invariants() {
    let mut failures = Vec::new();
    for target in checks::TARGETS {
        let (count, failed) = replay(&fuzz_dir().join("corpus").join(target), target);
        assert!(count > 0, "fuzz/corpus/{target}/ is empty: nothing was replayed");
        failures.extend(failed);
    }
    assert!(failures.is_empty(), "invariants broken:\n{}", failures.join("\n"));
}

/// Inputs that broke an invariant and wait for a fix (fuzz/README.md, "Known bugs"); once the
/// bug is fixed, move the file to `fuzz/corpus/<target>/` so the test above keeps it.
#[test]
fn known_bug_reproducers_keep_the_fuzz_invariants() {
    let mut failures = Vec::new();
    for target in checks::TARGETS {
        failures.extend(replay(&fuzz_dir().join("regressions").join(target), target).1);
    }
    assert!(failures.is_empty(), "invariants broken:\n{}", failures.join("\n"));
}
