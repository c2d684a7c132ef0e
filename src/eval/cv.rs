//! Stratified k-fold cross-validation of a fit: each fold of the training pool is the test split
//! once, the other folds train. Linear-probe folds share one feature cache (features are cached
//! per sample of the source, whatever the split).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::data::{Dataset, stratified_kfold};
use crate::error::{Error, Result};
use crate::train::fit::{FitOptions, finished_summary, fit_on, open_dataset};

/// What `graft cv` reports (`cv.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvResult {
    pub folds: Vec<f64>,
    pub mean: f64,
    pub sd: f64,
    pub run_dirs: Vec<PathBuf>,
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

/// The k fold datasets of `pool`'s training split: (train = other folds, test = this fold).
pub fn fold_datasets(pool: &Dataset, k: usize, seed: u64) -> Result<Vec<Dataset>> {
    if k < 2 {
        return Err(Error::invalid(format!(
            "--folds must be at least 2, got {k}"
        )));
    }
    let labels = pool.train.labels();
    if labels.len() < k {
        return Err(Error::invalid(format!(
            "{} training samples cannot make {k} folds",
            labels.len()
        )));
    }
    let folds = stratified_kfold(&labels, k, seed);
    Ok((0..k)
        .map(|i| {
            let train: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            Dataset {
                name: format!("{} fold {}/{k}", pool.name, i + 1),
                class_names: pool.class_names.clone(),
                train: pool.train.select(&train),
                val: None,
                test: pool.train.select(&folds[i]),
            }
        })
        .collect())
}

/// Runs the k folds into `dir/fold-N`, skipping folds already finished there.
pub fn cross_validate(
    cfg: &FitConfig,
    k: usize,
    dir: &Path,
    opts: &FitOptions,
) -> Result<CvResult> {
    cfg.plan()?;
    // The pool is the training split; the dataset's own test split is not used.
    let pool = open_dataset(&FitConfig {
        val_split: 0.0,
        ..cfg.clone()
    })?;
    let mut folds = Vec::new();
    let mut run_dirs = Vec::new();
    for (i, mut ds) in fold_datasets(&pool, k, cfg.seed)?.into_iter().enumerate() {
        let out = dir.join(format!("fold-{}", i + 1));
        let summary = match finished_summary(&out) {
            Some(s) => s,
            None => {
                if cfg.val_split > 0.0 {
                    ds = ds.with_val_split(cfg.val_split, cfg.seed);
                }
                if !opts.quiet {
                    eprintln!(
                        "fold {}/{k}: train {}, test {}",
                        i + 1,
                        ds.train.len(),
                        ds.test.len()
                    );
                }
                let fold_cfg = FitConfig {
                    out: Some(out.clone()),
                    ..cfg.clone()
                };
                fit_on(&fold_cfg, opts, ds)?
            }
        };
        folds.push(summary.test_accuracy);
        run_dirs.push(out);
    }
    let (mean, sd) = mean_sd(&folds);
    let result = CvResult {
        folds,
        mean,
        sd,
        run_dirs,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    crate::train::checkpoint::write_atomic(&dir.join("cv.json"), json.as_bytes())?;
    Ok(result)
}
