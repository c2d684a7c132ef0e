//! End to end through the `graft` binary on small generated data and a tiny model: every
//! strategy learns, the feature cache is reused, `--resume` continues, a NaN stops the run
//! without touching the last good checkpoint, and `predict`/`eval`/`inspect` work on the result.

use std::path::Path;
use std::process::Command;

mod common;

use base64::Engine as _;
use common::{TinyFixture, json_line, write_cifar};

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

impl TinyFixture {
    fn fit(&self, run: &str, extra: &[&str]) -> std::process::Output {
        let data = self.data();
        let weights = self.root.join("tiny.safetensors");
        let mut cmd = graft();
        cmd.args([
            "fit",
            "--model",
            "resnet_tiny",
            "--data",
            &data,
            "--image-size",
            "32",
        ])
        .arg("--weights")
        .arg(&weights)
        .arg("--out")
        .arg(self.root.join(run))
        .arg("--cache-dir")
        .arg(self.root.join("cache"))
        .args([
            "--batch-size",
            "30",
            "--val-split",
            "0.1",
            "--json",
            "--quiet",
        ])
        .args(extra);
        cmd.output().unwrap()
    }
}

#[test]
fn every_strategy_learns_above_chance() {
    let fx = TinyFixture::new();
    for (strategy, extra) in [
        ("linear-probe", vec!["--epochs", "15", "--lr", "0.01"]),
        (
            "fine-tune",
            vec!["--epochs", "3", "--lr", "0.003", "--augment", "flip"],
        ),
        (
            "partial:2",
            vec!["--epochs", "3", "--lr", "0.003", "--bn", "frozen"],
        ),
        (
            "scratch",
            vec!["--epochs", "3", "--lr", "0.003", "--optimizer", "adamw"],
        ),
    ] {
        let run = format!("run-{}", strategy.replace(':', ""));
        let mut args = vec!["--strategy", strategy];
        args.extend(extra);
        let j = json_line(&fx.fit(&run, &args));
        let acc = j["test_accuracy"].as_f64().unwrap();
        println!("{strategy}: test accuracy {acc}");
        assert!(
            acc > 0.6,
            "{strategy}: accuracy {acc} is not above chance (1/3)"
        );
        // The default probe (L-BFGS to convergence) has no epochs to checkpoint: its record
        // is probe.json.
        let state = if strategy == "linear-probe" {
            "probe.json"
        } else {
            "checkpoint/LATEST"
        };
        for f in [
            "config.toml",
            "metrics.jsonl",
            "model.safetensors",
            "model.json",
            "eval.json",
            state,
        ] {
            assert!(
                fx.root.join(&run).join(f).exists(),
                "{strategy}: {f} missing"
            );
        }
    }
}

#[test]
fn linear_probe_reuses_the_feature_cache() {
    let fx = TinyFixture::new();
    let first = json_line(&fx.fit("probe1", &["--strategy", "linear-probe", "--epochs", "2"]));
    assert_eq!(first["feature_cache"], "miss");
    let second = json_line(&fx.fit("probe2", &["--strategy", "linear-probe", "--epochs", "2"]));
    assert_eq!(
        second["feature_cache"], "hit",
        "the second run must not re-extract"
    );
    // Fewer training images: a subset of what is cached, still a hit.
    let third = json_line(&fx.fit(
        "probe3",
        &[
            "--strategy",
            "linear-probe",
            "--epochs",
            "2",
            "--limit-train",
            "120",
        ],
    ));
    assert_eq!(third["feature_cache"], "hit");
}

#[test]
fn resume_continues_from_the_checkpoint_and_nan_keeps_it() {
    let fx = TinyFixture::new();
    let run = fx.root.join("ft");
    let j = json_line(&fx.fit(
        "ft",
        &["--strategy", "fine-tune", "--epochs", "1", "--lr", "0.003"],
    ));
    assert_eq!(j["epochs"], 1);
    let out = graft()
        .args(["fit", "--json", "--quiet", "--epochs", "2", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let j = json_line(&out);
    assert_eq!(j["epochs"], 2, "resumed run reports both epochs");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert_eq!(checkpoint_epoch(&run), 2);

    // Make the next epoch diverge: the run must stop with a clear message and leave the
    // epoch-2 checkpoint as it was.
    let cfg_path = run.join("config.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("lr =") {
                "lr = 1e30".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| {
            if l.starts_with("optimizer =") {
                "optimizer = \"sgd\"".to_string()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = graft()
        .args(["fit", "--quiet", "--epochs", "3", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a NaN loss must fail the run");
    assert!(stderr.contains("loss became"), "{stderr}");
    assert!(
        stderr.contains("last good checkpoint (epoch 2)"),
        "{stderr}"
    );
    assert_eq!(checkpoint_epoch(&run), 2);
}

/// The epoch the committed checkpoint of `run` is after (from `checkpoint/LATEST`).
fn checkpoint_epoch(run: &Path) -> usize {
    let latest = std::fs::read_to_string(run.join("checkpoint/LATEST")).unwrap();
    let name = latest.split_whitespace().next().unwrap();
    let state =
        std::fs::read_to_string(run.join("checkpoint").join(name).join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["epochs_done"].as_u64().unwrap() as usize
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn predict_eval_and_inspect_use_the_run() {
    let fx = TinyFixture::new();
    json_line(&fx.fit(
        "ft",
        &[
            "--strategy",
            "linear-probe",
            "--epochs",
            "5",
            "--lr",
            "0.01",
        ],
    ));
    let run = fx.root.join("ft");
    // A red image should be called "red".
    let img = fx.root.join("red.png");
    image::RgbImage::from_fn(32, 32, |_, _| image::Rgb([200, 40, 40]))
        .save(&img)
        .unwrap();
    let out = graft()
        .args(["predict", "--json", "--top", "2", "--run"])
        .arg(&run)
        .arg(&img)
        .output()
        .unwrap();
    let j = json_line(&out);
    assert_eq!(j["top"][0]["label"], "red", "{j}");
    assert_eq!(j["top"].as_array().unwrap().len(), 2);

    let out = graft()
        .args(["eval", "--json", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    let j = json_line(&out);
    assert!(j["accuracy"].as_f64().unwrap() > 0.6);
    assert_eq!(j["confusion"].as_array().unwrap().len(), 3);

    let out = graft()
        .arg("inspect")
        .arg(fx.root.join("tiny.safetensors"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("matches model `resnet_tiny`"), "{text}");
    // Weights of another zoo model: the error is the fix, not a list of missing tensors.
    let out = graft()
        .args([
            "predict",
            "--model",
            "efficientnet_lite0_narrow",
            "--weights",
        ])
        .arg(fx.root.join("tiny.safetensors"))
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("holds `resnet_tiny` weights") && err.contains("use --model resnet_tiny"),
        "{err}"
    );
    assert!(!err.contains("missing `"), "{err}");
    let out = graft()
        .arg("inspect")
        .arg(format!("cifar10:{}", fx.root.join("data").display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("red"), "{text}");
}

#[test]
fn early_stopping_stops_when_validation_loss_stalls() {
    let fx = TinyFixture::new();
    // A learning rate too small to move the head: the validation loss cannot improve after the
    // first epoch, so patience 1 stops the run after epoch 2 of 6.
    let j = json_line(&fx.fit(
        "es",
        &[
            "--strategy",
            "linear-probe",
            "--probe",
            "sgd",
            "--epochs",
            "6",
            "--lr",
            "1e-30",
            "--early-stopping",
            "1",
        ],
    ));
    assert_eq!(j["stopped_early"], true, "{j}");
    assert_eq!(j["epochs"], 2, "{j}");
    let out = graft()
        .args([
            "fit",
            "--data",
            "fashion-mnist",
            "--early-stopping",
            "1",
            "--val-split",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--val-split > 0"));
}

#[test]
fn example_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = graft::config::FitConfig::from_toml_file(&path).unwrap();
            cfg.check()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2);
    // An unknown key in a config file is an error naming the file.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "learning_rate = 0.1\n").unwrap();
    let err = graft::config::FitConfig::from_toml_file(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.toml") && err.contains("learning_rate"),
        "{err}"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let fx = TinyFixture::new();
    let out = fx.fit("bad", &["--strategy", "nonsense"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy `nonsense`"));
    let bogus = fx.root.join("bogus.pth");
    std::fs::write(&bogus, b"this is not a weights file").unwrap();
    let out = graft().arg("inspect").arg(&bogus).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus.pth"), "{err}");
}

#[test]
fn eval_on_other_data_keeps_the_runs_own_evaluation() {
    let fx = TinyFixture::new();
    json_line(&fx.fit("probe", &["--strategy", "linear-probe", "--epochs", "2"]));
    let run = fx.root.join("probe");
    let own = std::fs::read(run.join("eval.json")).unwrap();
    let other_dir = fx.root.join("other");
    write_cifar(&other_dir);
    let spec = format!("cifar10:{}", other_dir.display());
    let out = graft()
        .args(["eval", "--json", "--run"])
        .arg(&run)
        .arg("--data")
        .arg(&spec)
        .output()
        .unwrap();
    let j = json_line(&out);
    assert_eq!(j["data"], spec.as_str(), "the evaluation names its dataset");
    assert_eq!(
        std::fs::read(run.join("eval.json")).unwrap(),
        own,
        "eval --data must not overwrite the run's own evaluation"
    );
    let written: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("eval-") && n.ends_with(".json"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    // The run's own evaluation records its dataset too, which the report reloads images from.
    let own: serde_json::Value = serde_json::from_slice(&own).unwrap();
    assert!(own["data"].as_str().unwrap().starts_with("cifar10:"));
}

#[test]
fn resume_continues_the_folder_it_is_given_with_its_settings() {
    let fx = TinyFixture::new();
    json_line(&fx.fit(
        "a",
        &[
            "--strategy",
            "linear-probe",
            "--probe",
            "sgd",
            "--epochs",
            "1",
        ],
    ));
    // A copy of a run is resumed in place, not in the folder its config.toml names.
    let (a, b) = (fx.root.join("a"), fx.root.join("b"));
    copy_tree(&a, &b);
    let out = graft()
        .args(["fit", "--json", "--quiet", "--epochs", "2", "--resume"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(json_line(&out)["epochs"], 2);
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!((lines(&a), lines(&b)), (1, 2), "only the copy went on");
    // A flag that would change the run's settings is refused, naming it.
    let out = graft()
        .args(["fit", "--quiet", "--epochs", "3", "--lr", "0.5", "--resume"])
        .arg(&b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--lr"), "{err}");
    assert_eq!(lines(&b), 2);
}

#[test]
fn early_stopping_watches_the_metric_it_is_given() {
    let fx = TinyFixture::new();
    // A learning rate too small to change a prediction: validation accuracy stays put, so
    // with patience 1 the run stops after the second epoch.
    let j = json_line(&fx.fit(
        "es",
        &[
            "--strategy",
            "linear-probe",
            "--probe",
            "sgd",
            "--epochs",
            "6",
            "--lr",
            "1e-9",
            "--early-stopping",
            "1",
            "--early-stopping-metric",
            "val_accuracy",
        ],
    ));
    assert_eq!(j["stopped_early"], true, "{j}");
    assert_eq!(j["epochs"], 2, "{j}");
    let out = fx.fit(
        "bad",
        &["--early-stopping", "2", "--early-stopping-metric", "val_f1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("val_f1") && err.contains("val_accuracy"),
        "{err}"
    );
}

#[test]
fn settings_are_recorded_with_their_overrides() {
    let fx = TinyFixture::new();
    let j = json_line(&fx.fit(
        "rec",
        &[
            "--strategy",
            "linear-probe",
            "--epochs",
            "1",
            "--betas",
            "0.8,0.99",
        ],
    ));
    assert_eq!(j["kernels"], "graft");
    assert_eq!(j["train_layout"], "channels-last");
    assert_eq!(j["task"], "image-classification");
    let cfg = graft::config::FitConfig::from_toml_file(&fx.root.join("rec/config.toml")).unwrap();
    assert_eq!(cfg.betas.0, [0.8, 0.99]);
    assert_eq!(cfg.kernels, graft::kernels::KernelChoice::Graft);
    // The environment overrides the setting, and the run records what it really used.
    let data = format!("cifar10:{}", fx.root.join("data").display());
    let out = graft()
        .env("GRAFT_KERNELS", "burn")
        .env("GRAFT_TRAIN_LAYOUT", "nchw")
        .args([
            "fit",
            "--json",
            "--quiet",
            "--model",
            "resnet_tiny",
            "--epochs",
            "1",
        ])
        .args([
            "--strategy",
            "scratch",
            "--image-size",
            "32",
            "--limit-train",
            "60",
        ])
        .arg(format!("--data={data}"))
        .arg(format!("--out={}", fx.root.join("env").display()))
        .output()
        .unwrap();
    let j = json_line(&out);
    assert_eq!(
        (j["kernels"].as_str(), j["train_layout"].as_str()),
        (Some("burn"), Some("nchw"))
    );
    let cfg = graft::config::FitConfig::from_toml_file(&fx.root.join("env/config.toml")).unwrap();
    assert_eq!(cfg.train_layout, graft::kernels::TrainLayout::Nchw);
    // A bad value names the setting and its choices.
    let out = fx.fit("badbetas", &["--betas", "0.9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("B1,B2"), "{err}");
}

#[test]
fn the_feature_cache_is_keyed_by_content_and_checked() {
    let fx = TinyFixture::new();
    let probe = |run: &str| {
        json_line(&fx.fit(
            run,
            &[
                "--strategy",
                "linear-probe",
                "--epochs",
                "3",
                "--lr",
                "0.01",
            ],
        ))
    };
    let first = probe("p1");
    assert_eq!(first["feature_cache"], "miss");
    // Every pixel inverted behind the same spec: the old features must not be used.
    let data = fx.root.join("data");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes: Vec<u8> = std::fs::read(&path)
                .unwrap()
                .chunks(3073)
                .flat_map(|r| std::iter::once(r[0]).chain(r[1..].iter().map(|p| 255 - p)))
                .collect();
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let second = probe("p2");
    assert_eq!(
        second["feature_cache"], "miss",
        "new pixels, same spec: {second}"
    );
    assert_eq!(probe("p3")["feature_cache"], "hit");
    // A damaged cache file is noticed, recomputed and rewritten.
    let features = fx.root.join("cache/features");
    for entry in std::fs::read_dir(&features).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 200;
        bytes[at] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let out = fx.fit(
        "p4",
        &[
            "--strategy",
            "linear-probe",
            "--epochs",
            "3",
            "--lr",
            "0.01",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let j = json_line(&out);
    assert_eq!(j["feature_cache"], "miss", "{err}");
    assert_eq!(j["test_accuracy"], second["test_accuracy"]);
    assert_eq!(probe("p5")["feature_cache"], "hit");
}

#[test]
fn cross_validation_does_not_leak_training_features_into_the_test_cache() {
    // Each fold's test split is cut from the training images; before the cache was keyed by
    // content, cv stored those features under the test set's key, and a later probe on the
    // real test set was scored on training images.
    let fx = TinyFixture::new();
    let data = format!("cifar10:{}", fx.root.join("data").display());
    let out = graft()
        .args([
            "cv",
            "--folds",
            "2",
            "--json",
            "--quiet",
            "--model",
            "resnet_tiny",
        ])
        .args([
            "--strategy",
            "linear-probe",
            "--epochs",
            "2",
            "--image-size",
            "32",
        ])
        .arg(format!("--data={data}"))
        .arg(format!(
            "--weights={}",
            fx.root.join("tiny.safetensors").display()
        ))
        .arg(format!("--cache-dir={}", fx.root.join("cache").display()))
        .arg(format!("--out={}", fx.root.join("cv").display()))
        .output()
        .unwrap();
    json_line(&out);
    let args = [
        "--strategy",
        "linear-probe",
        "--epochs",
        "3",
        "--lr",
        "0.01",
    ];
    let shared = json_line(&fx.fit("after-cv", &args));
    assert_eq!(shared["feature_cache"], "partial", "{shared}");
    // The same probe with an empty cache.
    std::fs::remove_dir_all(fx.root.join("cache")).unwrap();
    let fresh = json_line(&fx.fit("fresh", &args));
    assert_eq!(fresh["feature_cache"], "miss");
    assert_eq!(shared["test_accuracy"], fresh["test_accuracy"]);
}

/// A missing file is said once, in words (the OS text used to be printed twice, error number
/// included).
#[test]
fn a_missing_file_is_named_once() {
    let dir = std::env::temp_dir().join(format!("graft-missing-{}", std::process::id()));
    let out = graft()
        .args(["fit", "--config"])
        .arg(dir.join("nope.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nope.toml: no such file or directory"),
        "{err}"
    );
    assert_eq!(err.matches("no such file").count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
}

/// `compare` and `cv` reuse and resume their own runs: `fit`'s --resume is not in their help.
#[test]
fn resume_is_only_offered_where_it_applies() {
    let help = |cmd: &str| {
        let out = graft().args([cmd, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(help("fit").contains("--resume"));
    assert!(!help("compare").contains("--resume"), "{}", help("compare"));
    assert!(!help("cv").contains("--resume"), "{}", help("cv"));
}

/// `graft rank` scores candidates from their frozen features: every metric for a pretrained
/// file (LEEP/NCE from its 1000-class head), `null` LEEP for random weights, one JSON line with
/// the recommendation; the features land in the probe's cache (a second rank is a cache hit);
/// a single candidate or a missing weights file is a clear error.
#[test]
fn rank_scores_candidates_from_frozen_features() {
    let fx = TinyFixture::new();
    let weights = fx.root.join("tiny.safetensors");
    let rank = |models: &str| {
        graft()
            .args([
                "rank",
                "--data",
                &fx.data(),
                "--image-size",
                "32",
                "--metric",
                "all",
                "--json",
                "--quiet",
            ])
            .arg("--models")
            .arg(models)
            .arg("--cache-dir")
            .arg(fx.root.join("cache"))
            .arg("--out")
            .arg(fx.root.join("rank"))
            .output()
            .unwrap()
    };
    let models = format!("resnet_tiny@{},resnet_tiny@none", weights.display());
    let j = json_line(&rank(&models));
    let c = j["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(j["metric"], "logme");
    for k in ["logme", "knn", "hscore", "leep", "nce"] {
        assert!(c[0]["scores"][k].as_f64().unwrap().is_finite(), "{k}: {j}");
    }
    assert!(
        c[1]["scores"]["leep"].is_null(),
        "random weights have no source head: {j}"
    );
    let knn = c[0]["scores"]["knn"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&knn));
    assert_eq!(c[0]["feature_cache"], "miss");
    let best = if c[0]["score"].as_f64() >= c[1]["score"].as_f64() {
        0
    } else {
        1
    };
    assert_eq!(
        j["recommended"],
        format!("resnet_tiny@{}", c[best]["weights"].as_str().unwrap())
    );
    // rank.json and its report: the table of scores with the recommended row marked.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.root.join("rank/rank.json")).unwrap())
            .unwrap();
    assert_eq!(saved["recommended"], j["recommended"]);
    assert_eq!(
        j["report"].as_str().map(Path::new),
        Some(fx.root.join("rank/report.html").as_path())
    );
    let html = std::fs::read_to_string(fx.root.join("rank/report.html")).unwrap();
    assert!(
        html.contains("id=\"ranking\"")
            && html.contains("<tr class=\"best\">")
            && html.contains("logme")
    );
    let again = json_line(&rank(&models));
    assert_eq!(again["candidates"][0]["feature_cache"], "hit");
    assert_eq!(again["candidates"][0]["score"], c[0]["score"]);
    for (bad, says) in [
        (format!("resnet_tiny@{}", weights.display()), "at least two"),
        ("resnet_tiny@nope.pth,resnet_tiny".to_string(), "nope.pth"),
    ] {
        let out = rank(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{bad}: {err}");
    }
}

/// The default probe without a validation split chooses its L2 on a hold-out of the training
/// split and says so in probe.json; a fixed --probe-l2 fits once.
#[test]
fn lbfgs_probe_chooses_its_l2_without_a_validation_split() {
    let fx = TinyFixture::new();
    let j = json_line(
        &graft()
            .args([
                "fit",
                "--model",
                "resnet_tiny",
                "--data",
                &fx.data(),
                "--image-size",
                "32",
            ])
            .args([
                "--strategy",
                "linear-probe",
                "--val-split",
                "0",
                "--json",
                "--quiet",
            ])
            .arg("--weights")
            .arg(fx.root.join("tiny.safetensors"))
            .arg("--out")
            .arg(fx.root.join("auto"))
            .arg("--cache-dir")
            .arg(fx.root.join("cache"))
            .output()
            .unwrap(),
    );
    assert!(j["test_accuracy"].as_f64().unwrap() > 0.6, "{j}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.root.join("auto/probe.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["l2_chosen_on"], "hold-out (10% of train)",
        "{record}"
    );
    assert!(record["path"].as_array().unwrap().len() >= 4, "{record}");
    assert_eq!(record["fitted_on"], "train");
    let fixed = json_line(&fx.fit(
        "fixed",
        &["--strategy", "linear-probe", "--probe-l2", "1e-3"],
    ));
    assert!(fixed["test_accuracy"].as_f64().unwrap() > 0.6);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.root.join("fixed/probe.json")).unwrap())
            .unwrap();
    assert_eq!(record["l2_chosen_on"], "fixed");
    assert_eq!(record["l2"], 1e-3);
    assert!(record["path"].as_array().unwrap().is_empty());
}

#[test]
fn explain_draws_maps_for_a_run_and_states_what_is_wrong() {
    let fx = TinyFixture::new();
    json_line(&fx.fit("ft", &["--strategy", "fine-tune", "--epochs", "2"]));
    let run = fx.root.join("ft");
    // The run's report shows Grad-CAM maps over its test images.
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let heat = &html[html.find("id=\"heatmaps\"").expect("a heat-map section")..];
    assert!(
        heat.contains("Grad-CAM at <code>layer2</code>"),
        "{}",
        &heat[..600]
    );
    assert!(heat.contains("alt=\"Grad-CAM for the predicted class"));
    // The first figure: the input as the model saw it, then its map, the input coloured over.
    let inline = |k: usize| {
        let b64 = heat.split("data:image/png;base64,").nth(k).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(&b64[..b64.find('"').unwrap()])
            .unwrap();
        image::load_from_memory(&png).unwrap().to_rgb8()
    };
    let (input, map) = (inline(1), inline(2));
    assert_eq!(input.dimensions(), map.dimensions());
    let changed: f64 = input
        .pixels()
        .zip(map.pixels())
        .map(|(a, b)| {
            (0..3)
                .map(|c| (a[c] as f64 - b[c] as f64).abs())
                .sum::<f64>()
        })
        .sum::<f64>()
        / (3 * input.width() * input.height()) as f64;
    assert!(
        changed > 20.0,
        "the map is the input unchanged (mean |diff| {changed})"
    );
    if let Some(bin) = common::chromium() {
        // Rendered in a real browser: the maps are images that decode and show colour.
        let page = run.join("report.html").canonicalize().unwrap();
        let profile = fx.root.join("profile");
        let dom = common::run_chromium(&bin, &profile, &["--dump-dom".to_string()], &page);
        let rendered = &dom[dom.find("id=\"heatmaps\"").expect("heat maps rendered")..];
        assert!(rendered.matches("<img").count() >= 4, "{rendered:.400}");
    }
    let img = fx.root.join("red.png");
    image::RgbImage::from_fn(32, 32, |x, _| {
        image::Rgb(if x < 16 { [200, 40, 40] } else { [0, 0, 0] })
    })
    .save(&img)
    .unwrap();
    let out_dir = fx.root.join("maps");
    let out = graft()
        .args(["explain", "--json", "--top", "2", "--run"])
        .arg(&run)
        .arg(&img)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 32 px: layer4's map would be 1x1; the default is the last stage with a 4x4 map, said.
    assert!(stderr.contains("explaining layer2 (4x4)"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per class explained");
    assert_ne!(lines[0]["class"], lines[1]["class"]);
    for j in &lines {
        assert_eq!(j["layer"], "layer2");
        assert_eq!(j["method"], "gradcam");
        let p = j["probability"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0, "{j}");
        let cam = j["cam"].as_array().unwrap();
        assert_eq!(cam.len(), 4);
        let values: Vec<f64> = cam
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(values.len(), 16);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{j}");
        let png = image::open(j["overlay"].as_str().unwrap()).unwrap();
        assert!(png.width() >= 224, "the overlay is enlarged for display");
    }
    // Test samples, with a faithfulness score beside a random map's; EigenCAM needs no class.
    let out = graft()
        .args([
            "explain",
            "--json",
            "--method",
            "eigencam",
            "--test-images",
            "3",
            "--faithfulness",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3);
    for line in stdout.lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(j["truth"].is_u64(), "{j}");
        for key in ["faithfulness", "random_faithfulness"] {
            let f = &j[key];
            assert_eq!(f["deletion"].as_array().unwrap().len(), 21, "{j}");
            let score = f["score"].as_f64().unwrap();
            let diff = f["insertion_auc"].as_f64().unwrap() - f["deletion_auc"].as_f64().unwrap();
            assert!((score - diff).abs() < 1e-6 && (-1.0..=1.0).contains(&score));
        }
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("faithfulness over 3 maps"));
    // Errors that say what to do.
    let fails = |args: &[&str]| {
        let out = graft()
            .arg("explain")
            .args(args)
            .arg("--run")
            .arg(&run)
            .arg(&img)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fails(&["--json", "--layer", "layer9"]);
    assert!(err.contains("layer1, layer2, layer3, layer4"), "{err}");
    let err = fails(&["--json", "--class", "7"]);
    assert!(
        err.contains("--class 7 is outside the model's 3 classes"),
        "{err}"
    );
    let err = fails(&[]);
    assert!(err.contains("give --out DIR"), "{err}");
    let err = fails(&["--json", "--test-images", "0"]);
    assert!(err.contains("--test-images must be at least 1"), "{err}");
    let err = fails(&["--json", "--method", "magic"]);
    assert!(err.contains("gradcam, hirescam"), "{err}");
}
