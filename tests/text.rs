//! Text classification end to end through the `graft` binary, on a tiny model folder made here
//! (a 2-layer BERT config, the fixture tokenizer, seeded random weights) and generated texts:
//! every strategy learns, the embedding cache is reused, a run resumes, predict / eval / embed
//! read the run, and bad rows are named by file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use graft::model::bert::{Bert, BertConfig};
use graft::model::params::named_tensors;

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 51, "hidden_size": 16,
  "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32,
  "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
  "pad_token_id": 0}"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let model = root.join("tiny-bert");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("config.json"), CONFIG).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/tokenizer.json"),
            model.join("tokenizer.json"),
        )
        .unwrap();
        let config = BertConfig::parse(Path::new("config.json"), CONFIG).unwrap();
        // The device's random stream is one per process, shared by the tests running in
        // parallel: seeding and drawing must not interleave with another fixture's, or the
        // weights (and every accuracy below) change from run to run.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let bert = {
            let _one_at_a_time = INIT.lock().unwrap_or_else(|e| e.into_inner());
            let device = Device::flex();
            device.seed(11);
            Bert::new(config, &device)
        };
        graft::weights::save_safetensors(
            &model.join("model.safetensors"),
            &named_tensors(&bert, "classifier"),
        )
        .unwrap();
        // Two classes told apart by their letters (single-letter words: the fixture vocabulary
        // has every letter, but few word pieces).
        let mut csv = String::from("text,label\n");
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for i in 0..120 {
            let (letters, label) = if i % 2 == 0 {
                ("abcdef", "early")
            } else {
                ("uvwxyz", "late")
            };
            let words: Vec<String> = (0..4 + next() % 6)
                .map(|_| (letters.as_bytes()[next() % 6] as char).to_string())
                .collect();
            csv += &format!("{},{label}\n", words.join(" "));
        }
        std::fs::write(root.join("texts.csv"), csv).unwrap();
        Self { _tmp: tmp, root }
    }

    fn fit(&self, run: &str, extra: &[&str]) -> std::process::Output {
        self.fit_with_env(run, extra, ("GRAFT_TEST_UNUSED", ""))
    }

    fn fit_with_env(
        &self,
        run: &str,
        extra: &[&str],
        (key, value): (&str, &str),
    ) -> std::process::Output {
        graft()
            .env(key, value)
            .args(["fit", "--json", "--quiet", "--val-split", "0.2"])
            .arg(format!(
                "--data=csv:{}",
                self.root.join("texts.csv").display()
            ))
            .arg(format!(
                "--weights={}",
                self.root.join("tiny-bert").display()
            ))
            .arg(format!("--out={}", self.root.join(run).display()))
            .arg(format!("--cache-dir={}", self.root.join("cache").display()))
            .args(extra)
            .output()
            .unwrap()
    }
}

fn json_line(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "graft failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("valid JSON")
}

#[test]
fn every_text_strategy_learns_and_the_run_is_usable() {
    let fx = Fixture::new();
    for (strategy, extra) in [
        ("linear-probe", vec!["--epochs", "30", "--lr", "0.05"]),
        ("fine-tune", vec!["--epochs", "6", "--lr", "0.003"]),
        ("partial:1", vec!["--epochs", "6", "--lr", "0.003"]),
        ("scratch", vec!["--epochs", "6", "--lr", "0.003"]),
    ] {
        let run = format!("run-{}", strategy.replace(':', ""));
        let mut args = vec!["--strategy", strategy];
        args.extend(extra);
        let j = json_line(&fx.fit(&run, &args));
        let acc = j["test_accuracy"].as_f64().unwrap();
        assert_eq!(
            j["task"], "text-classification",
            "the task comes from the data spec"
        );
        assert!(
            acc > 0.75,
            "{strategy}: accuracy {acc} is not above chance (1/2)"
        );
    }
    // The text task's defaults apply where nothing was given (AdamW, weight decay 0.01).
    let cfg = graft::config::FitConfig::from_toml_file(&fx.root.join("run-fine-tune/config.toml"))
        .unwrap();
    assert_eq!(cfg.optimizer, graft::optim::OptimizerKind::AdamW);
    assert_eq!(cfg.weight_decay, 0.01);
    assert_eq!(cfg.model, "tiny-bert");

    // predict, eval and embed read the run.
    let run = fx.root.join("run-fine-tune");
    let out = graft()
        .args(["predict", "--json", "--run"])
        .arg(&run)
        .args(["a b c d e", "x y z u v"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["top"][0]["label"], "early", "{stdout}");
    assert_eq!(lines[1]["top"][0]["label"], "late", "{stdout}");
    let j = json_line(
        &graft()
            .args(["eval", "--json", "--run"])
            .arg(&run)
            .output()
            .unwrap(),
    );
    assert!(j["accuracy"].as_f64().unwrap() > 0.75);
    let j = json_line(
        &graft()
            .args(["embed", "--json", "--weights"])
            .arg(fx.root.join("tiny-bert"))
            .args(["one text", "another"])
            .output()
            .unwrap(),
    );
    let e = j["embeddings"].as_array().unwrap();
    assert_eq!((e.len(), e[0].as_array().unwrap().len()), (2, 16));
    // The report shows the misclassified texts section.
    let html = std::fs::read_to_string(graft::report::write_report(&run).unwrap()).unwrap();
    assert!(html.contains("id=\"misclassified\"") && html.contains("accuracy-curve"));
    // Misclassified texts come with their tokens shaded by gradient × input.
    let mut listed = 0;
    for run in [
        "run-linear-probe",
        "run-fine-tune",
        "run-partial1",
        "run-scratch",
    ] {
        let html =
            std::fs::read_to_string(graft::report::write_report(&fx.root.join(run)).unwrap())
                .unwrap();
        let section = &html[html.find("id=\"misclassified\"").unwrap()..];
        if section.contains("<table>") {
            listed += 1;
            assert!(
                section.contains("<span class=\"tokens\">"),
                "{run}: no token saliency"
            );
            assert!(section.contains("title=\""), "{run}: token values");
            assert!(!section.contains("could not be computed"), "{run}");
        }
    }
    assert!(listed > 0, "no run had a misclassified text to show");
}

#[test]
fn text_probe_cache_and_resume() {
    let fx = Fixture::new();
    let probe =
        |run: &str| json_line(&fx.fit(run, &["--strategy", "linear-probe", "--epochs", "2"]));
    assert_eq!(probe("p1")["feature_cache"], "miss");
    assert_eq!(probe("p2")["feature_cache"], "hit");
    // A fine-tune killed after its first epoch's checkpoint resumes to the run that never
    // stopped (dropout included: its masks restart from the seed at every epoch; the learning
    // rate too: the per-step warm-up and decay are a function of the step).
    let args = ["--strategy", "fine-tune", "--lr", "0.003"];
    let mut two = args.to_vec();
    two.extend(["--epochs", "2"]);
    let killed = fx.fit_with_env(
        "resumed",
        &two,
        ("GRAFT_TEST_CRASH_AT", "checkpoint-after-commit:1"),
    );
    assert!(!killed.status.success(), "the crash point did not fire");
    let out = graft()
        .args(["fit", "--json", "--quiet", "--resume"])
        .arg(fx.root.join("resumed"))
        .output()
        .unwrap();
    let resumed = json_line(&out);
    let straight = json_line(&fx.fit("straight", &two));
    assert_eq!(resumed["test_accuracy"], straight["test_accuracy"]);
    assert_eq!(resumed["train_loss"], straight["train_loss"]);
    assert_eq!(
        std::fs::read(fx.root.join("resumed/model.safetensors")).unwrap(),
        std::fs::read(fx.root.join("straight/model.safetensors")).unwrap(),
        "a resumed text run differs from an uninterrupted one"
    );
}

#[test]
fn bad_text_inputs_are_named() {
    let fx = Fixture::new();
    std::fs::write(fx.root.join("bad.csv"), "text,label\nfine,a\n,b\n").unwrap();
    let out = graft()
        .args(["fit", "--quiet"])
        .arg(format!("--data=csv:{}", fx.root.join("bad.csv").display()))
        .arg(format!("--weights={}", fx.root.join("tiny-bert").display()))
        .arg(format!("--out={}", fx.root.join("bad").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.csv") && err.contains("line 3"),
        "{err}"
    );
    // A text run needs a model folder.
    let out = graft()
        .args(["fit", "--quiet", "--weights", "none"])
        .arg(format!(
            "--data=csv:{}",
            fx.root.join("texts.csv").display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("needs --weights MODEL")
            && err.contains("--weights all-MiniLM-L6-v2"),
        "{err}"
    );
    // The same without --weights: the image default (`imagenet`) means nothing for texts, and
    // nothing is downloaded for it.
    let out = graft()
        .args(["fit", "--quiet"])
        .arg(format!(
            "--data=csv:{}",
            fx.root.join("texts.csv").display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs --weights MODEL"),
        "{err}"
    );
    assert!(!err.contains("downloading"), "{err}");
}
