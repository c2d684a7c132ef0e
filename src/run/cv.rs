//! Stratified k-fold cross-validation of a fit: each fold of the training pool is the test split
//! once, the other folds train. Linear-probe folds share one feature cache (features are cached
//! per sample of the source, whatever the split).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::task::{TaskFn, with_task};
use crate::train::run_dir::{Prior, prior_run};
use crate::train::{FitOptions, FitSummary, Task, TaskData, check, fit_on, hold_out_validation};

/// What `graft cv` reports (`cv.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvResult {
    /// The test metric of each fold (the task's first metric).
    #[serde(default = "accuracy")]
    pub metric: String,
    /// The metric on each fold's held-out part, in fold order.
    pub folds: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 with one fold).
    pub sd: f64,
    /// The run folder of each fold.
    pub run_dirs: Vec<PathBuf>,
}

fn accuracy() -> String {
    "accuracy".into()
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// The fold's test score from its summary.
fn fold_score(summary: &FitSummary, metric: &str, out: &Path) -> Result<f64> {
    summary.score(&format!("test_{metric}")).ok_or_else(|| {
        Error::file(
            out.join("summary.json"),
            format!("no test_{metric} in this fold's summary (rerun with --overwrite)"),
        )
    })
}

/// Runs the k folds into `dir/fold-N`: a fold finished there with the same settings is reused,
/// an unfinished one resumed.
pub fn cross_validate(
    cfg: &FitConfig,
    k: usize,
    dir: &Path,
    opts: &FitOptions,
) -> Result<CvResult> {
    struct Cv<'a> {
        cfg: &'a FitConfig,
        k: usize,
        dir: &'a Path,
        opts: &'a FitOptions,
    }
    impl TaskFn for Cv<'_> {
        type Output = CvResult;
        fn call<T: Task>(self) -> Result<CvResult> {
            cross_validate_task::<T>(self.cfg, self.k, self.dir, self.opts)
        }
    }
    with_task(&cfg.task, Cv { cfg, k, dir, opts })
}

fn cross_validate_task<T: Task>(
    cfg: &FitConfig,
    k: usize,
    dir: &Path,
    opts: &FitOptions,
) -> Result<CvResult> {
    let cfg = &crate::train::resolve_pretrained::<T>(cfg, opts.quiet)?;
    check::<T>(cfg)?;
    let metric = T::METRICS.first().map_or("loss", |m| m.name);
    // The pool is the training split; the dataset's own test split is not used.
    let pool = T::open(cfg)?;
    let mut folds = Vec::new();
    let mut run_dirs = Vec::new();
    for (i, mut data) in pool.folds(k, cfg.seed)?.into_iter().enumerate() {
        let out = dir.join(format!("fold-{}", i + 1));
        let fold_cfg = FitConfig {
            out: Some(out.clone()),
            ..cfg.clone()
        };
        let resume = match prior_run(&out, &fold_cfg, opts.overwrite)? {
            Prior::Finished(summary) => {
                folds.push(fold_score(&summary, metric, &out)?);
                run_dirs.push(out);
                continue;
            }
            Prior::Unfinished => true,
            Prior::Empty => false,
        };
        data = hold_out_validation(data, cfg)?;
        if !opts.quiet {
            let (train, _, test) = data.sizes();
            eprintln!("fold {}/{k}: train {train}, test {test}", i + 1);
        }
        let fold_opts = FitOptions {
            resume,
            ..opts.clone()
        };
        let summary = fit_on::<T>(&fold_cfg, &fold_opts, data)?;
        let score = summary.score(&format!("test_{metric}")).ok_or_else(|| {
            Error::file(
                out.join("summary.json"),
                format!(
                    "no test_{metric} in this fold's summary (delete the fold folder to rerun it)"
                ),
            )
        })?;
        folds.push(score);
        run_dirs.push(out);
    }
    let (mean, sd) = mean_sd(&folds);
    let result = CvResult {
        metric: metric.to_string(),
        folds,
        mean,
        sd,
        run_dirs,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    write_atomic(&dir.join("cv.json"), json.as_bytes())?;
    Ok(result)
}
