//! Replays every fuzz target's corpus (`fuzz/corpus/TARGET/`) and every input that ever crashed
//! one (`fuzz/regressions/TARGET/`) through the same functions the fuzzers call
//! (`graft::fuzz`), on the stable toolchain, in the default test run: a parser change that
//! panics, aborts or hangs on a known input fails here. The seeds must still be accepted, so
//! the replay also notices a parser that starts refusing valid files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn files(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_crash_input_replays() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, target) in graft::fuzz::TARGETS {
        let seeds = files(&root.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seeds");
        let mut accepted = 0;
        for path in seeds
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            let bytes = std::fs::read(path).unwrap();
            let started = Instant::now();
            // A panic fails the test with the input's name in the message.
            let ok = std::panic::catch_unwind(|| target(&bytes))
                .unwrap_or_else(|_| panic!("{name}: {} panicked", path.display()));
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: {} took {:?}",
                path.display(),
                started.elapsed()
            );
            accepted += usize::from(ok);
            replayed += 1;
        }
        assert!(accepted > 0, "{name}: not one seed is accepted any more");
    }
    assert!(replayed >= 15, "only {replayed} inputs replayed");
}
