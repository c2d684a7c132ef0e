//! The linear probe: a frozen backbone's features computed once (and cached on disk), then only
//! the head trains on them, through the same trainer and epoch loop as the other strategies.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::feature_cache::{CacheKey, FeatureStore, file_sha256};
use crate::data::{self, Dataset, Loader, Pipeline, Sampler, Subset};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::metrics::MetricsAccumulator;
use crate::model::params::INTERNAL_HEAD;
use crate::model::{Classifier, Linear};
use crate::tensor::{from_vec, labels as label_tensor, to_vec};
use crate::train::{NamedTensors, Objective, Scores, TensorList};

/// Features of one split: row-major `(n, dim)` and labels.
pub(super) struct FeatureSplit {
    pub(super) x: Vec<f32>,
    pub(super) y: Vec<usize>,
    /// Source index of each row (for the misclassified-samples list).
    pub(super) idx: Vec<usize>,
}

/// The features of every split of `ds`, and how much of them came from the cache.
pub(super) struct Features {
    pub(super) train: FeatureSplit,
    pub(super) val: Option<FeatureSplit>,
    pub(super) test: FeatureSplit,
    /// `hit`, `miss` or `partial`.
    pub(super) cache_status: &'static str,
}

/// Where and under which key features are cached (`None`: random weights, nothing to reuse).
pub(super) struct CacheSpec<'a> {
    pub(super) dir: &'a Path,
    pub(super) model: &'a str,
    pub(super) weights: &'a str,
    pub(super) image_size: usize,
}

/// Runs the frozen `extractor` (a BatchNorm-folded copy: same numbers, less work) over every
/// split, reusing cached rows.
pub(super) fn extract_features(
    extractor: &Classifier,
    ds: &Dataset,
    eval_pipe: &Pipeline,
    cache: &CacheSpec<'_>,
    batch_size: usize,
    quiet: bool,
) -> Result<Features> {
    let dim = extractor.head.weight.dims()[1];
    let weights_id = if cache.weights == "none" {
        None
    } else {
        Some(file_sha256(Path::new(cache.weights))?)
    };
    let mut statuses = Vec::new();
    let mut extract = |subset: &Subset| -> Result<FeatureSplit> {
        let key = match &weights_id {
            Some(w) => Some(CacheKey {
                model: cache.model.to_string(),
                weights_sha256: w.clone(),
                content: subset.source.content_id()?,
                transform: eval_pipe.describe(),
                image_size: cache.image_size,
            }),
            None => None,
        };
        let (x, status) = cached_features(
            extractor,
            subset,
            eval_pipe,
            key.as_ref(),
            cache.dir,
            batch_size,
            quiet,
            dim,
        )?;
        statuses.push(status);
        Ok(FeatureSplit {
            x,
            y: (0..subset.len()).map(|k| subset.label(k)).collect(),
            idx: subset.indices.clone(),
        })
    };
    let train = extract(&ds.train)?;
    let val = ds.val.as_ref().map(&mut extract).transpose()?;
    let test = extract(&ds.test)?;
    let cache_status = if statuses.iter().all(|s| *s == "hit") {
        "hit"
    } else if statuses.iter().all(|s| *s == "miss") {
        "miss"
    } else {
        "partial"
    };
    Ok(Features {
        train,
        val,
        test,
        cache_status,
    })
}

/// Features for `subset`, from the cache where present; extracts (and caches) the rest.
#[allow(clippy::too_many_arguments)]
fn cached_features(
    model: &Classifier,
    subset: &Subset,
    pipe: &Pipeline,
    key: Option<&CacheKey>,
    dir: &Path,
    batch_size: usize,
    quiet: bool,
    dim: usize,
) -> Result<(Vec<f32>, &'static str)> {
    let path = key.map(|k| k.path(dir));
    let mut store = match &path {
        Some(p) => FeatureStore::load(p)?,
        None => FeatureStore::default(),
    };
    if store.dim != 0 && store.dim != dim {
        store = FeatureStore::default();
    }
    let missing = store.missing(&subset.indices);
    if missing.is_empty() {
        return Ok((store.gather(&subset.indices), "hit"));
    }
    let status = if missing.len() == subset.indices.len() {
        "miss"
    } else {
        "partial"
    };
    let todo = Subset {
        source: subset.source.clone(),
        indices: missing,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(todo.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "features [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    };
    let device = model.head.weight.device();
    store.dim = dim;
    for batch in Loader::sequential(todo.clone(), pipe.clone(), batch_size) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let f = to_vec(model.forward_features(x));
        for (row, &src_index) in f.chunks_exact(dim).zip(&batch.indices) {
            store.rows.insert(src_index, row.to_vec());
        }
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(p) = &path {
        store.save(p)?;
    }
    Ok((store.gather(&subset.indices), status))
}

/// A batch of feature rows with their labels.
pub(super) struct FeatureBatch {
    x: Vec<f32>,
    y: Vec<usize>,
}

/// The head alone, trained on cached features.
pub(super) struct HeadObjective<'a> {
    pub(super) loss: &'a Loss,
    pub(super) train: FeatureSplit,
    pub(super) val: Option<FeatureSplit>,
    pub(super) dim: usize,
    pub(super) classes: usize,
    pub(super) batch_size: usize,
    pub(super) seed: u64,
    pub(super) sampler: Sampler,
    pub(super) device: Device,
}

impl Objective for HeadObjective<'_> {
    type Model = Linear;
    type Batch = FeatureBatch;
    /// Logits and labels.
    type Output = (Tensor<2>, Vec<usize>);
    type Tally = MetricsAccumulator;

    fn samples_per_epoch(&self) -> usize {
        self.train.y.len()
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.y.len().div_ceil(self.batch_size)
    }

    fn train_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<FeatureBatch>> + '_> {
        let order = data::epoch_order(&self.train.y, self.sampler, self.seed, epoch as u64);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(batches.into_iter().map(move |idx| {
            let mut x = Vec::with_capacity(idx.len() * self.dim);
            let mut y = Vec::with_capacity(idx.len());
            for &i in &idx {
                x.extend_from_slice(&self.train.x[i * self.dim..(i + 1) * self.dim]);
                y.push(self.train.y[i]);
            }
            Ok(FeatureBatch { x, y })
        }))
    }

    fn batch_len(&self, batch: &FeatureBatch) -> usize {
        batch.y.len()
    }

    fn forward(&self, head: &Linear, batch: FeatureBatch) -> (Tensor<1>, Self::Output) {
        let n = batch.y.len();
        let logits = head.forward(from_vec(batch.x, [n, self.dim], &self.device));
        let loss = self
            .loss
            .forward(logits.clone(), label_tensor(&batch.y, &self.device));
        (loss, (logits, batch.y))
    }

    fn tally(&self) -> MetricsAccumulator {
        MetricsAccumulator::new(self.classes, &[])
    }

    fn record(&self, tally: &mut MetricsAccumulator, (logits, labels): Self::Output, loss: f64) {
        tally.add(&to_vec(logits.detach()), &labels, loss);
    }

    fn validate(&self, head: &Linear) -> Result<Option<Scores>> {
        Ok(self.val.as_ref().map(|v| {
            let head = head.valid();
            let device = head.weight.device();
            evaluate_features(&head, v, self.dim, self.classes, self.loss, &device).scores()
        }))
    }

    fn lr_of(&self, lr: f64, _key: &str) -> f64 {
        lr
    }

    fn snapshot(&self, head: &Linear) -> TensorList {
        let w = head.weight.val();
        let b = head.bias.val();
        vec![
            (
                format!("{INTERNAL_HEAD}.weight"),
                w.dims().to_vec(),
                to_vec(w),
            ),
            (
                format!("{INTERNAL_HEAD}.bias"),
                b.dims().to_vec(),
                to_vec(b),
            ),
        ]
    }

    fn restore(&self, head: Linear, tensors: &NamedTensors) -> Result<Linear> {
        let get = |k: &str| {
            tensors
                .get(&format!("{INTERNAL_HEAD}.{k}"))
                .ok_or_else(|| Error::tensor(k, "missing from the checkpoint"))
        };
        let (ws, wv) = get("weight")?;
        let (_, bv) = get("bias")?;
        if ws.as_slice() != head.weight.dims() {
            return Err(Error::tensor(
                "head.weight",
                format!("checkpoint has {ws:?}, model {:?}", head.weight.dims()),
            ));
        }
        let d = &self.device;
        Ok(Linear {
            weight: Param::from_tensor(from_vec(wv.clone(), [ws[0], ws[1]], d)),
            bias: Param::from_tensor(from_vec(bv.clone(), [bv.len()], d)),
        })
    }
}

/// The head's metrics on a split of features (in chunks, in split order).
pub(super) fn evaluate_features(
    head: &Linear,
    split: &FeatureSplit,
    dim: usize,
    classes: usize,
    loss: &Loss,
    device: &Device,
) -> MetricsAccumulator {
    let mut acc = MetricsAccumulator::new(classes, &[5]);
    let n = split.y.len();
    const CHUNK: usize = 1024;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let x = from_vec(
            split.x[start * dim..end * dim].to_vec(),
            [end - start, dim],
            device,
        );
        let logits = head.forward(x);
        let y = &split.y[start..end];
        let l = to_vec(loss.forward(logits.clone(), label_tensor(y, device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), y, &split.idx[start..end], l);
    }
    acc
}
