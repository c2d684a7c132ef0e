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
use graft::train::EpochMetrics;

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

/// A finished run folder over the dataset spec `data`.
fn write_run(run: &Path, data: &str) {
    std::fs::create_dir_all(run).unwrap();
    let cfg = FitConfig {
        model: "resnet18".into(),
        data: data.into(),
        strategy: Strategy::FineTune,
        schedule: Schedule::Cosine,
        epochs: 8,
        out: Some(run.to_path_buf()),
        ..FitConfig::default()
    };
    std::fs::write(run.join("config.toml"), cfg.to_toml()).unwrap();
    let mut lines = String::new();
    for e in 1..=8 {
        let t = e as f64;
        let m = EpochMetrics {
            epoch: e,
            scores: [
                ("train_loss", Some(2.3 / t)),
                ("train_accuracy", Some(1.0 - 0.9 / t)),
                ("val_loss", Some(2.4 / t + 0.05 * t / 8.0)),
                ("val_accuracy", Some(0.95 - 0.85 / t)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            lr: 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (t - 1.0) / 8.0).cos()),
            seconds: 1.5,
        };
        lines += &serde_json::to_string(&m).unwrap();
        lines.push('\n');
    }
    std::fs::write(run.join("metrics.jsonl"), lines).unwrap();

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

    // Ten wrong samples (0, 4, ..., 36), each as an inline PNG of the right test image.
    let grid = section(&html, "misclassified");
    let imgs: Vec<&str> = grid
        .split("<img src=\"data:image/png;base64,")
        .skip(1)
        .collect();
    assert_eq!(imgs.len(), 10);
    let b64 = &imgs[1][..imgs[1].find('"').unwrap()];
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
// comparison and cross-validation

fn compare_fixture() -> (tempfile::TempDir, PathBuf) {
    let (tmp, _) = run_fixture();
    let dir = tmp.path().join("cmp");
    std::fs::create_dir_all(&dir).unwrap();
    // The first cell's run has a report (linked); the second's has none (not linked).
    let data = format!("cifar10:{}", tmp.path().join("cifar").display());
    write_run(&dir.join("cell-0-seed-0"), &data);
    write_run_report(&dir.join("cell-0-seed-0")).unwrap();
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
    assert_eq!(dom.matches("<img").count(), 10);

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
