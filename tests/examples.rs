//! The examples run, not only build: `examples/fit_and_predict.rs` fits, reports and predicts,
//! exits 0 and prints what it says it does.
//!
//! `cargo test --all-targets` (CI) builds the examples with the tests, beside them in
//! `target/<profile>/examples/`; when the example is missing there, or older than its source
//! (`cargo test --test examples` alone), this builds it with the same profile first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`: the test executable runs from `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps")
        .to_path_buf()
}

/// The built example `name`, built first when missing or stale.
fn example(name: &str) -> PathBuf {
    let dir = profile_dir();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&bin), modified(&source)) {
        (Some(b), Some(s)) => b < s,
        _ => true,
    };
    if stale {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

#[test]
fn fit_and_predict_runs_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(example("fit_and_predict"))
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The callback's line per epoch, with the steps of the epoch.
    assert!(
        stdout.contains("epoch 1: train loss") && stdout.contains("steps (last step loss"),
        "{stdout}"
    );
    assert!(stdout.contains("test accuracy"), "{stdout}");
    // The report exists where it says.
    let report = dir.path().join("run").join("report.html");
    assert!(
        stdout.contains(&format!("report: {}", report.display())),
        "{stdout}"
    );
    assert!(report.is_file());
    // One prediction line per new image, each naming a class.
    for name in ["circle", "square", "triangle"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}.png → ")))
            .unwrap_or_else(|| panic!("no prediction for {name}.png:\n{stdout}"));
        assert!(
            ["circle", "square", "triangle"]
                .iter()
                .any(|c| line.contains(&format!("→ {c} ("))),
            "{line}"
        );
    }
    // The run's metrics.jsonl has every epoch's step losses.
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(!m["step_losses"].as_array().unwrap().is_empty(), "{line}");
    }
}
