//! `graft cv` and `graft compare`: folds are stratified and disjoint, results are tabulated, and
//! an interrupted comparison re-runs only the unfinished cells.

mod common;

use std::process::Command;

use common::{write_cifar, write_weights};
use graft::data::fold_datasets;

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

fn ok_json(out: std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "graft failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON")
}

#[test]
fn cv_folds_are_stratified_disjoint_and_cover_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(&tmp.path().join("data"));
    let ds = graft::data::open(&format!("cifar10:{}", tmp.path().join("data").display())).unwrap();
    let pool: Vec<usize> = ds.train.indices.clone();
    let folds = fold_datasets(&ds, 5, 3).unwrap();
    let mut seen = Vec::new();
    for f in &folds {
        // train and test of a fold are disjoint and together are the pool
        let mut all: Vec<usize> = f
            .train
            .indices
            .iter()
            .chain(&f.test.indices)
            .copied()
            .collect();
        all.sort();
        let mut p = pool.clone();
        p.sort();
        assert_eq!(all, p);
        // stratified: each class has 300/3/5 = 20 test samples
        let counts = ds.class_counts(&f.test);
        assert_eq!(counts, vec![20, 20, 20], "fold classes {counts:?}");
        seen.extend(f.test.indices.iter().copied());
    }
    seen.sort();
    let mut p = pool.clone();
    p.sort();
    assert_eq!(
        seen, p,
        "test folds are disjoint and cover every sample once"
    );
    assert!(fold_datasets(&ds, 1, 0).is_err());
}

#[test]
fn cv_and_compare_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_cifar(&root.join("data"));
    write_weights(&root.join("tiny.safetensors"));
    let common = |cmd: &mut Command| {
        cmd.args([
            "--model",
            "resnet_tiny",
            "--image-size",
            "32",
            "--batch-size",
            "30",
            "--json",
            "--quiet",
        ])
        .arg(format!("--data=cifar10:{}", root.join("data").display()))
        .arg(format!(
            "--weights={}",
            root.join("tiny.safetensors").display()
        ))
        .arg(format!("--cache-dir={}", root.join("cache").display()));
    };

    let mut cmd = graft();
    cmd.args([
        "cv",
        "--folds",
        "3",
        "--strategy",
        "linear-probe",
        "--epochs",
        "5",
        "--lr",
        "0.01",
    ])
    .arg(format!("--out={}", root.join("cv").display()));
    common(&mut cmd);
    let j = ok_json(cmd.output().unwrap());
    let folds = j["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    let mean = j["mean"].as_f64().unwrap();
    assert!(mean > 0.6, "cv mean {mean}");
    assert!(j["sd"].as_f64().unwrap() >= 0.0);
    assert!(root.join("cv/cv.json").exists());

    let compare_dir = root.join("cmp");
    let run_compare = || {
        let mut cmd = graft();
        cmd.args([
            "compare",
            "--grid",
            "strategy=linear-probe,scratch",
            "--probe",
            "sgd",
            "--grid",
            "lr=0.01,0.003",
            "--epochs",
            "1",
        ])
        .arg(format!("--out={}", compare_dir.display()));
        common(&mut cmd);
        ok_json(cmd.output().unwrap())
    };
    let j = run_compare();
    let cells = j["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    for c in cells {
        assert!(
            c["settings"]["strategy"].is_string()
                && c["metric"] == "accuracy"
                && c["test"].is_number(),
            "{c}"
        );
    }
    // "Interrupt" the comparison: one cell lost its result. A re-run redoes only that cell.
    let done = compare_dir.join("cell-01-seed-0/summary.json");
    let lost = compare_dir.join("cell-04-seed-0/summary.json");
    let before = std::fs::metadata(&done).unwrap().modified().unwrap();
    std::fs::remove_file(&lost).unwrap();
    let j2 = run_compare();
    assert_eq!(
        std::fs::metadata(&done).unwrap().modified().unwrap(),
        before,
        "finished cell re-ran"
    );
    assert!(lost.exists(), "the unfinished cell ran again");
    assert_eq!(j2["cells"].as_array().unwrap().len(), 4);

    // The same folder with other settings (here another epoch count): nothing is reused,
    // nothing runs, and the message names the difference; --overwrite runs the grid again.
    let rerun = |extra: &[&str]| {
        let mut cmd = graft();
        cmd.args([
            "compare",
            "--grid",
            "strategy=linear-probe,scratch",
            "--probe",
            "sgd",
            "--grid",
            "lr=0.01,0.003",
            "--epochs",
            "2",
        ])
        .args(extra)
        .arg(format!("--out={}", compare_dir.display()));
        common(&mut cmd);
        cmd.output().unwrap()
    };
    let out = rerun(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a grid with other settings reused old cells"
    );
    assert!(
        err.contains("epochs") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&done).unwrap().modified().unwrap(),
        before,
        "a refused grid touched a finished cell"
    );
    let j3 = ok_json(rerun(&["--overwrite"]));
    assert_eq!(j3["cells"].as_array().unwrap().len(), 4);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&done).unwrap()).unwrap();
    assert_eq!(
        summary["epochs"], 2,
        "the cell ran again with the new settings"
    );

    // An unknown grid key fails before anything runs, naming the key.
    let mut cmd = graft();
    cmd.args(["compare", "--grid", "learning_rat=0.1"])
        .arg(format!("--out={}", root.join("bad").display()));
    common(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("learning_rat"));
}
