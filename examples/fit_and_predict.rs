//! graft as a library, end to end: generate a small image dataset, fit a classifier with a
//! typed config, watch every epoch through a callback, write the HTML report, and classify new
//! images with the trained run.
//!
//! ```sh
//! cargo run --release --example fit_and_predict            # everything in a temporary folder
//! cargo run --release --example fit_and_predict -- DIR     # keep the data, run and report in DIR
//! ```
//!
//! It trains `resnet_tiny` (a narrow ResNet of the zoo, for smoke runs) from scratch, so it needs
//! no download and runs in seconds. For real transfer learning, name a pretrained backbone and
//! its weights file instead (see the comment at the builder).

use std::path::{Path, PathBuf};

use graft::config::{FitConfig, Strategy};
use graft::optim::OptimizerKind;
use graft::predict::Predictor;
use graft::tensor::DeviceKind;
use graft::train::{Control, FitOptions};
use image::{Rgb, RgbImage};

/// The classes of the generated dataset: a shape, each in its own colour.
const CLASSES: [&str; 3] = ["circle", "square", "triangle"];
/// Side of the generated images, in pixels.
const SIDE: u32 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // glibc's malloc tuned for tensor buffers (what the `graft` binary does first): call it
    // before any other thread starts.
    graft::tune_allocator();

    // Where everything goes: the folder given as the first argument, else a temporary one that
    // is removed at the end.
    let temp = tempfile::tempdir()?;
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let data = root.join("shapes");
    write_dataset(&data, 30, 10)?;
    println!("dataset: {} ({} classes)", data.display(), CLASSES.len());

    // 1. The settings, typed: one method per setting of `graft fit` (same names as its flags
    //    and as the keys of config.toml). `build()` applies the task's defaults to what is not
    //    given and checks everything, as `graft fit` would.
    //    For transfer learning: `.model("resnet18")` or `.model("efficientnet_lite0")` with
    //    the default `.weights("imagenet")` (the published ImageNet weights, downloaded once
    //    into ~/.cache/graft/weights and checked) or a .pth / .safetensors file, and
    //    `Strategy::FineTune` or `Strategy::LinearProbe`. This example trains a tiny network
    //    from scratch so that it runs in a second with no download.
    let cfg = FitConfig::builder()
        .data(format!("folder:{}", data.display())) // DIR/train/CLASS/*.png, DIR/test/...
        .model("resnet_tiny")
        .weights("none")
        .strategy(Strategy::Scratch)
        .image_size(SIDE as usize)
        .optimizer(OptimizerKind::Adam)
        .lr(3e-3)
        .epochs(6)
        .batch_size(16)
        .val_split(0.2)
        .seed(7)
        .out(root.join("run"))
        .build()?;

    // 2. The epoch callback: called after each epoch with its line of metrics.jsonl; it logs,
    //    and stops the run once the validation split is classified perfectly (any criterion
    //    works: the run then ends as with early stopping: evaluated, saved, reported).
    let opts = FitOptions {
        quiet: true, // no progress bars: the callback does the talking
        overwrite: true,
        ..FitOptions::default()
    }
    .on_epoch(|m| {
        let val_accuracy = m.get("val_accuracy").unwrap_or(f64::NAN);
        println!(
            "epoch {}: train loss {:.4}, val loss {:.4}, val accuracy {:.3}, lr {:.1e}, \
             {} steps (last step loss {:.4}), {:.1} s",
            m.epoch,
            m.get("train_loss").unwrap_or(f64::NAN),
            m.get("val_loss").unwrap_or(f64::NAN),
            val_accuracy,
            m.lr,
            m.step_losses.len(),
            m.step_losses.last().copied().unwrap_or(f64::NAN),
            m.seconds,
        );
        if val_accuracy >= 1.0 {
            println!("validation accuracy 1.0: stopping");
            Control::Stop
        } else {
            Control::Continue
        }
    });

    // 3. Fit: trains, evaluates on the test split and saves the run folder (model, metrics,
    //    eval.json, summary.json).
    let summary = graft::run::fit(&cfg, &opts)?;
    println!(
        "test accuracy {:.3} after {} epoch(s){} in {:.1} s; run saved in {}",
        summary.score("test_accuracy").unwrap_or(f64::NAN),
        summary.epochs,
        if summary.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        summary.seconds,
        summary.run_dir.display()
    );

    // 4. The report: one self-contained HTML file (curves, confusion matrix, mistakes).
    let report = graft::report::write_report(&summary.run_dir)?;
    println!("report: {}", report.display());

    // 5. Predictions on images the run has never seen, with the trained run.
    let fresh = root.join("new");
    std::fs::create_dir_all(&fresh)?;
    let mut images = Vec::new();
    for (class, name) in CLASSES.iter().enumerate() {
        let path = fresh.join(format!("{name}.png"));
        draw(class, 1000 + class as u64).save(&path)?;
        images.push(path);
    }
    let predictor = Predictor::from_run(&summary.run_dir, DeviceKind::Cpu)?;
    for p in predictor.predict_images(&images, 2)? {
        let best = &p.top[0];
        println!(
            "{} → {} ({:.1}%)",
            file_name(&p.path),
            best.label,
            best.probability * 100.0
        );
    }
    if std::env::args_os().nth(1).is_none() {
        println!("(a temporary folder: give a folder as argument to keep the run and report)");
    }
    Ok(())
}

/// Writes `DIR/{train,test}/CLASS/NNNN.png`: `train` and `test` images per class.
fn write_dataset(dir: &Path, train: usize, test: usize) -> Result<(), image::ImageError> {
    for (split, n, offset) in [("train", train, 0), ("test", test, 500)] {
        for (class, name) in CLASSES.iter().enumerate() {
            let folder = dir.join(split).join(name);
            std::fs::create_dir_all(&folder)?;
            for i in 0..n {
                let seed = (class * 10_000 + offset + i) as u64;
                draw(class, seed).save(folder.join(format!("{i:04}.png")))?;
            }
        }
    }
    Ok(())
}

/// One image of `class`: its shape in its colour, at a random place and size, on noise.
fn draw(class: usize, seed: u64) -> RgbImage {
    let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let size = 7.0 + rng.next() * 5.0; // half-width of the shape, in pixels
    let cx = size + rng.next() * (SIDE as f64 - 2.0 * size);
    let cy = size + rng.next() * (SIDE as f64 - 2.0 * size);
    let colour = [[220, 60, 50], [60, 180, 70], [60, 90, 220]][class];
    RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
        let inside = match class {
            0 => dx * dx + dy * dy <= size * size,
            1 => dx.abs() <= size * 0.8 && dy.abs() <= size * 0.8,
            _ => dy <= size * 0.8 && dy >= -size && dx.abs() <= (dy + size) * 0.55,
        };
        let noise = (rng.next() * 40.0) as u8;
        if inside {
            Rgb(colour.map(|c: u8| c.saturating_add(noise / 2)))
        } else {
            Rgb([90 + noise, 90 + noise, 90 + noise])
        }
    })
}

/// A tiny deterministic random stream (so that every run draws the same dataset).
struct Lcg(u64);

impl Lcg {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}
