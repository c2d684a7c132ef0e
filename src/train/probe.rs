//! The linear probe: a frozen backbone's features computed once (and cached on disk), then only
//! the head trains on them, through the same epoch loop as the other strategies.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::cache::{CacheKey, FeatureStore, file_sha256};
use super::checkpoint;
use super::fit::{Ctx, EpochRunner, EpochSteps, Outcome, run_epochs};
use super::loss::Loss;
use super::optim::Optimizer;
use crate::config::FitConfig;
use crate::data::{self, Dataset, Loader, Pipeline, Sampler, Subset};
use crate::error::{Error, Result};
use crate::eval::MetricsAccumulator;
use crate::model::params::INTERNAL_HEAD;
use crate::model::{Classifier, Linear};
use crate::tensor::{from_vec, labels as label_tensor, to_vec};

/// Features of one split: row-major `(n, dim)` and labels.
struct FeatureSplit {
    x: Vec<f32>,
    y: Vec<usize>,
    /// Source index of each row (for the misclassified-samples list).
    idx: Vec<usize>,
}

pub(super) fn run_probe(
    ctx: &Ctx<'_>,
    model: Classifier,
    ds: &Dataset,
    eval_pipe: &Pipeline,
    classes: usize,
) -> Result<Outcome> {
    let cfg = ctx.cfg;
    let dim = ctx.preset.arch.feature_dim();
    // The backbone runs in inference mode on the plain device: no autodiff, BN uses its
    // pretrained statistics.
    let frozen = model.valid();
    // Features come from a BatchNorm-folded copy: same numbers (tests/parity.rs), less work.
    let extractor = frozen.folded_for_inference();
    let weights_id = if cfg.weights == "none" {
        None
    } else {
        Some(file_sha256(Path::new(&cfg.weights))?)
    };
    let mut statuses = Vec::new();
    let mut extract = |subset: &Subset| -> Result<FeatureSplit> {
        let source = if std::sync::Arc::ptr_eq(&subset.source, &ds.test.source) {
            "test"
        } else {
            "train"
        };
        let key = weights_id.as_ref().map(|w| CacheKey {
            model: ctx.preset.name.to_string(),
            weights_sha256: w.clone(),
            data: cfg.data.clone(),
            source: source.to_string(),
            transform: eval_pipe.describe(),
            image_size: cfg.image_size.unwrap_or(ctx.preset.input_size),
        });
        let dir = cache_dir(cfg);
        let (x, status) = cached_features(
            &extractor,
            subset,
            eval_pipe,
            key.as_ref(),
            &dir,
            cfg.batch_size,
            ctx.quiet,
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
    let status = if statuses.iter().all(|s| *s == "hit") {
        "hit"
    } else if statuses.iter().all(|s| *s == "miss") {
        "miss"
    } else {
        "partial"
    };

    let ad = ctx.device.clone().autodiff();
    let mut runner = HeadRunner {
        head: frozen.head.clone().train(),
        optimizer: Optimizer::new(ctx.plan.optimizer),
        loss: ctx.loss,
        train,
        val,
        dim,
        classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        balanced: ctx.plan.balanced,
        device: ad,
    };
    let (history, stopped_early) = run_epochs(ctx, &mut runner)?;
    let head = runner.head.valid();
    let plain = ctx.device.clone();
    let test_metrics = evaluate_features(&head, &test, dim, classes, ctx.loss, &plain);
    let trainable = head.weight.dims().iter().product::<usize>() + head.bias.dims()[0];
    let mut model = frozen;
    model.head = head;
    let (total, _) = crate::model::params::count_params(&model);
    Ok(Outcome {
        model,
        history,
        test: test_metrics,
        cache_status: Some(status.to_string()),
        stopped_early,
        trainable: (total, trainable),
    })
}

/// The feature cache folder: `--cache-dir`, `$GRAFT_CACHE_DIR`, or `~/.cache/graft`.
pub fn cache_dir(cfg: &FitConfig) -> PathBuf {
    if let Some(d) = &cfg.cache_dir {
        return d.clone();
    }
    if let Ok(d) = std::env::var("GRAFT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var("HOME") {
        Ok(home) => PathBuf::from(home).join(".cache/graft"),
        Err(_) => PathBuf::from(".cache/graft"),
    }
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

struct HeadRunner<'a> {
    head: Linear,
    optimizer: Optimizer,
    loss: &'a Loss,
    train: FeatureSplit,
    val: Option<FeatureSplit>,
    dim: usize,
    classes: usize,
    batch_size: usize,
    seed: u64,
    balanced: bool,
    device: Device,
}

impl EpochRunner for HeadRunner<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.train.y.len().div_ceil(self.batch_size)
    }

    fn train_epoch(&mut self, epoch: usize, lr: f64, bar: &ProgressBar) -> Result<(f64, f64)> {
        let n = self.train.y.len();
        let sampler = if self.balanced {
            Sampler::Balanced
        } else {
            Sampler::Shuffle
        };
        let order = data::epoch_order(&self.train.y, sampler, self.seed, epoch as u64);
        let lr_of = |_: &str| lr;
        let mut steps = EpochSteps::new(
            &mut self.optimizer,
            self.loss,
            &lr_of,
            n,
            self.classes,
            epoch,
        );
        let mut head = self.head.clone();
        for (step, idx) in order.chunks(self.batch_size).enumerate() {
            let mut xb = Vec::with_capacity(idx.len() * self.dim);
            let mut yb = Vec::with_capacity(idx.len());
            for &i in idx {
                xb.extend_from_slice(&self.train.x[i * self.dim..(i + 1) * self.dim]);
                yb.push(self.train.y[i]);
            }
            let logits = head.forward(from_vec(xb, [idx.len(), self.dim], &self.device));
            head = steps.batch(head, logits, &yb, step)?;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", steps.progress().0));
        }
        let (head, result) = steps.finish(head);
        self.head = head;
        Ok(result)
    }

    fn validate(&self) -> Result<Option<(f64, f64)>> {
        Ok(self.val.as_ref().map(|v| {
            let head = self.head.valid();
            let m = evaluate_features(
                &head,
                v,
                self.dim,
                self.classes,
                self.loss,
                &head.weight.device(),
            );
            (m.mean_loss(), m.accuracy())
        }))
    }

    fn snapshot(
        &self,
    ) -> (
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        let w = self.head.weight.val();
        let b = self.head.bias.val();
        (
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
            ],
            self.optimizer.state_tensors(),
        )
    }

    fn restore(
        &mut self,
        model: &checkpoint::NamedTensors,
        optim: &checkpoint::NamedTensors,
    ) -> Result<()> {
        let get = |k: &str| {
            model
                .get(&format!("{INTERNAL_HEAD}.{k}"))
                .ok_or_else(|| Error::tensor(k, "missing from the checkpoint"))
        };
        let (ws, wv) = get("weight")?;
        let (_, bv) = get("bias")?;
        if ws.as_slice() != self.head.weight.dims() {
            return Err(Error::tensor(
                "head.weight",
                format!("checkpoint has {ws:?}, model {:?}", self.head.weight.dims()),
            ));
        }
        let d = self.device.clone();
        self.head = Linear {
            weight: burn::module::Param::from_tensor(from_vec(wv.clone(), [ws[0], ws[1]], &d)),
            bias: burn::module::Param::from_tensor(from_vec(bv.clone(), [bv.len()], &d)),
        };
        self.optimizer.load_state(optim, &d)
    }
}

fn evaluate_features(
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
