//! Shared by the parity tests: the deterministic tensors `tools/goldens.py` gives every model,
//! and the golden files it writes.
#![allow(dead_code)]

pub mod scenes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use graft::model::params::named_tensors;
use graft::model::{Classifier, preset};
use graft::weights::{DType, Format, RawTensor, TensorMap};

/// The device the parity tests run on: `cpu` (burn's flex backend with graft's kernels), or the
/// one `GRAFT_TEST_DEVICE` names (`vulkan` in CI's lavapipe run, on a build with `--features
/// vulkan`): the same goldens then check burn's GPU ops. A device that cannot start fails the
/// test instead of skipping it: whoever set the variable asked for that device.
pub fn test_device() -> Device {
    match std::env::var("GRAFT_TEST_DEVICE") {
        Ok(name) => name
            .parse::<graft::tensor::DeviceKind>()
            .and_then(|kind| kind.device())
            .unwrap_or_else(|e| panic!("GRAFT_TEST_DEVICE={name}: {e}")),
        Err(_) => Device::flex(),
    }
}

/// How much wider a tolerance derived from f32 rounding is on the device under test: 1 on the
/// CPU, 2 on a GPU device (`GRAFT_TEST_DEVICE`), whose reductions add in another order (tree
/// sums over workgroups), so the rounding differs from both the CPU's and PyTorch's.
pub fn device_tolerance_factor() -> f64 {
    match std::env::var("GRAFT_TEST_DEVICE").as_deref() {
        Ok("cpu") | Err(_) => 1.0,
        Ok(_) => 2.0,
    }
}

/// Mirrors `name_phase` in tools/goldens.py.
fn name_phase(name: &str) -> u64 {
    name.bytes()
        .enumerate()
        .map(|(i, b)| (i as u64 + 1) * b as u64)
        .sum::<u64>()
        % 997
}

/// Mirrors `det_values`: offset + scale * sin(0.7853981 i + 0.1 phase + 0.3), f64 then f32.
// 0.7853981 is the script's literal, not π/4: both sides must compute the same numbers.
#[allow(clippy::approx_constant)]
pub fn det_values(name: &str, n: usize, scale: f64, offset: f64) -> Vec<f32> {
    let phase = name_phase(name) as f64 * 0.1 + 0.3;
    (0..n)
        .map(|i| (offset + scale * (i as f64 * 0.7853981 + phase).sin()) as f32)
        .collect()
}

/// Mirrors `det_tensor_for`.
pub fn det_tensor_for(key: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product::<usize>().max(1);
    let leaf = key.rsplit('.').next().unwrap_or(key);
    match leaf {
        "running_var" => det_values(key, n, 0.25, 1.0),
        "running_mean" => det_values(key, n, 0.1, 0.0),
        "weight" if shape.len() == 1 => det_values(key, n, 0.1, 1.0),
        "bias" => det_values(key, n, 0.1, 0.0),
        _ => {
            let fan_in: usize = shape[1..].iter().product();
            det_values(key, n, (2.0 / fan_in as f64).sqrt(), 0.0)
        }
    }
}

/// A weight file's worth of deterministic tensors for every tensor `model` has.
pub fn det_weights<M: burn::module::Module>(model: &M, head_name: &str) -> TensorMap {
    let tensors: BTreeMap<String, RawTensor> = named_tensors(model, head_name)
        .into_iter()
        .map(|(key, shape, _)| {
            let data = det_tensor_for(&key, &shape);
            (
                key,
                RawTensor {
                    dtype: DType::F32,
                    shape,
                    data,
                },
            )
        })
        .collect();
    TensorMap {
        format: Format::Safetensors,
        tensors,
    }
}

/// A deterministic input tensor (`det_input` in the script).
pub fn det_input(name: &str, shape: [usize; 4], scale: f64, device: &Device) -> Tensor<4> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(det_values(name, n, scale, 0.0), shape),
        device,
    )
}

/// Reads `tests/fixtures/goldens/NAME`.
pub fn golden(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/goldens")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/goldens.py)", path.display()));
    serde_json::from_str(&text).expect("golden json")
}

/// A JSON array of numbers as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// A JSON array of non-negative integers (labels, class indices).
pub fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

/// A JSON array of strings (photo names).
pub fn strs(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string"))
        .collect()
}

/// max |a - b| over pairs of elements.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// max |a - b| / max |b|: the relative error the parity criteria use.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    num / den.max(1e-12)
}

/// A tensor's values as a Vec.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    graft::tensor::to_vec(t)
}

/// A 3-class CIFAR-10-format dataset: class c has channel c bright, plus noise.
pub fn write_cifar(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 12345u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8 % 96
    };
    let mut record = |label: u8| {
        let mut r = vec![label];
        for c in 0..3u8 {
            for _ in 0..1024 {
                let base = if c == label { 150 } else { 20 };
                r.push(base + noise());
            }
        }
        r
    };
    for (file, n) in [
        ("data_batch_1.bin", 60),
        ("data_batch_2.bin", 60),
        ("data_batch_3.bin", 60),
        ("data_batch_4.bin", 60),
        ("data_batch_5.bin", 60),
        ("test_batch.bin", 60),
    ] {
        let bytes: Vec<u8> = (0..n).flat_map(|i| record((i % 3) as u8)).collect();
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    std::fs::write(dir.join("batches.meta.txt"), "red\ngreen\nblue\n").unwrap();
}

/// Pretrained-looking weights for the tiny model (random, 1000-class head like ImageNet's).
pub fn write_weights(path: &Path) {
    let p = preset("resnet_tiny").unwrap();
    let device = Device::flex();
    device.seed(7);
    let model = Classifier::new(p, 1000, &device);
    graft::weights::save_safetensors(path, &named_tensors(&model, p.head_name)).unwrap();
}

/// A temporary folder holding the small CIFAR-like dataset (`data/`) and the tiny model's
/// pretrained-looking weights (`tiny.safetensors`): what the end-to-end tests fit on. Each test
/// file adds the `fit` it needs in its own `impl TinyFixture`.
pub struct TinyFixture {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl TinyFixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write_cifar(&root.join("data"));
        write_weights(&root.join("tiny.safetensors"));
        Self { _tmp: tmp, root }
    }

    /// The dataset spec of `data/`.
    pub fn data(&self) -> String {
        format!("cifar10:{}", self.root.join("data").display())
    }
}

/// The JSON line a `graft ... --json` command printed last, after checking it succeeded.
pub fn json_line(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "graft failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).expect("valid JSON")
}

/// Headless Chromium, where installed (`/usr/bin/chromium` or on PATH).
pub fn chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// Runs headless Chromium with `args` on `page`; its stdout, or a panic after 120 s.
pub fn run_chromium(bin: &Path, profile: &Path, args: &[String], page: &Path) -> String {
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().ok();
            child.wait().ok();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    reader.join().unwrap()
}
