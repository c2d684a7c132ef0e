//! An interrupted run loses nothing and never resumes into a wrong state.
//!
//! A fit is stopped at every named point of its write path (`GRAFT_TEST_CRASH_AT` aborts the
//! process there, as `kill -9` would: inside a checkpoint's files, before and after its commit,
//! after an epoch's metrics line, before the summary) and at timed `SIGKILL`s; each stopped run
//! is resumed and must end bit-identical to a run that was never stopped — the same model file,
//! the same evaluation, the same metrics (timings aside) — with the metrics lines of the epochs
//! it had finished kept byte for byte. A damaged checkpoint is refused by name, never resumed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::{write_cifar, write_weights};

const EPOCHS: usize = 3;

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write_cifar(&root.join("data"));
        write_weights(&root.join("tiny.safetensors"));
        Self { _tmp: tmp, root }
    }

    /// `graft fit` of the crash tests' run into `out` (fine-tune: every layer, BatchNorm
    /// statistics and SGD momentum are in the checkpoint).
    fn fit(&self, out: &str) -> Command {
        let mut cmd = graft();
        cmd.args([
            "fit",
            "--quiet",
            "--json",
            "--model",
            "resnet_tiny",
            "--image-size",
            "32",
        ])
        .args([
            "--strategy",
            "fine-tune",
            "--optimizer",
            "sgd",
            "--lr",
            "0.01",
        ])
        .args([
            "--batch-size",
            "30",
            "--limit-train",
            "120",
            "--val-split",
            "0.25",
        ])
        .args(["--epochs", &EPOCHS.to_string()])
        .arg(format!(
            "--data=cifar10:{}",
            self.root.join("data").display()
        ))
        .arg(format!(
            "--weights={}",
            self.root.join("tiny.safetensors").display()
        ))
        .arg(format!("--out={}", self.root.join(out).display()));
        cmd
    }

    fn resume(&self, out: &str) -> Output {
        graft()
            .args(["fit", "--quiet", "--json", "--resume"])
            .arg(self.root.join(out))
            .output()
            .unwrap()
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "graft failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What must come out identical: the model's bytes, the evaluation, the metrics without their
/// timings, the summary's numbers.
fn outcome(run: &Path) -> (Vec<u8>, String, Vec<serde_json::Value>, serde_json::Value) {
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    let eval = std::fs::read_to_string(run.join("eval.json")).unwrap();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect();
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for k in ["seconds", "run_dir"] {
        summary.as_object_mut().unwrap().remove(k);
    }
    (model, eval, metrics, summary)
}

/// The complete metrics lines a stopped run had written.
fn finished_lines(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(str::to_string)
        .collect()
}

/// The epoch the committed checkpoint is after (0: none yet).
fn committed_epoch(run: &Path) -> usize {
    std::fs::read_to_string(run.join("checkpoint/LATEST"))
        .ok()
        .and_then(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("epoch-")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Resumes the stopped run `name` and checks it against the uninterrupted `reference`.
fn resume_and_compare(fx: &Fixture, name: &str, reference: &Path, how: &str) {
    let run = fx.root.join(name);
    let kept = committed_epoch(&run);
    let before = finished_lines(&run);
    let out = fx.resume(name);
    ok(&out);
    let after = finished_lines(&run);
    assert_eq!(
        before[..kept.min(before.len())],
        after[..kept.min(before.len())],
        "{how}: the finished epochs' metrics lines changed on resume"
    );
    assert!(
        outcome(&run) == outcome(reference),
        "{how}: the resumed run differs from the uninterrupted one"
    );
}

#[test]
fn a_run_stopped_anywhere_resumes_to_the_same_result() {
    let fx = Fixture::new();
    ok(&fx.fit("reference").output().unwrap());
    let reference = fx.root.join("reference");
    let mut points: Vec<String> = Vec::new();
    for n in 1..=EPOCHS {
        points.push(format!("metrics-appended:{n}"));
        points.push(format!("checkpoint-before-commit:{n}"));
        points.push(format!("checkpoint-after-commit:{n}"));
    }
    for n in 1..=2 * EPOCHS {
        points.push(format!("checkpoint-file:{n}"));
    }
    points.push("before-summary:1".into());
    for (i, point) in points.iter().enumerate() {
        let name = format!("crash-{i}");
        let out = fx
            .fit(&name)
            .env("GRAFT_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the run did not stop");
        resume_and_compare(&fx, &name, &reference, point);
    }
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_same_result() {
    let fx = Fixture::new();
    let started = std::time::Instant::now();
    ok(&fx.fit("reference").output().unwrap());
    let whole = started.elapsed();
    let reference = fx.root.join("reference");
    // Kill times spread over the run (a fixed pseudo-random sequence: reproducible).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for trial in 0..6 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let at = whole.mul_f64(((state >> 11) as f64 / (1u64 << 53) as f64) * 0.9 + 0.05);
        let name = format!("killed-{trial}");
        let mut child = fx
            .fit(&name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let how = format!("SIGKILL after {at:?} (exit {status:?})");
        if !fx.root.join(&name).join("config.toml").exists() {
            // Killed before the run folder existed: nothing to resume, nothing lost.
            continue;
        }
        resume_and_compare(&fx, &name, &reference, &how);
    }
}

#[test]
fn a_damaged_checkpoint_is_refused_by_name() {
    let fx = Fixture::new();
    let out = fx
        .fit("flipped")
        .env("GRAFT_TEST_CRASH_AT", "metrics-appended:2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let run = fx.root.join("flipped");
    let model = run.join("checkpoint/epoch-0001/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x80; // one weight's sign
    std::fs::write(&model, bytes).unwrap();
    let out = fx.resume("flipped");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bit-flipped checkpoint was resumed"
    );
    assert!(
        err.contains("damaged") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn a_run_folder_is_never_silently_replaced_or_shared() {
    let fx = Fixture::new();
    ok(&fx.fit("run").output().unwrap());
    let summary = std::fs::read(fx.root.join("run/summary.json")).unwrap();
    // Fitting into a folder that holds a run is refused, and the run is left as it was.
    let out = fx.fit("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(fx.root.join("run/summary.json")).unwrap(),
        summary
    );
    // Explicitly replaced, it is.
    ok(&fx.fit("run").arg("--overwrite").output().unwrap());
    // Two processes never write one folder: the second is refused while the first holds it.
    let lock = graft::train::run_dir::lock(&fx.root.join("run")).unwrap();
    let out = fx.fit("run").arg("--overwrite").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another graft process"),
        "{err}"
    );
    drop(lock);
    std::thread::sleep(Duration::from_millis(10));
    ok(&fx.fit("run").arg("--overwrite").output().unwrap());
}
