//! Fine-tune, partial fine-tune and scratch: the whole network in the epoch loop, with the
//! strategy's trainable stages and BatchNorm policy applied.

use burn::module::Module;
use burn::tensor::Device;
use indicatif::ProgressBar;

use super::checkpoint;
use super::fit::{Ctx, EpochRunner, EpochSteps, Outcome, run_epochs};
use super::loss::Loss;
use super::optim::Optimizer;
use crate::config::Strategy;
use crate::data::{Dataset, Loader, Pipeline, Sampler, Subset};
use crate::error::Result;
use crate::eval::MetricsAccumulator;
use crate::model::params::{
    INTERNAL_HEAD, Strictness, Trainable, load_into, named_tensors, set_trainable,
};
use crate::model::{Classifier, Preset};
use crate::tensor::{from_vec, labels as label_tensor, to_vec};
use crate::weights::TensorMap;

/// The stage (0 = stem) a checkpoint key belongs to, and how many stages the backbone has.
/// `partial:K` trains the last K stages plus the head.
pub fn stage_of(preset: &Preset, key: &str) -> (usize, usize) {
    use crate::model::Arch;
    match preset.arch {
        Arch::ResNet(_) => {
            let stage = ["layer1", "layer2", "layer3", "layer4"]
                .iter()
                .position(|s| key.starts_with(&format!("{s}.")))
                .map_or(0, |i| i + 1);
            (stage, 5)
        }
        Arch::EfficientNet(spec) => {
            // Stem, one stage per row of the stage table, then the 1x1 head convolution.
            let n = spec.stages.len() + 2;
            if let Some(rest) = key.strip_prefix("_blocks.") {
                let block: usize = rest
                    .split('.')
                    .next()
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                let mut end = 0;
                for (i, s) in spec.stages.iter().enumerate() {
                    end += s.0;
                    if block < end {
                        return (i + 1, n);
                    }
                }
                (n - 2, n)
            } else if key.starts_with("_conv_head") || key.starts_with("_bn1") {
                (n - 1, n)
            } else {
                (0, n)
            }
        }
    }
}

pub(super) fn run_network(
    ctx: &Ctx<'_>,
    model: Classifier,
    ds: &Dataset,
    train_pipe: &Pipeline,
    eval_pipe: &Pipeline,
    classes: usize,
) -> Result<Outcome> {
    let cfg = ctx.cfg;
    let preset = *ctx.preset;
    let head = preset.head_name;
    let is_head = |key: &str| key.starts_with(&format!("{head}."));
    let trains = |key: &str| -> bool {
        if is_head(key) {
            return true;
        }
        match ctx.plan.strategy {
            Strategy::Partial(k) => {
                let (stage, n) = stage_of(&preset, key);
                stage + k >= n
            }
            _ => true,
        }
    };
    let bn_trains = |key: &str| !ctx.plan.bn_frozen && trains(&format!("{key}.weight"));
    let ad = ctx.device.clone().autodiff();
    let model = set_trainable(
        model.set_bn_momentum(cfg.bn_momentum).train(),
        head,
        &Trainable {
            param: &trains,
            batch_norm: &bn_trains,
        },
    );
    let trainable = crate::model::params::count_params(&model);
    if !ctx.quiet {
        eprintln!("{} of {} parameters train", trainable.1, trainable.0);
    }
    let mult = cfg.backbone_lr_mult;
    let mut runner = NetworkRunner {
        model,
        optimizer: Optimizer::new(ctx.plan.optimizer),
        loss: ctx.loss,
        train: ds.train.clone(),
        val: ds.val.clone(),
        train_pipe: train_pipe.clone(),
        eval_pipe: eval_pipe.clone(),
        classes,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        sampler: if ctx.plan.balanced {
            Sampler::Balanced
        } else {
            Sampler::Shuffle
        },
        lr_mult: mult,
        head_name: head,
        device: ad,
    };
    let (history, stopped_early) = run_epochs(ctx, &mut runner)?;
    let model = runner.model.valid();
    // Evaluation runs the BatchNorm-folded, channels-last copy (same numbers, tests/parity.rs);
    // the model itself stays as trained.
    let test = evaluate_network(
        &model.folded_for_inference(),
        &ds.test,
        eval_pipe,
        cfg.batch_size,
        ctx.loss,
        classes,
        ctx.quiet,
    )?;
    Ok(Outcome {
        model,
        history,
        test,
        cache_status: None,
        stopped_early,
        trainable,
    })
}

struct NetworkRunner<'a> {
    model: Classifier,
    optimizer: Optimizer,
    loss: &'a Loss,
    train: Subset,
    val: Option<Subset>,
    train_pipe: Pipeline,
    eval_pipe: Pipeline,
    classes: usize,
    batch_size: usize,
    seed: u64,
    sampler: Sampler,
    lr_mult: f64,
    head_name: &'static str,
    device: Device,
}

impl EpochRunner for NetworkRunner<'_> {
    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    fn train_epoch(&mut self, epoch: usize, lr: f64, bar: &ProgressBar) -> Result<(f64, f64)> {
        let n = self.train.len();
        let mult = self.lr_mult;
        let lr_of = move |key: &str| {
            // Head keys are `head.*`: the head learns at `lr`, the backbone at `lr * mult`.
            let is_head = key
                .strip_prefix(INTERNAL_HEAD)
                .is_some_and(|rest| rest.starts_with('.'));
            if is_head { lr } else { lr * mult }
        };
        let mut steps = EpochSteps::new(
            &mut self.optimizer,
            self.loss,
            &lr_of,
            n,
            self.classes,
            epoch,
        );
        let mut model = self.model.clone();
        let loader = Loader::new(
            self.train.clone(),
            self.train_pipe.clone(),
            self.batch_size,
            self.sampler,
            self.seed,
            epoch as u64,
        );
        for (step, batch) in loader.enumerate() {
            let batch = batch?;
            let logits = model.forward(from_vec(batch.images, batch.shape, &self.device));
            model = steps.batch(model, logits, &batch.labels, step)?;
            bar.inc(1);
            let (loss, acc) = steps.progress();
            bar.set_message(format!("loss {loss:.4} acc {acc:.3}"));
        }
        let (model, result) = steps.finish(model);
        self.model = model;
        Ok(result)
    }

    fn validate(&self) -> Result<Option<(f64, f64)>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let m = evaluate_network(
            &self.model.folded_for_inference(),
            val,
            &self.eval_pipe,
            self.batch_size,
            self.loss,
            self.classes,
            true,
        )?;
        Ok(Some((m.mean_loss(), m.accuracy())))
    }

    fn snapshot(
        &self,
    ) -> (
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        (
            named_tensors(&self.model, self.head_name),
            self.optimizer.state_tensors(),
        )
    }

    fn restore(
        &mut self,
        model: &checkpoint::NamedTensors,
        optim: &checkpoint::NamedTensors,
    ) -> Result<()> {
        let map = named_to_map(model);
        let (m, _) = load_into(self.model.clone(), &map, self.head_name, Strictness::Strict)?;
        self.model = m;
        self.optimizer.load_state(optim, &self.device)
    }
}

fn named_to_map(t: &checkpoint::NamedTensors) -> TensorMap {
    use crate::weights::{DType, Format, RawTensor};
    TensorMap {
        format: Format::Safetensors,
        tensors: t
            .iter()
            .map(|(k, (s, v))| {
                (
                    k.clone(),
                    RawTensor {
                        dtype: DType::F32,
                        shape: s.clone(),
                        data: v.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// Runs `model` (inference mode) over `subset` and accumulates the metrics.
pub fn evaluate_network(
    model: &Classifier,
    subset: &Subset,
    pipe: &Pipeline,
    batch_size: usize,
    loss: &Loss,
    classes: usize,
    quiet: bool,
) -> Result<MetricsAccumulator> {
    let device = model.head.weight.device();
    let mut acc = MetricsAccumulator::new(classes, &[5]);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(subset.len() as u64)
    };
    for batch in Loader::sequential(subset.clone(), pipe.clone(), batch_size) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let logits = model.forward(x);
        let l =
            to_vec(loss.forward(logits.clone(), label_tensor(&batch.labels, &device)))[0] as f64;
        acc.add_indexed(&to_vec(logits), &batch.labels, &batch.indices, l);
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    Ok(acc)
}
