//! `graft report` on run, comparison and cross-validation folders built here: every chart is
//! present with its id, text is escaped, misclassified images are inlined from the dataset, the
//! page needs nothing from outside, and (when Chromium is installed) a headless browser renders it.

use std::path::{Path, PathBuf};

mod common;

use base64::Engine as _;
use common::{chromium, run_chromium};
use graft::config::{FitConfig, Strategy};
use graft::metrics::MetricsAccumulator;
use graft::optim::Schedule;
use graft::report::{write_compare_report, write_cv_report, write_report, write_run_report};
use graft::task::image_classification::ModelCard;

// ---------------------------------------------------------------------------------------------
// fixtures

/// Class names, one needing escaping.
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "<cat> & \"dog\"",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const ESCAPED_CLASS: &str = "&lt;cat&gt; &amp; &quot;dog&quot;";
const TEST_SAMPLES: usize = 40;

/// A recognisable 32x32 picture per sample: a class-coloured square on a gradient.
fn pixel(index: usize, c: usize, y: usize, x: usize) -> u8 {
    let label = index % 10;
    let inside = (8..24).contains(&y) && (8..24).contains(&x);
    if inside {
        [
            (label * 25) as u8,
            (255 - label * 25) as u8,
            ((label * 70) % 256) as u8,
        ][c]
    } else {
        ((x * 4 + y * 2 + index * 5 + c * 40) % 256) as u8
    }
}

fn record(index: usize) -> Vec<u8> {
    let mut r = vec![(index % 10) as u8];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                r.push(pixel(index, c, y, x));
            }
        }
    }
    r
}

/// A CIFAR-10 folder: 5 small training batches, a 40-image test batch, and class names.
fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..5 {
        let bytes: Vec<u8> = (0..2).flat_map(|r| record(1000 + f * 2 + r)).collect();
        std::fs::write(dir.join(format!("data_batch_{}.bin", f + 1)), bytes).unwrap();
    }
    let test: Vec<u8> = (0..TEST_SAMPLES).flat_map(record).collect();
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), CLASSES.join("\n")).unwrap();
}

/// The samples the fake model gets wrong (every fourth), and what it predicts for them.
fn prediction(index: usize) -> usize {
    let label = index % 10;
    if index.is_multiple_of(4) {
        (label + 3) % 10
    } else {
        label
    }
}

/// The pretrained weights file every fixture run names (never read by a report).
const WEIGHTS: &str = "/pretrained/resnet18-f37072fd.pth";

/// A finished run folder over the dataset spec `data`.
fn write_run(run: &Path, data: &str) {
    write_run_with(run, data, 1.0, |_| {});
}

/// `metrics.jsonl` of 8 epochs whose validation scores are scaled by `quality` (a worse run
/// has a higher loss and a lower accuracy), written as text (as older graft versions did: no
/// `step_losses`).
fn write_metrics(run: &Path, quality: f64) {
    let mut lines = String::new();
    for e in 1..=8 {
        let t = e as f64;
        let m = serde_json::json!({
            "epoch": e,
            "train_loss": 2.3 / t,
            "train_accuracy": 1.0 - 0.9 / t,
            "val_loss": (2.4 / t + 0.05 * t / 8.0) / quality,
            "val_accuracy": (0.95 - 0.85 / t) * quality,
            "lr": 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (t - 1.0) / 8.0).cos()),
            "seconds": 1.5,
        });
        lines += &m.to_string();
        lines.push('\n');
    }
    std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
}

/// [`write_run`] with validation curves scaled by `quality` and the settings changed by
/// `edit`.
fn write_run_with(run: &Path, data: &str, quality: f64, edit: impl FnOnce(&mut FitConfig)) {
    std::fs::create_dir_all(run).unwrap();
    let mut cfg = FitConfig {
        model: "resnet18".into(),
        weights: WEIGHTS.into(),
        data: data.into(),
        strategy: Strategy::FineTune,
        schedule: Schedule::Cosine,
        epochs: 8,
        out: Some(run.to_path_buf()),
        ..FitConfig::default()
    };
    edit(&mut cfg);
    std::fs::write(run.join("config.toml"), cfg.to_toml()).unwrap();
    write_metrics(run, quality);

    let mut acc = MetricsAccumulator::new(10, &[1, 5]);
    for start in (0..TEST_SAMPLES).step_by(16) {
        let end = (start + 16).min(TEST_SAMPLES);
        let indices: Vec<usize> = (start..end).collect();
        let labels: Vec<usize> = indices.iter().map(|i| i % 10).collect();
        let mut logits = vec![0.0f32; indices.len() * 10];
        for (row, &i) in indices.iter().enumerate() {
            logits[row * 10 + prediction(i)] = 3.0;
            logits[row * 10 + i % 10] += 1.0;
        }
        acc.add_indexed(&logits, &labels, &indices, 0.7);
    }
    let names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
    let eval = acc.finish(&names);
    std::fs::write(
        run.join("eval.json"),
        serde_json::to_string_pretty(&eval).unwrap(),
    )
    .unwrap();
    let card = ModelCard {
        model: "resnet18".into(),
        num_classes: 10,
        class_names: names,
        image_size: 32,
        resize: graft::data::Resize::ShorterCrop,
        data: data.into(),
        strategy: "fine-tune".into(),
    };
    std::fs::write(
        run.join("model.json"),
        serde_json::to_string_pretty(&card).unwrap(),
    )
    .unwrap();
}

/// A data set folder and a run over it, in a fresh temp dir.
fn run_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_cifar10(&data);
    let run = tmp.path().join("run");
    write_run(&run, &format!("cifar10:{}", data.display()));
    (tmp, run)
}

/// The `<section id="...">` element of `html`, up to its end.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id {id}"));
    let end = html[start..]
        .find("</section>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// For a person to look at: with `GRAFT_REPORT_ARTIFACTS=DIR`, keeps a copy of `file` as `DIR/name`.
fn keep(file: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("GRAFT_REPORT_ARTIFACTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(file, dir.join(name)).unwrap();
    }
}

fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    for bad in [
        "<script",
        "<link",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(",
    ] {
        assert!(
            !html.contains(bad),
            "the page references something outside: {bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// run report

#[test]
fn run_report_has_every_chart_and_the_misclassified_images() {
    let (_tmp, run) = run_fixture();
    let path = write_report(&run).unwrap();
    assert_eq!(path, run.join("report.html"));
    let html = std::fs::read_to_string(&path).unwrap();
    assert_self_contained(&html);
    assert!(
        html.contains("<title>resnet18 on cifar10:"),
        "title names model and data"
    );
    assert!(html.contains("fine-tune"));
    for id in [
        "loss-curve",
        "accuracy-curve",
        "lr-curve",
        "confusion-matrix",
        "per-class",
    ] {
        let s = section(&html, id);
        assert!(s.contains("<svg"), "{id} has no chart");
    }
    assert!(section(&html, "loss-curve").contains("val loss"));
    assert!(section(&html, "accuracy-curve").contains("train accuracy"));
    // Headline numbers: 30 of 40 right; top-5 covers all.
    assert!(
        html.contains("75.00%") && html.contains("100.00%"),
        "accuracy and top-5 shown"
    );
    assert!(html.contains("macro F1"));

    // Class names are escaped in the table, the charts and the captions; never raw.
    assert!(!html.contains("<cat>"));
    assert!(section(&html, "per-class").contains(ESCAPED_CLASS));
    assert!(section(&html, "confusion-matrix").contains(ESCAPED_CLASS));

    // The settings table: model, the weights' file name (not its folder), the recipe.
    let settings = section(&html, "settings");
    for want in [
        ">resnet18<",
        ">resnet18-f37072fd.pth<",
        ">fine-tune<",
        ">image-classification<",
        ">cosine per epoch<",
        ">weight decay<",
        ">batch size<",
        ">64<",
        ">device / kernels<",
    ] {
        assert!(settings.contains(want), "settings lack {want}: {settings}");
    }
    assert!(
        !settings.contains("/pretrained/"),
        "the weights' file name only"
    );
    // metrics.jsonl has no step losses (an older run): no step chart, and no error.
    assert!(!html.contains("id=\"step-loss-curve\""));

    // No model.safetensors: the per-sample losses can't be computed, so the section shows
    // eval.json's ten wrong samples (0, 4, ..., 36), each as an inline PNG of the right test
    // image, with the lower bound of its loss, and says why.
    let grid = section(&html, "misclassified");
    assert!(
        grid.contains("Per-sample losses are not available: the run has no model.safetensors"),
        "{grid}"
    );
    assert!(grid.contains("loss ≥ "), "lower bounds are marked");
    assert!(
        grid.contains(">test #4<"),
        "CIFAR samples are named by index"
    );
    let imgs: Vec<&str> = grid
        .split("<img src=\"data:image/png;base64,")
        .skip(1)
        .collect();
    assert_eq!(imgs.len(), 10);
    // (Equal probabilities round differently: the tiles' order among equals is not fixed.)
    let four = &grid[grid.find("data-index=\"4\"").expect("sample 4 is shown")..];
    let four = &four[four.find("base64,").unwrap() + 7..];
    let b64 = &four[..four.find('"').unwrap()];
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    for (x, y) in [(0, 0), (16, 16), (31, 5)] {
        let want: Vec<u8> = (0..3).map(|c| pixel(4, c, y, x)).collect();
        assert_eq!(
            img.get_pixel(x as u32, y as u32).0.to_vec(),
            want,
            "pixel ({x}, {y}) of sample 4"
        );
    }
    // Sample 4 is a deer (4) predicted as 7 (horse); sample 0 an airplane taken for the cat class.
    assert!(
        grid.contains("deer → horse (0."),
        "caption true → predicted (p)"
    );
    assert!(grid.contains(&format!("airplane → {ESCAPED_CLASS} (0.")));

    // No model.safetensors in this fixture: the heat-map section says so.
    assert!(section(&html, "heatmaps").contains("no model.safetensors"));

    // The explicit entry point writes the same page.
    let again = write_run_report(&run).unwrap();
    assert_eq!(std::fs::read_to_string(again).unwrap(), html);
}

#[test]
fn run_report_says_when_the_dataset_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(
        &run,
        &format!("cifar10:{}", tmp.path().join("moved-away").display()),
    );
    let html = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    let grid = section(&html, "misclassified");
    assert!(grid.contains("Could not open the dataset"), "{grid}");
    assert!(!grid.contains("<img"));
    assert!(grid.contains("deer → horse"), "captions are still listed");
}

#[test]
fn run_report_of_an_unfinished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    // One epoch so far, whose loss diverged (serde_json writes NaN as null); no eval.json.
    std::fs::write(
        run.join("metrics.jsonl"),
        "{\"epoch\":1,\"train_loss\":null,\"train_accuracy\":0.1,\"val_loss\":null,\"val_accuracy\":null,\"lr\":0.1,\"seconds\":2.0}\n",
    )
    .unwrap();
    let html = std::fs::read_to_string(write_report(run).unwrap()).unwrap();
    assert!(section(&html, "accuracy-curve").contains("<svg"));
    assert!(section(&html, "lr-curve").contains("<svg"));
    assert!(section(&html, "loss-curve").contains("Nothing to plot"));
    assert!(section(&html, "confusion-matrix").contains("No eval.json yet"));
    assert!(section(&html, "misclassified").contains("No eval.json yet"));
}

#[test]
fn bad_files_are_named_in_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = write_report(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains(&tmp.path().display().to_string()) && err.contains("nothing to report"),
        "{err}"
    );

    let missing = tmp.path().join("nope");
    assert!(
        write_report(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );

    std::fs::write(
        tmp.path().join("metrics.jsonl"),
        "{\"epoch\":1}\nnot json\n",
    )
    .unwrap();
    let err = write_run_report(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("line 2"),
        "{err}"
    );

    std::fs::write(tmp.path().join("compare.json"), "{\"cells\": 3}").unwrap();
    let err = write_report(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("compare.json"), "{err}");

    std::fs::write(tmp.path().join("cv.json"), "[").unwrap();
    let err = write_cv_report(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("cv.json"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// a run with a model: top losses, Grad-CAM over them, step losses, a training batch

/// The classes of the folder dataset, in the order a folder dataset numbers them.
const FOLDER_CLASSES: [&str; 3] = ["blue", "green", "red"];
const FOLDER_TEST_PER_CLASS: usize = 5;

/// `DIR/{train,test}/<class>/NN.png`: 32x32 pictures, the class's channel bright.
fn write_folder(root: &Path) {
    for (split, n) in [("train", 8), ("test", FOLDER_TEST_PER_CLASS)] {
        for (c, name) in FOLDER_CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let v =
                        |k: usize| ((x as usize * (3 + k) + y as usize * 5 + i * 37) % 90) as u8;
                    image::Rgb(std::array::from_fn(|k| {
                        if k == c { 150 + v(k) } else { 20 + v(k) }
                    }))
                });
                img.save(dir.join(format!("{i:02}.png"))).unwrap();
            }
        }
    }
}

/// One test sample as the report should show it.
struct Expected {
    index: usize,
    loss: f32,
    path: String,
}

/// A finished run of `resnet_tiny` (random weights, 3 classes) over a folder dataset, with
/// `eval.json` from the model itself, and what each test sample's loss is.
fn model_run_fixture() -> (tempfile::TempDir, PathBuf, Vec<Expected>) {
    use graft::data::{Pipeline, Resize};
    use graft::model::params::named_tensors;
    use graft::model::{Classifier, preset};
    use rand::SeedableRng;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    write_folder(&data);
    let spec = format!("folder:{}", data.display());
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let p = preset("resnet_tiny").unwrap();
    let device = burn::tensor::Device::flex();
    let model = Classifier::new(p, 3, &device);
    graft::weights::save_safetensors(
        &run.join("model.safetensors"),
        &named_tensors(&model, p.head_name),
    )
    .unwrap();
    let names: Vec<String> = FOLDER_CLASSES.iter().map(|s| s.to_string()).collect();
    let card = ModelCard {
        model: "resnet_tiny".into(),
        num_classes: 3,
        class_names: names.clone(),
        image_size: 32,
        resize: Resize::Exact,
        data: spec.clone(),
        strategy: "fine-tune".into(),
    };
    std::fs::write(
        run.join("model.json"),
        serde_json::to_string_pretty(&card).unwrap(),
    )
    .unwrap();
    let cfg = FitConfig {
        model: "resnet_tiny".into(),
        weights: WEIGHTS.into(),
        data: spec.clone(),
        image_size: Some(32),
        resize: Resize::Exact,
        batch_size: 4,
        epochs: 2,
        out: Some(run.clone()),
        ..FitConfig::default()
    };
    std::fs::write(run.join("config.toml"), cfg.to_toml()).unwrap();
    // Two epochs of five optimizer steps each, one of them NaN (a diverged step).
    let lines = [
        serde_json::json!({"epoch": 1, "train_loss": 1.05, "train_accuracy": 0.4,
            "val_loss": 1.0, "val_accuracy": 0.5, "lr": 1e-3, "seconds": 1.0,
            "step_losses": [1.2, 1.1, 1.0, null, 0.9]}),
        serde_json::json!({"epoch": 2, "train_loss": 0.67, "train_accuracy": 0.6,
            "val_loss": 0.8, "val_accuracy": 0.6, "lr": 1e-3, "seconds": 1.0,
            "step_losses": [0.8, 0.7, 0.75, 0.6, 0.5]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();

    // Every test sample's logits, as graft's inference copy of the model computes them.
    let (model, _, _) = graft::task::image_classification::load_run(&run, &device).unwrap();
    let model = model.folded_for_inference();
    let test = graft::data::open(&spec).unwrap().test;
    let pipe = Pipeline::eval(32, p.mean, p.std, Resize::Exact).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut acc = MetricsAccumulator::new(3, &[1]);
    let mut expected = Vec::new();
    for k in 0..test.len() {
        let (pixels, [c, h, w]) = pipe.apply(&test.load(k).unwrap(), &mut rng).unwrap();
        let x = graft::tensor::from_vec(pixels, [1, c, h, w], &device);
        let logits = graft::tensor::to_vec(model.forward(x));
        let label = test.label(k);
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        let index = test.indices[k];
        acc.add_indexed(&logits, &[label], &[index], f64::from(lse - logits[label]));
        let path = PathBuf::from(test.describe(k));
        expected.push(Expected {
            index,
            loss: lse - logits[label],
            path: path.strip_prefix(&data).unwrap().display().to_string(),
        });
    }
    let eval = acc.finish(&names).with_data(&spec);
    std::fs::write(
        run.join("eval.json"),
        serde_json::to_string_pretty(&eval).unwrap(),
    )
    .unwrap();
    (tmp, run, expected)
}

/// The values of attribute `name` on the elements of `html` carrying `class="CLASS"`, in order.
fn attr_values(html: &str, class: &str, name: &str) -> Vec<String> {
    html.split(&format!("class=\"{class}\""))
        .skip(1)
        .map(|tail| {
            let head = &tail[..tail.find('>').unwrap()];
            let start = head
                .find(&format!("{name}=\""))
                .unwrap_or_else(|| panic!("no {name} in {head}"))
                + name.len()
                + 2;
            head[start..start + head[start..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn top_losses_are_the_test_images_of_highest_loss_with_their_files() {
    let (_tmp, run, expected) = model_run_fixture();
    let html = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    keep(&run.join("report.html"), "run-top-losses.html");
    assert_self_contained(&html);
    let grid = section(&html, "misclassified");
    assert!(!grid.contains("not available"), "{grid}");

    // Every test image (15 < the 32 shown), highest loss first, with graft's losses.
    let losses: Vec<f32> = attr_values(grid, "top-loss", "data-loss")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 3 * FOLDER_TEST_PER_CLASS);
    assert!(
        losses.windows(2).all(|w| w[0] >= w[1]),
        "not in descending order: {losses:?}"
    );
    let mut want: Vec<&Expected> = expected.iter().collect();
    want.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    for (got, want) in losses.iter().zip(&want) {
        assert!((got - want.loss).abs() < 1e-4, "{got} vs {}", want.loss);
    }
    // Each tile names its file relative to the data folder, and is that file's picture.
    let indices: Vec<usize> = attr_values(grid, "top-loss", "data-index")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let figures: Vec<&str> = grid.split("<figure class=\"top-loss\"").skip(1).collect();
    for (figure, index) in figures.iter().zip(&indices) {
        let e = expected.iter().find(|e| e.index == *index).unwrap();
        assert!(e.path.starts_with("test/"), "{}", e.path);
        assert!(
            figure.contains(&format!("<span class=\"caption path\">{}</span>", e.path)),
            "{figure}"
        );
        assert!(figure.contains(&format!("loss {:.2}", e.loss)), "{figure}");
        let class = e.path.split('/').nth(1).unwrap();
        assert!(
            figure.contains(&format!("{class} → ")) || figure.contains(&format!("{class} ✓")),
            "the caption starts with the true class: {figure}"
        );
        assert_eq!(
            figure.matches("<img src=\"data:image/png;base64,").count(),
            1
        );
    }
    assert!(
        !grid.contains(&_tmp.path().display().to_string()),
        "paths are relative"
    );

    // Grad-CAM maps over the same tiles, highest loss first.
    let heat = section(&html, "heatmaps");
    assert!(heat.contains("<h3>Highest losses</h3>"), "{heat}");
    let first_map = &heat[heat.find("<figure data-index=\"").unwrap() + 20..];
    assert_eq!(
        first_map[..first_map.find('"').unwrap()]
            .parse::<usize>()
            .unwrap(),
        indices[0]
    );

    // The losses are kept beside the run: the next report reads them back, the same page.
    assert!(run.join("test-losses.json").is_file());
    let again = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    assert_eq!(again, html);
}

#[test]
fn run_report_charts_the_loss_of_every_step() {
    let (_tmp, run, _) = model_run_fixture();
    let html = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    let steps = section(&html, "step-loss-curve");
    assert!(steps.contains("<svg"), "{steps}");
    assert!(steps.contains("loss per step") && steps.contains("mean of the epoch"));
    assert!(
        steps.contains("optimizer step"),
        "x axis is the global step"
    );
    assert!(
        steps.contains("10 optimizer steps over 2 epochs"),
        "{steps}"
    );
    // Ticks run to the tenth step: the second epoch continues the first's count.
    assert!(steps.contains("\n10\n</text>"), "{steps}");
    // The other curves stay per epoch.
    assert!(section(&html, "loss-curve").contains("epoch"));
}

#[test]
fn run_report_shows_a_batch_of_augmented_training_images() {
    let (_tmp, run, _) = model_run_fixture();
    let html = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    let batch = section(&html, "train-batch");
    assert!(batch.contains("random_crop(32,pad=4)") && batch.contains("random_hflip"));
    let imgs: Vec<&str> = batch
        .split("<img src=\"data:image/png;base64,")
        .skip(1)
        .collect();
    assert_eq!(imgs.len(), 16, "a batch of 16 training images");
    let mut differs_from_file = false;
    for tail in &imgs {
        let png = base64::engine::general_purpose::STANDARD
            .decode(&tail[..tail.find('"').unwrap()])
            .unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (32, 32), "at the run's image size");
        // Padding of the random crop shows as black (0 after un-normalising) borders on some.
        differs_from_file |= img.pixels().any(|p| p.0 == [0, 0, 0]);
        let caption = &tail[tail.find("<figcaption>").unwrap() + 12..];
        let caption = &caption[..caption.find('<').unwrap()];
        assert!(FOLDER_CLASSES.contains(&caption), "{caption}");
    }
    assert!(differs_from_file, "no image shows the crop's padding");
    // Deterministic: the same images every time.
    let again = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    assert_eq!(section(&again, "train-batch"), batch);
    let settings = section(&html, "settings");
    assert!(settings.contains(">resnet_tiny<") && settings.contains(">32 px<"));
}

/// A tiny BERT (2 layers, the fixture tokenizer) as a finished text run with random weights
/// over generated texts; `eval.json` from the model itself, and each test text's loss.
#[test]
fn text_top_losses_list_the_texts_of_highest_loss() {
    use graft::model::bert::BertConfig;
    use graft::model::params::named_tensors;
    use graft::model::text_encoder::{Pooling, TEXT_HEAD, TextClassifier, batch_tensors};
    use graft::task::text_classification::{TextCard, load_text_run};

    const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 51, "hidden_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32,
      "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
      "pad_token_id": 0}"#;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let mut csv = String::from("text,label\n");
    for i in 0..40usize {
        let (letters, label) = if i % 2 == 0 {
            ("abcdef", "early")
        } else {
            ("uvwxyz", "late")
        };
        let words: Vec<String> = (0..3 + i % 5)
            .map(|k| (letters.as_bytes()[(i * 7 + k * 3) % 6] as char).to_string())
            .collect();
        csv += &format!("{},{label}\n", words.join(" "));
    }
    let texts = tmp.path().join("texts.csv");
    std::fs::write(&texts, csv).unwrap();
    let spec = format!("csv:{}", texts.display());
    std::fs::write(run.join("config.json"), CONFIG).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/tokenizer.json"),
        run.join("tokenizer.json"),
    )
    .unwrap();
    let device = burn::tensor::Device::flex();
    let config = BertConfig::parse(Path::new("config.json"), CONFIG).unwrap();
    let model = TextClassifier::new(config, 2, Pooling::Mean, &device);
    graft::weights::save_safetensors(
        &run.join("model.safetensors"),
        &named_tensors(&model, TEXT_HEAD),
    )
    .unwrap();
    let names = vec!["early".to_string(), "late".to_string()];
    let card = TextCard {
        task: "text-classification".into(),
        num_classes: 2,
        class_names: names.clone(),
        max_length: 32,
        pooling: Pooling::Mean,
        data: spec.clone(),
        strategy: "fine-tune".into(),
        source: "tiny-bert".into(),
    };
    std::fs::write(
        run.join("model.json"),
        serde_json::to_string(&card).unwrap(),
    )
    .unwrap();
    let cfg = FitConfig {
        task: "text-classification".into(),
        weights: "/models/tiny-bert".into(),
        data: spec.clone(),
        max_length: Some(32),
        out: Some(run.clone()),
        ..FitConfig::default()
    };
    std::fs::write(run.join("config.toml"), cfg.to_toml()).unwrap();
    write_metrics(&run, 1.0);

    let (model, _, tokenizer) = load_text_run(&run, &device).unwrap();
    let ds = graft::data::text::open_text(&spec).unwrap();
    let mut acc = MetricsAccumulator::new(2, &[1]);
    let mut losses = Vec::new();
    for &i in &ds.test {
        let batch = tokenizer.encode_batch(&[ds.texts[i].as_str()]).unwrap();
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let logits = graft::tensor::to_vec(model.forward(ids, types, mask));
        let label = ds.labels[i];
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        acc.add_indexed(&logits, &[label], &[i], f64::from(lse - logits[label]));
        losses.push((i, lse - logits[label]));
    }
    std::fs::write(
        run.join("eval.json"),
        serde_json::to_string(&acc.finish(&names).with_data(&spec)).unwrap(),
    )
    .unwrap();

    let html = std::fs::read_to_string(write_run_report(&run).unwrap()).unwrap();
    keep(&run.join("report.html"), "text-run.html");
    let list = section(&html, "misclassified");
    assert!(!list.contains("not available"), "{list}");
    let shown: Vec<f32> = attr_values(list, "top-loss", "data-loss")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        shown.len(),
        ds.test.len(),
        "every test text (fewer than 40)"
    );
    assert!(shown.windows(2).all(|w| w[0] >= w[1]), "{shown:?}");
    losses.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (got, (_, want)) in shown.iter().zip(&losses) {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    // Each row has its text and where it comes from (file and line).
    let rows: Vec<&str> = list.split("<tr class=\"top-loss\"").skip(1).collect();
    let indices = attr_values(list, "top-loss", "data-index");
    for (row, index) in rows.iter().zip(&indices) {
        let i: usize = index.parse().unwrap();
        assert!(row.contains(&ds.texts[i]), "{row}");
        assert!(
            row.contains(&format!(">texts.csv:{}<", i + 2)),
            "origins relative to the data folder: {row}"
        );
    }
    // The settings name the model folder and the text length.
    let settings = section(&html, "settings");
    assert!(
        settings.contains(">tiny-bert<") && settings.contains(">32 tokens<"),
        "{settings}"
    );
    assert!(!settings.contains("image size"));
}

// ---------------------------------------------------------------------------------------------
// comparison and cross-validation

fn compare_fixture() -> (tempfile::TempDir, PathBuf) {
    let (tmp, _) = run_fixture();
    let dir = tmp.path().join("cmp");
    std::fs::create_dir_all(&dir).unwrap();
    // The first cell's run has a report (linked); the second's has none (not linked).
    let data = format!("cifar10:{}", tmp.path().join("cifar").display());
    let probe = |lr: f64| {
        move |c: &mut FitConfig| {
            c.strategy = Strategy::LinearProbe;
            c.lr = lr;
        }
    };
    write_run_with(&dir.join("cell-0-seed-0"), &data, 1.0, probe(0.01));
    write_run_with(&dir.join("cell-0-seed-1"), &data, 0.98, |c| {
        probe(0.01)(c);
        c.seed = 1;
    });
    write_run_report(&dir.join("cell-0-seed-0")).unwrap();
    // The second cell's run: its metrics and settings, no report.
    write_run_with(&dir.join("cell-1-seed-0"), &data, 0.9, |c| c.lr = 0.001);
    // Written as text: `serde_json::json!` would sort the grid's keys.
    let first =
        serde_json::to_string(&[dir.join("cell-0-seed-0"), dir.join("cell-0-seed-1")]).unwrap();
    let json = format!(
        r#"{{"grid": {{"strategy": ["linear-probe", "fine-tune"], "lr": ["0.01", "<b>0.001</b>"]}},
  "cells": [
    {{"settings": {{"strategy": "linear-probe", "lr": "0.01"}}, "test_accuracy": 0.91, "sd": 0.01,
     "accuracies": [0.90, 0.92], "final_loss": 0.31, "seconds": 12.5, "run_dirs": {first}}},
    {{"settings": {{"strategy": "fine-tune", "lr": "<b>0.001</b>"}}, "test_accuracy": 0.95, "sd": 0.005,
     "accuracies": [0.945, 0.955], "final_loss": 0.2, "seconds": 40.0, "run_dirs": ["cell-1-seed-0"]}},
    {{"settings": {{"strategy": "fine-tune", "lr": "0.01"}}, "test_accuracy": 0.88, "sd": 0.02,
     "accuracies": [0.86, 0.90], "final_loss": null, "seconds": 39.0, "run_dirs": []}}
  ]}}"#
    );
    std::fs::write(dir.join("compare.json"), json).unwrap();
    (tmp, dir)
}

#[test]
fn compare_report_tables_charts_and_links_the_runs() {
    let (_tmp, dir) = compare_fixture();
    let path = write_report(&dir).unwrap();
    assert_eq!(path, dir.join("report.html"));
    let html = std::fs::read_to_string(&path).unwrap();
    assert_self_contained(&html);
    let table = section(&html, "comparison-table");
    // Columns follow the grid's order in the file, not the alphabet.
    let (s, l) = (
        table.find(">strategy</th>").unwrap(),
        table.find(">lr</th>").unwrap(),
    );
    assert!(s < l);
    assert!(table.contains("91.00% ± 1.00%") && table.contains("95.00% ± 0.50%"));
    assert!(table.contains("&lt;b&gt;0.001&lt;/b&gt;") && !html.contains("<b>0.001"));
    assert_eq!(
        table.matches("href=\"cell-0-seed-0/report.html\"").count(),
        1
    );
    assert_eq!(
        table.matches("<a href").count(),
        1,
        "only cells whose run report exists are linked"
    );
    assert!(
        table
            .contains("<tr class=\"best\"><td class=\"l\">fine-tune</td><td class=\"l\">&lt;b&gt;")
    );
    let chart = section(&html, "comparison-chart");
    assert!(chart.contains("<svg"));
    assert!(chart.contains("strategy=linear-probe, lr=0.01"));

    // The validation curves of the cells with runs, overlaid: one line per cell, with a legend.
    let curves = section(&html, "comparison-curves");
    assert_eq!(
        curves
            .matches("<div class=\"overlay\" data-series=\"2\">")
            .count(),
        2,
        "validation loss and accuracy, two cells each: {curves}"
    );
    assert!(
        curves.contains("Validation loss per epoch")
            && curves.contains("Validation accuracy per epoch")
    );
    assert!(curves.contains("strategy=linear-probe, lr=0.01"));
    assert!(curves.contains("strategy=fine-tune, lr=&lt;b&gt;0.001&lt;/b&gt;"));
    assert!(
        curves.contains("mean over the cell's seeds")
            || curves.contains("mean over the cell&#39;s seeds")
    );

    // The settings: the model and weights once, then what differs per cell.
    assert!(html.contains("<title>Comparison: 3 settings — resnet18 on cifar10:"));
    let settings = section(&html, "settings");
    let shared = &settings[..settings.find("Varying per cell").expect("a varying part")];
    assert!(shared.contains(">resnet18<") && shared.contains(">resnet18-f37072fd.pth<"));
    assert!(!shared.contains(">lr<") && !shared.contains(">strategy<"));
    assert!(
        settings.contains("Settings that differ between cells: strategy, lr."),
        "{settings}"
    );
    assert!(settings.contains("1 of 3 cells have no readable config.toml"));

    // The explicit entry point agrees.
    assert_eq!(
        std::fs::read_to_string(write_compare_report(&dir).unwrap()).unwrap(),
        html
    );
    keep(&path, "compare.html");
}

#[test]
fn cv_report_shows_folds_mean_and_sd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let json = serde_json::json!({
        "folds": [0.81, 0.84, 0.79, 0.86, 0.83],
        "mean": 0.826, "sd": 0.027,
        "run_dirs": ["fold-1", "fold-2", "fold-3", "fold-4", "fold-5"],
        "settings": {"model": "resnet18", "data": "cifar10:x", "strategy": "linear-probe"}
    });
    std::fs::write(dir.join("cv.json"), json.to_string()).unwrap();
    let path = write_report(dir).unwrap();
    keep(&path, "cv.html");
    let html = std::fs::read_to_string(&path).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("Cross-validation: 5 folds — resnet18 on cifar10:x"));
    let folds = section(&html, "cv-folds");
    assert!(folds.contains("<svg"));
    assert!(folds.contains("mean 82.60% ± 2.70%"));
    for acc in ["81.00%", "84.00%", "79.00%", "86.00%", "83.00%"] {
        assert!(folds.contains(acc), "{acc}");
    }
    assert!(html.contains(">linear-probe<"), "settings listed");
}

#[test]
fn cv_report_names_the_model_from_the_folds_settings() {
    let (tmp, _) = run_fixture();
    let dir = tmp.path().join("cv");
    let data = format!("cifar10:{}", tmp.path().join("cifar").display());
    for k in 1..=3 {
        write_run(&dir.join(format!("fold-{k}")), &data);
    }
    // cv.json as graft writes it: no settings of its own.
    let json = serde_json::json!({
        "metric": "accuracy",
        "folds": [0.81, 0.84, 0.79], "mean": 0.8133, "sd": 0.0252,
        "run_dirs": [dir.join("fold-1"), dir.join("fold-2"), dir.join("fold-3")],
    });
    std::fs::write(dir.join("cv.json"), json.to_string()).unwrap();
    let html = std::fs::read_to_string(write_report(&dir).unwrap()).unwrap();
    assert!(
        html.contains("Cross-validation: 3 folds — resnet18 on cifar10:"),
        "the page names the model"
    );
    let settings = section(&html, "cv-settings");
    assert!(settings.contains(">resnet18<") && settings.contains(">resnet18-f37072fd.pth<"));
    assert!(settings.contains(">fine-tune<") && settings.contains(">batch size<"));
}

/// `graft compare`'s printed table: "± sd" only with two seeds or more.
#[test]
fn the_printed_comparison_shows_a_spread_only_over_seeds() {
    use graft::run::compare::{Cell, Comparison};
    let cell = |lr: &str, tests: Vec<f64>, sd: f64| Cell {
        settings: [("lr".to_string(), lr.to_string())].into_iter().collect(),
        metric: "accuracy".into(),
        test: tests.iter().sum::<f64>() / tests.len() as f64,
        sd,
        tests,
        final_loss: 0.3,
        seconds: 1.0,
        run_dirs: Vec::new(),
    };
    let grid: std::collections::BTreeMap<String, Vec<String>> = [(
        "lr".to_string(),
        vec!["0.01".to_string(), "0.1".to_string()],
    )]
    .into_iter()
    .collect();
    let one = Comparison {
        grid: grid.clone(),
        cells: vec![cell("0.01", vec![0.91], 0.0), cell("0.1", vec![0.87], 0.0)],
    };
    let text = one.table(false);
    assert!(!text.contains('±'), "{text}");
    assert!(text.contains("0.9100") && text.contains("0.8700"), "{text}");
    let two = Comparison {
        grid,
        cells: vec![
            cell("0.01", vec![0.9, 0.92], 0.0141),
            cell("0.1", vec![0.87, 0.87], 0.0),
        ],
    };
    let text = two.table(true);
    assert!(
        text.contains("0.9100 ± 0.0141") && text.contains("0.8700 ± 0.0000"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// in a real browser

#[test]
fn chromium_renders_the_run_report() {
    let Some(bin) = chromium() else {
        println!("skipped: chromium not installed");
        return;
    };
    let (tmp, run) = run_fixture();
    let page = write_run_report(&run).unwrap().canonicalize().unwrap();
    let profile = tmp.path().join("profile");

    let dom = run_chromium(&bin, &profile, &["--dump-dom".to_string()], &page);
    for id in [
        "loss-curve",
        "accuracy-curve",
        "lr-curve",
        "confusion-matrix",
        "per-class",
        "misclassified",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "rendered DOM lacks {id}"
        );
    }
    assert!(
        dom.matches("<svg").count() >= 5,
        "rendered DOM has the five charts"
    );
    let rendered_grid = &dom[dom.find("id=\"misclassified\"").unwrap()..];
    let rendered_grid = &rendered_grid[..rendered_grid.find("</section>").unwrap()];
    assert_eq!(rendered_grid.matches("<img").count(), 10);

    let shot = tmp.path().join("shot.png");
    let args = [
        format!("--screenshot={}", shot.display()),
        "--window-size=1200,2400".to_string(),
        "--hide-scrollbars".to_string(),
    ];
    run_chromium(&bin, &profile, &args, &page);
    let bytes = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        bytes.len() > 20_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1200, 2400));
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 50,
        "the screenshot is nearly blank ({} colours)",
        distinct.len()
    );

    keep(&page, "run.html");
    keep(&shot, "run-shot.png");
}

/// One seed per cell: no "± sd" (a spread over one run is no spread) and no per-seed column.
#[test]
fn a_single_seed_comparison_shows_no_spread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cmp");
    std::fs::create_dir_all(&dir).unwrap();
    let json = r#"{"grid": {"lr": ["0.01", "0.1"]},
  "cells": [
    {"settings": {"lr": "0.01"}, "test_accuracy": 0.91, "sd": 0.0, "accuracies": [0.91],
     "final_loss": 0.3, "seconds": 1.0, "run_dirs": []},
    {"settings": {"lr": "0.1"}, "test_accuracy": 0.87, "sd": 0.0, "accuracies": [0.87],
     "final_loss": 0.4, "seconds": 1.0, "run_dirs": []}
  ]}"#;
    std::fs::write(dir.join("compare.json"), json).unwrap();
    let html = std::fs::read_to_string(write_report(&dir).unwrap()).unwrap();
    assert!(!html.contains('±'), "a single seed shows no spread");
    assert!(!html.contains("per seed"));
    let table = section(&html, "comparison-table");
    assert!(table.contains("91.00%") && table.contains("87.00%"));
    assert!(html.contains("One seed per setting"));
}
