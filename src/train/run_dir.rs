//! A run folder's identity: one process at a time (a lock file), never silently overwritten, and
//! reused by `cv` / `compare` only when it was made with the same settings.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::kernels::{KernelChoice, TrainLayout};

/// The files and folders graft writes into a run folder (what `--overwrite` removes; anything
/// else in the folder is left alone).
const RUN_FILES: &[&str] = &[
    "config.toml",
    "metrics.jsonl",
    "summary.json",
    "eval.json",
    "model.safetensors",
    "model.json",
    "report.html",
    "checkpoint",
];

/// The lock file of a run folder.
const LOCK: &str = ".lock";

/// An exclusive claim on a run folder, released when dropped (or when the process dies: the
/// operating system drops the lock with the file).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the folder's lock, failing at once (with the folder's name) when another process holds
/// it.
pub fn lock(run_dir: &Path) -> Result<RunLock> {
    let path = run_dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::file(
            run_dir,
            "another graft process is using this run folder; wait for it to finish or give \
             another --out",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Whether `run_dir` holds results of a run: a finished epoch (its metrics line or checkpoint),
/// an evaluation, a model or a summary. A folder with only the `config.toml` of a run that
/// failed before its first epoch holds nothing to lose.
pub fn holds_run(run_dir: &Path) -> bool {
    let metrics = run_dir.join("metrics.jsonl");
    std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0)
        || super::checkpoint::exists(run_dir)
        || ["summary.json", "eval.json", "model.safetensors"]
            .iter()
            .any(|f| run_dir.join(f).exists())
}

/// Prepares `run_dir` for a new run: refuses to replace an existing run unless `overwrite`;
/// graft's own files there (a replaced run's, or those of a run that failed before its first
/// epoch) are removed first.
pub fn prepare_new(run_dir: &Path, overwrite: bool) -> Result<()> {
    if !holds_run(run_dir) {
        return clear(run_dir);
    }
    let state = if run_dir.join("summary.json").is_file() {
        "a finished run"
    } else {
        "an unfinished run"
    };
    if !overwrite {
        return Err(Error::file(
            run_dir,
            format!(
                "already holds {state}: continue it with `graft fit --resume {0}`, replace it \
                 with --overwrite, or choose another --out",
                run_dir.display()
            ),
        ));
    }
    clear(run_dir)
}

/// Removes graft's files from `run_dir` (nothing else).
fn clear(run_dir: &Path) -> Result<()> {
    for name in RUN_FILES {
        let path = run_dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("eval-") && name.ends_with(".json") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// What a `cv` fold or `compare` cell folder already holds.
#[derive(Debug)]
pub enum Prior {
    /// Nothing: run it.
    Empty,
    /// A run with these settings that has not finished: resume it.
    Unfinished,
    /// A finished run with these settings: reuse its summary.
    Finished(FitSummary),
}

/// What `dir` holds for a run with settings `cfg`; a run made with other settings is an error
/// naming the first difference (unless `overwrite`, which makes it [`Prior::Empty`]).
pub fn prior_run(dir: &Path, cfg: &FitConfig, overwrite: bool) -> Result<Prior> {
    if !holds_run(dir) {
        return Ok(Prior::Empty);
    }
    let saved = run_config(dir)?;
    if let Some(diff) = first_difference(&saved, cfg) {
        if overwrite {
            return Ok(Prior::Empty);
        }
        return Err(Error::file(
            dir,
            format!(
                "holds a run with other settings ({diff}): give another --out, or --overwrite \
                 to run it again"
            ),
        ));
    }
    Ok(match finished_summary(dir) {
        Some(summary) => Prior::Finished(summary),
        None => Prior::Unfinished,
    })
}

/// The first setting whose value differs between two configs, as `key: a vs b`. Where the run
/// is written (`out`), the feature cache's folder and the kernel switches (which change float
/// rounding, not the experiment) do not count.
fn first_difference(saved: &FitConfig, wanted: &FitConfig) -> Option<String> {
    let table = |c: &FitConfig| -> toml::Table {
        let mut t: toml::Table = toml::from_str(&c.to_toml()).unwrap_or_default();
        for key in ["out", "cache_dir", "kernels", "train_layout"] {
            t.remove(key);
        }
        t
    };
    let (a, b) = (table(saved), table(wanted));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        (x != y).then(|| {
            let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
            format!("{k}: {} there, {} now", show(x), show(y))
        })
    })
}

/// What a run reports; `graft fit --json` prints it as one line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    /// `test_<metric>` and `val_<metric>` (the last epoch's; null without a validation split)
    /// for each metric of the task.
    #[serde(flatten)]
    pub scores: BTreeMap<String, Option<f64>>,
    /// The last epoch's mean training loss (NaN when no epoch ran).
    pub train_loss: f64,
    /// Epochs trained (fewer than asked after early stopping).
    pub epochs: usize,
    /// Wall-clock seconds of the whole fit.
    pub seconds: f64,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The task's name (the `task` setting).
    pub task: String,
    /// The model (a zoo name, or a text model folder).
    pub model: String,
    /// The training strategy, as its setting's text.
    pub strategy: String,
    /// `hit`, `miss` or `partial` for linear probes (how much of the feature cache was reused).
    pub feature_cache: Option<String>,
    /// Whether early stopping ended the run before its last epoch.
    pub stopped_early: bool,
    /// Parameters the run trained (the head alone for a linear probe).
    pub trainable_params: usize,
    /// The CPU kernels and training layout the run used (settings, or their environment
    /// overrides).
    pub kernels: KernelChoice,
    /// The memory layout of activations while training.
    pub train_layout: TrainLayout,
}

impl FitSummary {
    /// A score by name (`test_accuracy`).
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied().flatten()
    }
}

/// The settings a run folder was made with (its `config.toml`).
pub fn run_config(run_dir: &Path) -> Result<FitConfig> {
    let path = run_dir.join("config.toml");
    if !run_dir.is_dir() {
        return Err(Error::file(
            run_dir,
            format!("no such run folder{}", runs_nearby(run_dir)),
        ));
    }
    if !path.is_file() {
        return Err(Error::file(
            run_dir,
            "not a run folder: it has no config.toml (give a folder written by `graft fit`)",
        ));
    }
    FitConfig::from_toml_file(&path)
}

/// For a run folder that does not exist: the run folders beside where it would be (the most
/// recent first, at most five), so a typo shows the right name; or where `fit` puts runs.
pub fn runs_nearby(run_dir: &Path) -> String {
    let parent = match run_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut runs: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&parent)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("config.toml").is_file())
                .map(|e| {
                    let when = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (when, e.path().display().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if runs.is_empty() {
        return " (`graft fit` prints the folder of each run it makes, runs/MODEL-STRATEGY-TIME \
                 by default, or the one given with --out)"
            .into();
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.0));
    let names: Vec<String> = runs.into_iter().take(5).map(|(_, n)| n).collect();
    format!("; run folders there, newest first: {}", names.join(", "))
}

/// The summary of a finished run, if `run_dir` holds one.
pub fn finished_summary(run_dir: &Path) -> Option<FitSummary> {
    let text = crate::files::read_text(&run_dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}
