//! Replays every fuzz corpus (`fuzz/corpus/TARGET/*`, the seeds, what the fuzzers kept, and
//! every input that once crashed a harness) through the harnesses the cargo-fuzz targets call,
//! with the stable toolchain: what the fuzzers found stays fixed. `tools/fuzz.sh` runs the
//! fuzzers themselves (nightly).

use std::path::Path;

fn replay(target: &str) {
    let harness = dmastub::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no harness {target}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: an empty corpus", dir.display());
    for f in &files {
        let data = std::fs::read(f).expect("corpus file");
        // A panic names the file: `cargo +nightly fuzz run TARGET FILE` reproduces it.
        eprintln!("{target}: {}", f.display());
        harness(&data);
    }
    eprintln!("{target}: replayed {} inputs", files.len());
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in dmastub::fuzzing::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
        assert!(dir.is_dir(), "no corpus for {name} at {}", dir.display());
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs")).is_file());
    }
}

#[test]
fn image() {
    replay("image");
}

#[test]
fn btf() {
    replay("btf");
}

#[test]
fn kallsyms() {
    replay("kallsyms");
}

#[test]
fn walkers() {
    replay("walkers");
}

#[test]
fn page_walk() {
    replay("page_walk");
}

#[test]
fn monitor() {
    replay("monitor");
}

#[test]
fn nettlp() {
    replay("nettlp");
}

#[test]
fn protocol() {
    replay("protocol");
}
