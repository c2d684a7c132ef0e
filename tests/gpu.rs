//! The GPU code path end to end (a build with `--features vulkan`; CI runs it on Mesa's
//! lavapipe, a Vulkan driver on the CPU): a fine-tune on `--device vulkan`, its checkpoint
//! evaluated and resumed on the CPU, and a CPU run's model predicting on the GPU, each giving the
//! numbers of the other device within float tolerance. The layer-by-layer parity on the GPU is
//! tests/parity.rs and tests/text_parity.rs run with `GRAFT_TEST_DEVICE=vulkan`.
//!
//! Without a Vulkan driver these tests say so and pass, unless `GRAFT_REQUIRE_GPU` is set (CI
//! sets it: there a missing driver is a failure, not a skip).
#![cfg(feature = "wgpu")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{TinyFixture, json_line};
use graft::tensor::DeviceKind;

fn gpu_available() -> bool {
    match DeviceKind::Vulkan.device() {
        Ok(_) => true,
        Err(e) if std::env::var_os("GRAFT_REQUIRE_GPU").is_some() => {
            panic!("GRAFT_REQUIRE_GPU is set but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

fn graft(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

impl TinyFixture {
    /// A fine-tune of the tiny ResNet on `device`, one epoch.
    fn fit(&self, run: &str, device: &str) -> (PathBuf, serde_json::Value) {
        let out = self.root.join(run);
        let data = self.data();
        let result = json_line(&graft(
            &[
                "fit",
                "--model",
                "resnet_tiny",
                "--data",
                &data,
                "--image-size",
                "32",
                "--strategy",
                "fine-tune",
                "--epochs",
                "1",
                "--batch-size",
                "30",
                "--val-split",
                "0.1",
                "--device",
                device,
                "--json",
                "--quiet",
            ],
            &[
                ("--weights", &self.root.join("tiny.safetensors")),
                ("--out", &out),
                ("--cache-dir", &self.root.join("cache")),
            ],
        ));
        (out, result)
    }
}

fn eval(run: &Path, device: &str) -> serde_json::Value {
    json_line(&graft(
        &["eval", "--json", "--device", device],
        &[("--run", run)],
    ))
}

/// `graft eval` of `run` on the GPU and on the CPU: the same weights on two devices, so the test
/// loss agrees to float rounding (1e-4 relative: the GPU sums its reductions in another order)
/// and so do the predictions (accuracy).
fn evaluates_the_same_on_both_devices(run: &Path) {
    let (on_gpu, on_cpu) = (eval(run, "vulkan"), eval(run, "cpu"));
    let loss = |e: &serde_json::Value| e["mean_loss"].as_f64().unwrap();
    let (lg, lc) = (loss(&on_gpu), loss(&on_cpu));
    assert!(
        (lg - lc).abs() <= 1e-4 * lg.abs().max(lc.abs()).max(1.0),
        "test loss: gpu {lg}, cpu {lc}"
    );
    assert_eq!(on_gpu["accuracy"], on_cpu["accuracy"]);
}

#[test]
fn a_run_trained_on_the_gpu_evaluates_and_resumes_on_the_cpu() {
    if !gpu_available() {
        return;
    }
    let f = TinyFixture::new();
    let (run, fitted) = f.fit("gpu-run", "vulkan");
    assert_eq!(fitted["epochs"], 1, "{fitted}");
    evaluates_the_same_on_both_devices(&run);
    // The checkpoint written on the GPU goes on on the CPU.
    let resumed = json_line(&graft(
        &[
            "fit", "--json", "--quiet", "--epochs", "2", "--device", "cpu",
        ],
        &[("--resume", &run)],
    ));
    assert_eq!(resumed["epochs"], 2, "{resumed}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("device = \"cpu\""), "{config}");
}

#[test]
fn a_cpu_run_predicts_the_same_on_the_gpu() {
    if !gpu_available() {
        return;
    }
    let f = TinyFixture::new();
    let (run, _) = f.fit("cpu-run", "cpu");
    evaluates_the_same_on_both_devices(&run);
}

#[test]
fn an_unknown_or_absent_device_is_a_clear_error() {
    let f = TinyFixture::new();
    let out = graft(
        &["fit", "--device", "tpu", "--data", &f.data()],
        &[("--out", &f.root.join("x"))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu, vulkan, wgpu or cuda"), "{err}");
}
