//! `graft rank`: scores candidate backbones for a labelled image dataset from their frozen
//! features alone (`crate::transferability`), so that one can choose what to fine-tune without
//! training each candidate. Features come from (and go to) the linear probe's cache, so a
//! later `fit --strategy linear-probe` or `compare --ranking` on the same data reuses them.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::FitConfig;
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::task::image_classification::{SourceHead, training_features};
use crate::transferability::{Estimator, hscore, knn, leep, logme};

/// One candidate: a zoo model and its weights (`none`: random init).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The zoo model's name.
    pub model: String,
    /// A weights file, or `none` for random init.
    pub weights: String,
}

/// Parses `M1@W1,M2@W2,...` (a bare `M` means random weights).
pub fn parse_candidates(spec: &str) -> Result<Vec<Candidate>> {
    let list: Vec<Candidate> = spec
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (model, weights) = item.trim().split_once('@').unwrap_or((item.trim(), "none"));
            Candidate {
                model: model.to_string(),
                weights: weights.to_string(),
            }
        })
        .collect();
    if list.len() < 2 {
        return Err(Error::invalid(format!(
            "--models `{spec}`: give at least two candidates as MODEL@WEIGHTS,MODEL@WEIGHTS \
             (MODEL@none or a bare MODEL for random weights)"
        )));
    }
    for c in &list {
        crate::model::preset(&c.model)?;
        let published = matches!(
            crate::weights::hub::classify(&c.weights, &c.model)?,
            crate::weights::hub::WeightsSpec::Published(_)
        );
        if c.weights != "none" && !published && !std::path::Path::new(&c.weights).is_file() {
            return Err(Error::invalid(format!(
                "--models: weights `{}` of {} is neither a file nor published weights (give a \
                 .pth/.safetensors path, imagenet, an id of `graft weights`, or none for random \
                 weights)",
                c.weights, c.model
            )));
        }
    }
    Ok(list)
}

/// One candidate's scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// The zoo model's name.
    pub model: String,
    /// Its weights file, or `none`.
    pub weights: String,
    /// The primary metric's score (`null` where it cannot be computed, e.g. LEEP without a
    /// source head).
    pub score: Option<f64>,
    /// Every requested metric.
    pub scores: BTreeMap<String, Option<f64>>,
    /// Feature extraction (or cache read) + scoring.
    pub seconds: f64,
    /// Whether the features came from the cache: `hit`, `miss` or `partial`.
    pub feature_cache: String,
    /// Training samples the scores were computed on.
    pub samples: usize,
}

/// The ranking: candidates in the given order, and the best by the primary metric
/// (`rank.json`, read by the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ranking {
    /// The dataset spec.
    pub data: String,
    /// Every metric computed, the first ranking.
    pub metrics: Vec<String>,
    /// The primary metric: the one candidates are ranked by.
    pub metric: String,
    /// Every candidate's scores, in the order given.
    pub candidates: Vec<Scored>,
    /// The best candidate by the primary metric (`model@weights`), if any has a score.
    pub recommended: Option<String>,
    /// With `--against DIR`: Kendall's τ between each metric's scores and the test accuracies
    /// of the probes in `DIR/compare.json` (`graft compare --ranking`), over the candidates
    /// both have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
}

/// How a ranking agrees with trained probes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agreement {
    /// The `graft compare` folder the ranking was compared with.
    pub against: String,
    /// Per metric: τ (null with fewer than two candidates in common or no spread), and over
    /// how many candidates.
    pub kendall_tau: BTreeMap<String, Option<f64>>,
    /// Per metric: the number of candidates τ was computed over.
    pub candidates: BTreeMap<String, usize>,
    /// The probes' test accuracy per candidate (`model@weights`).
    pub probe_accuracy: BTreeMap<String, f64>,
}

/// Kendall's τ of each metric of `ranking` against the cells of a `graft compare` folder whose
/// grid varies `model` (`model=M@W,...`), matched by `model@weights`.
pub fn agreement(ranking: &Ranking, compare_dir: &std::path::Path) -> Result<Agreement> {
    let path = compare_dir.join("compare.json");
    let text = crate::files::read_file(&path)?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::file(&path, format!("not a graft compare.json ({e})")))?;
    let mut probe_accuracy = BTreeMap::new();
    for cell in json["cells"].as_array().into_iter().flatten() {
        if let (Some(model), Some(test)) =
            (cell["settings"]["model"].as_str(), cell["test"].as_f64())
        {
            let key = if model.contains('@') {
                model.to_string()
            } else {
                format!("{model}@none")
            };
            probe_accuracy.insert(key, test);
        }
    }
    if probe_accuracy.is_empty() {
        return Err(Error::file(
            &path,
            "no cell varies `model`: run graft compare --ranking --grid model=M@W,... with the \
             same candidates",
        ));
    }
    let mut kendall_tau = BTreeMap::new();
    let mut candidates = BTreeMap::new();
    for m in &ranking.metrics {
        let (mut scores, mut accs) = (Vec::new(), Vec::new());
        for c in &ranking.candidates {
            let key = format!("{}@{}", c.model, c.weights);
            if let (Some(s), Some(a)) =
                (c.scores.get(m).copied().flatten(), probe_accuracy.get(&key))
            {
                scores.push(s);
                accs.push(*a);
            }
        }
        kendall_tau.insert(
            m.clone(),
            crate::transferability::kendall_tau(&scores, &accs),
        );
        candidates.insert(m.clone(), scores.len());
    }
    Ok(Agreement {
        against: compare_dir.display().to_string(),
        kendall_tau,
        candidates,
        probe_accuracy,
    })
}

/// Scores every candidate on `base`'s data (its `--limit-train`, image size, resize, cache)
/// with each of `metrics` (the first is the primary one).
pub fn rank(
    base: &FitConfig,
    candidates: &[Candidate],
    metrics: &[Estimator],
    quiet: bool,
) -> Result<Ranking> {
    let primary = *metrics
        .first()
        .ok_or_else(|| Error::invalid("--metric: give at least one"))?;
    let mut ds: Dataset = data::open(&base.data)?;
    if let Some(n) = base.limit_train {
        ds = ds.limit_train(n, base.seed);
    }
    let device = base.device.device()?;
    let classes = ds.class_names.len();
    let mut rows = Vec::new();
    for c in candidates {
        let started = Instant::now();
        let cfg = FitConfig {
            model: c.model.clone(),
            weights: c.weights.clone(),
            ..base.clone()
        };
        // `M@imagenet` or a published id: fetched (or taken from the cache) and checked.
        let cfg = crate::train::resolve_pretrained::<
            crate::task::image_classification::ImageClassification,
        >(&cfg, quiet)?;
        let tf = training_features(&cfg, &ds, &device, quiet)?;
        let (x, y, d) = (&tf.features.x, &tf.features.y, tf.dim);
        let mut scores = BTreeMap::new();
        for &m in metrics {
            let value = match m {
                Estimator::LogMe => Some(logme::logme(x, y, d, classes)?),
                Estimator::HScore => Some(hscore::hscore(x, y, d, classes)?),
                Estimator::Knn => Some(knn::knn_accuracy(x, y, d, classes)),
                Estimator::Leep | Estimator::Nce => tf.source_head.as_ref().map(|h| {
                    let probs = source_softmax(h, x, d);
                    if m == Estimator::Leep {
                        leep::leep(&probs, h.classes, y, classes)
                    } else {
                        let top: Vec<usize> = probs
                            .chunks(h.classes)
                            .map(|r| {
                                (0..h.classes)
                                    .max_by(|&a, &b| r[a].total_cmp(&r[b]))
                                    .unwrap_or(0)
                            })
                            .collect();
                        leep::nce(&top, h.classes, y, classes)
                    }
                }),
            };
            scores.insert(m.to_string(), value.filter(|v| v.is_finite()));
        }
        let row = Scored {
            model: c.model.clone(),
            weights: c.weights.clone(),
            score: scores.get(&primary.to_string()).copied().flatten(),
            scores,
            seconds: started.elapsed().as_secs_f64(),
            feature_cache: tf.cache_status.to_string(),
            samples: y.len(),
        };
        if !quiet {
            eprintln!(
                "{}@{}: {primary} {} ({:.1} s, features {})",
                row.model,
                row.weights,
                row.score.map_or("n/a".to_string(), |s| format!("{s:.4}")),
                row.seconds,
                row.feature_cache
            );
        }
        rows.push(row);
    }
    let recommended = rows
        .iter()
        .filter_map(|r| r.score.map(|s| (s, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, r)| format!("{}@{}", r.model, r.weights));
    Ok(Ranking {
        data: base.data.clone(),
        metrics: metrics.iter().map(ToString::to_string).collect(),
        metric: primary.to_string(),
        candidates: rows,
        recommended,
        agreement: None,
    })
}

/// Writes `dir/rank.json` (atomically); `graft report dir` turns it into a page.
pub fn save(dir: &std::path::Path, ranking: &Ranking) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("rank.json");
    let json = serde_json::to_string_pretty(ranking).unwrap_or_default();
    crate::files::write_atomic(&path, json.as_bytes())?;
    Ok(path)
}

/// The source head's softmax on features `x`: `(n, source classes)`.
fn source_softmax(h: &SourceHead, x: &[f32], d: usize) -> Vec<f32> {
    let n = x.len() / d.max(1);
    let mut z =
        crate::kernels::linear::linear_forward(x, &h.weight, Some(&h.bias), n, d, h.classes);
    for row in z.chunks_mut(h.classes) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        row.iter_mut().for_each(|v| *v = (*v - max).exp() / sum);
    }
    z
}
