//! Hostile and careless inputs: each gets a clear error naming the file (or the setting) and
//! the fix, within seconds and within 1 GiB of address space — never an abort, a hang, or exit
//! 0 with a meaningless result. Every case here is one that once exhausted memory, hung, or
//! succeeded wrongly (RELIABILITY.md has the table).
//!
//! The `graft` binary runs under `prlimit --as=1GiB` where `prlimit` exists (Linux), so an
//! input that makes graft allocate more fails these tests by aborting instead of refusing.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{write_cifar, write_weights};

/// The address-space limit every command runs under.
const MEMORY_LIMIT: u64 = 1 << 30;
/// No command may take longer (a debug build, two cores).
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn graft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_graft")
}

/// Runs `graft ARGS` with the memory limit and a deadline; panics on a hang.
fn run(args: &[&str]) -> Output {
    let limited = Path::new("/usr/bin/prlimit").exists();
    let mut cmd = if limited {
        let mut c = Command::new("/usr/bin/prlimit");
        c.arg(format!("--as={MEMORY_LIMIT}")).arg(graft_bin());
        c
    } else {
        Command::new(graft_bin())
    };
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            panic!("graft {args:?} ran longer than {TIME_LIMIT:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `graft ARGS` must fail with a message containing every one of `wanted`.
fn refused(args: &[&str], wanted: &[&str]) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "graft {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !err.contains("memory allocation") && !err.contains("panicked"),
        "graft {args:?} aborted instead of refusing:\n{err}"
    );
    for w in wanted {
        assert!(err.contains(w), "graft {args:?}: `{w}` not in:\n{err}");
    }
    // The messages, for RELIABILITY.md's table (`cargo test --test hostile -- --nocapture`).
    println!("REFUSED {}", err.lines().next().unwrap_or(""));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A few pickle opcodes, enough to build hostile state dicts.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(b"\x80\x02".to_vec())
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }
    fn text(&mut self, t: &str) -> &mut Self {
        self.raw(b"X")
            .raw(&(t.len() as u32).to_le_bytes())
            .raw(t.as_bytes())
    }
    fn int(&mut self, v: u64) -> &mut Self {
        self.raw(&[0x8a, 8]).raw(&v.to_le_bytes())
    }
    /// `_rebuild_tensor_v2(storage "0" of `numel` floats, 0, shape, stride, False, {})`.
    fn tensor(&mut self, numel: u64, shape: &[u64], stride: &[u64]) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").raw(b"((");
        self.text("storage").global("torch", "FloatStorage");
        self.text("0")
            .text("cpu")
            .int(numel)
            .raw(b"tQ")
            .int(0)
            .raw(b"(");
        for &d in shape {
            self.int(d);
        }
        self.raw(b"t(");
        for &d in stride {
            self.int(d);
        }
        self.raw(b"t\x89")
            .global("collections", "OrderedDict")
            .raw(b")RtR")
    }
}

/// A PyTorch zip archive holding `pickle` and storage `0`.
fn torch_zip(path: &Path, pickle: &[u8], storage: &[u8]) {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opt = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [
        ("archive/data.pkl", pickle),
        ("archive/data/0", storage),
        ("archive/version", b"3\n".as_slice()),
    ] {
        z.start_file(name, opt).unwrap();
        z.write_all(bytes).unwrap();
    }
    std::fs::write(path, z.finish().unwrap().into_inner()).unwrap();
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().to_path_buf();
    (t, p)
}

#[test]
fn a_pickle_cannot_multiply_its_values() {
    let (_t, dir) = tmp();
    // `torch.Size` applied 140,000 times to one memoized 1,000-item tuple: 1 MB of pickle that
    // copied 140 million items (more than 1 GiB) before calls were budgeted.
    let mut p = Pickle::new();
    p.global("torch", "Size").raw(b"q\x00(");
    for _ in 0..1000 {
        p.raw(b"K\x01");
    }
    p.raw(b"tq\x010");
    for _ in 0..140_000 {
        p.raw(b"h\x00h\x01\x85R0");
    }
    p.raw(b"}.");
    let file = dir.join("bomb.pth");
    torch_zip(&file, &p.0, &[]);
    refused(
        &["inspect", s(&file)],
        &["bomb.pth", "copies far more values"],
    );
}

#[test]
fn views_cannot_expand_a_file_without_bound() {
    let (_t, dir) = tmp();
    // 300 stride-0 views of one stored float, each 4096 x 4096: 19.8 GB from a tiny file.
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").raw(b")R(");
    for i in 0..300 {
        p.text(&format!("w{i}")).tensor(1, &[4096, 4096], &[0, 0]);
    }
    p.raw(b"u.");
    let file = dir.join("views.pth");
    torch_zip(&file, &p.0, &1.0f32.to_le_bytes());
    refused(
        &["inspect", s(&file)],
        &["views.pth", "expands", "refusing"],
    );
}

#[test]
fn a_storage_larger_than_its_file_is_refused_before_reading() {
    let (_t, dir) = tmp();
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").raw(b")R(");
    p.text("w").tensor(1_500_000_000, &[1_500_000_000], &[1]);
    p.raw(b"u.");
    let file = dir.join("big.pth");
    torch_zip(&file, &p.0, &[0; 64]);
    refused(&["inspect", s(&file)], &["big.pth"]);
}

#[test]
fn a_head_of_absurd_width_is_described_not_built() {
    let (_t, dir) = tmp();
    // safetensors: `fc.weight` of shape [4e9, 0] (no data): inspect once built a 4e9-class
    // head to compare shapes.
    let header = r#"{"fc.weight":{"dtype":"F32","shape":[4000000000,0],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let file = dir.join("wide.safetensors");
    std::fs::write(&file, bytes).unwrap();
    let out = run(&["inspect", s(&file)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("matches no model"), "{text}");
}

#[test]
fn gzip_idx_files_are_checked_before_inflating() {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let (_t, dir) = tmp();
    let gz = |bytes: &[u8], trailing_zeros: usize| {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..trailing_zeros >> 20 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    let idx = |magic: u32, dims: &[u32]| {
        let mut h = magic.to_be_bytes().to_vec();
        for d in dims {
            h.extend_from_slice(&d.to_be_bytes());
        }
        h
    };
    let labels = gz(&[idx(0x801, &[2]), vec![0, 1]].concat(), 0);
    // A header declaring 60,000 x 10,000 x 10,000 pixels in a few bytes.
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx(0x803, &[60_000, 10_000, 10_000]), 0),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), &labels).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), &labels).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gz(&[idx(0x803, &[2, 2, 2]), vec![0; 8]].concat(), 0),
    )
    .unwrap();
    let spec = format!("idx:{}", dir.display());
    refused(
        &["inspect", &spec],
        &["train-images-idx3-ubyte.gz", "declares"],
    );
    // Two 2x2 images followed by 256 MiB of zeros: stopped after the declared bytes.
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&[idx(0x803, &[2, 2, 2]), vec![0; 8]].concat(), 256 << 20),
    )
    .unwrap();
    let started = Instant::now();
    refused(
        &["inspect", &spec],
        &["train-images-idx3-ubyte.gz", "trailing bytes"],
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn pipes_and_devices_are_not_read() {
    let (_t, dir) = tmp();
    let f = Fit::new();
    f.refused(
        &["--weights", "/dev/zero", "--image-size", "32"],
        &["/dev/zero", "not a regular file"],
    );
    let fifo = dir.join("weights.pth");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo not available: the FIFO cases are skipped");
        return;
    }
    refused(
        &["inspect", s(&fifo)],
        &["weights.pth", "not a regular file"],
    );
    let w = format!("--weights={}", fifo.display());
    f.refused(
        &[&w, "--image-size", "32"],
        &["weights.pth", "not a regular file"],
    );
    // A FIFO named like an image inside a dataset folder is skipped, not read.
    write_cifar(&dir.join("data"));
    write_weights(&dir.join("tiny.safetensors"));
    let images = dir.join("images");
    for class in ["a", "b"] {
        let d = images.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 40, 0, 0]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    Command::new("mkfifo")
        .arg(images.join("a/trap.jpg"))
        .status()
        .unwrap();
    let out = run(&["inspect", &format!("folder:{}", images.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn symlink_fan_out_is_walked_once() {
    let (_t, dir) = tmp();
    // 15 levels, each with 4 links to the next: 4^15 paths to one image per class.
    for class in ["a", "b"] {
        let root = dir.join("images").join(class);
        let levels: Vec<PathBuf> = (0..=15).map(|i| root.join(format!("d{i}"))).collect();
        for l in &levels {
            std::fs::create_dir_all(l).unwrap();
        }
        for w in levels.windows(2) {
            for link in ["w", "x", "y", "z"] {
                std::os::unix::fs::symlink(&w[1], w[0].join(link)).unwrap();
            }
        }
        for i in 0..5 {
            image::RgbImage::from_pixel(4, 4, image::Rgb([i * 50, 9, 9]))
                .save(levels[15].join(format!("{i}.png")))
                .unwrap();
        }
    }
    let started = Instant::now();
    let out = run(&[
        "inspect",
        &format!("folder:{}", dir.join("images").display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A data set, weights and the common flags of a fit.
struct Fit {
    _t: tempfile::TempDir,
    dir: PathBuf,
}

impl Fit {
    fn new() -> Self {
        let (t, dir) = tmp();
        write_cifar(&dir.join("data"));
        write_weights(&dir.join("tiny.safetensors"));
        Fit { _t: t, dir }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["fit", "--quiet", "--model", "resnet_tiny", "--epochs", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !extra.iter().any(|e| e.starts_with("--data")) {
            a.push(format!(
                "--data=cifar10:{}",
                self.dir.join("data").display()
            ));
        }
        a.push(format!("--out={}", self.dir.join("run").display()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn refused(&self, extra: &[&str], wanted: &[&str]) {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, wanted);
    }
}

#[test]
fn settings_that_make_no_sense_are_refused() {
    let f = Fit::new();
    for (flags, wanted) in [
        (&["--image-size", "100000"][..], &["--image-size"][..]),
        (&["--num-classes", "100000000"], &["--num-classes"]),
        (&["--schedule", "step:1:0"], &["GAMMA must be a positive"]),
        (
            &["--schedule", "step:1:-0.5"],
            &["GAMMA must be a positive"],
        ),
        (&["--momentum=-1"], &["--momentum"]),
        (&["--focal-gamma=-2"], &["--focal-gamma"]),
        (&["--weight-decay=-1"], &["--weight-decay"]),
        (&["--strategy", "partial:99"], &["partial:99", "stages"]),
        (&["--betas", "1.5,0.9"], &["--betas"]),
        (&["--limit-train", "0"], &["--limit-train 0"]),
        (
            &["--limit-train", "3", "--val-split", "0.1"],
            &["holds out no sample"],
        ),
    ] {
        f.refused(flags, wanted);
    }
}

#[test]
fn degenerate_data_is_refused() {
    let f = Fit::new();
    // One class.
    let one = f.dir.join("one");
    for split in ["train", "test"] {
        let d = one.join(split).join("only");
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..4 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 50, 0, 0]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let spec = format!("--data=folder:{}", one.display());
    f.refused(&[&spec, "--image-size", "8"], &["at least two classes"]);
    // No test samples (a folder split with test_fraction 0).
    let two = f.dir.join("two");
    for class in ["a", "b"] {
        let d = two.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..4 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 50, 0, 0]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let spec = format!("--data=folder:{}?test_fraction=0", two.display());
    f.refused(&[&spec, "--image-size", "8"], &["test split is empty"]);
}

#[test]
fn weights_that_cannot_be_right_are_refused() {
    let f = Fit::new();
    let p = graft::model::preset("resnet_tiny").unwrap();
    let model = graft::model::Classifier::new(p, 1000, &burn::tensor::Device::flex());
    let tensors = graft::model::params::named_tensors(&model, p.head_name);
    let write = |name: &str, change: &dyn Fn(&str, &mut Vec<f32>)| {
        let t: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(k, s, v)| {
                let mut v = v.clone();
                change(k, &mut v);
                (k.clone(), s.clone(), v)
            })
            .collect();
        let path = f.dir.join(name);
        graft::weights::save_safetensors(&path, &t).unwrap();
        path
    };
    let nan = write("nan.safetensors", &|k, v| {
        if k == "layer1.0.conv1.weight" {
            v[3] = f32::NAN;
        }
    });
    let negative = write("negvar.safetensors", &|k, v| {
        if k == "bn1.running_var" {
            v[0] = -1.0;
        }
    });
    for (file, wanted) in [(&nan, "NaN"), (&negative, "negative variance")] {
        let w = format!("--weights={}", file.display());
        let name = file.file_name().unwrap().to_str().unwrap();
        f.refused(&[&w, "--image-size", "32"], &[name, wanted]);
    }
    // Integer tensors are not float weights: every tensor as it should be, but one stored as
    // int64 (with the right shape).
    let ints = f.dir.join("ints.safetensors");
    {
        let mut header = String::from("{");
        let mut data: Vec<u8> = Vec::new();
        for (i, (k, shape, v)) in tensors.iter().enumerate() {
            let (dtype, bytes): (&str, Vec<u8>) = if k == "conv1.weight" {
                (
                    "I64",
                    v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
                )
            } else {
                ("F32", v.iter().flat_map(|x| x.to_le_bytes()).collect())
            };
            let start = data.len();
            data.extend_from_slice(&bytes);
            if i > 0 {
                header.push(',');
            }
            header += &format!(
                r#""{k}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{}]}}"#,
                data.len()
            );
        }
        header.push('}');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        std::fs::write(&ints, bytes).unwrap();
    }
    let w = format!("--weights={}", ints.display());
    f.refused(
        &[&w, "--image-size", "32"],
        &["conv1.weight", "float tensor is expected"],
    );
}

#[test]
fn an_edited_model_card_is_bounded_before_use() {
    let f = Fit::new();
    let args = f.args(&[
        &format!("--weights={}", f.dir.join("tiny.safetensors").display()),
        "--image-size",
        "32",
        "--strategy",
        "linear-probe",
        "--json",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = f.dir.join("run/model.json");
    let text = std::fs::read_to_string(&card).unwrap();
    let edited = text.replace("\"num_classes\": 3", "\"num_classes\": 1000000000");
    assert_ne!(text, edited);
    std::fs::write(&card, edited).unwrap();
    let img = f.dir.join("x.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
        .save(&img)
        .unwrap();
    refused(
        &["predict", "--run", s(&f.dir.join("run")), s(&img)],
        &["model.json", "num_classes"],
    );
}
