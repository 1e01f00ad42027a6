//! The inputs a normal test run feeds the fuzz targets: the seed corpus
//! (`fuzz/corpus/<target>/`, plus seeds kept elsewhere in the repository)
//! and every input that once crashed a target (`fuzz/regressions/<target>/`).
//! Included by the test files that run the targets (`#[path]`), so CI
//! exercises them without building the fuzz crate.

use std::path::{Path, PathBuf};

/// Every file in the corpus and regression directories of `target` and in
/// `extra_seed_dirs` (relative to the repository root), with its path.
pub fn inputs(target: &str, extra_seed_dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = [format!("fuzz/corpus/{target}"), format!("fuzz/regressions/{target}")].into_iter().chain(extra_seed_dirs.iter().map(|dir| (*dir).to_owned()));
    let mut inputs = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no seeds for fuzz target {target}");
    inputs
}
