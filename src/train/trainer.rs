//! Training a model by gradient steps, for any task: the task's [`Objective`] says which batches
//! an epoch visits and what the loss of a batch is; the [`Trainer`] does the rest — each batch's
//! backward and optimizer step, or for `gd` the gradients of the whole epoch accumulated into
//! one step (each batch's mean loss weighted by its share, so the sum is the full-batch mean) —
//! and is the [`EpochRunner`] the epoch loop drives.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::epochs::{EpochRunner, EpochTrained};
use crate::error::{Error, Result};
use crate::metrics::{Scores, Tally};
use crate::optim::{EpochRates, Grads, Optimizer, OptimizerConfig, OptimizerKind};
use crate::progress::Progress;
use crate::tensor::to_vec;
use crate::weights::{NamedTensors, TensorList};

/// What a task trains, and how (burn-train's `TrainStep`, HF Trainer's `compute_loss`).
pub trait Objective {
    /// The module whose parameters train (on the autodiff device).
    type Model: Module + Clone;
    /// One collated batch.
    type Batch;
    /// What the forward pass yields besides the loss (e.g. logits), for the metrics.
    type Output;
    /// The running metrics of an epoch.
    type Tally: Tally;

    /// Samples one training epoch visits (the weights of `gd`'s accumulated step).
    fn samples_per_epoch(&self) -> usize;
    /// Steps in an epoch.
    fn steps_per_epoch(&self) -> usize;
    /// The batches of training epoch `epoch` (its order and augmentation derive from the seed
    /// and `epoch`, so a resumed run replays it exactly).
    fn train_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_>;
    /// Samples in `batch`.
    fn batch_len(&self, batch: &Self::Batch) -> usize;
    /// The forward pass in training mode: the batch's mean loss (`(1,)`, in the autodiff graph)
    /// and its outputs.
    fn forward(&self, model: &Self::Model, batch: Self::Batch) -> (Tensor<1>, Self::Output);
    /// A fresh tally for an epoch.
    fn tally(&self) -> Self::Tally;
    /// Adds a batch's outputs and mean loss to `tally`.
    fn record(&self, tally: &mut Self::Tally, output: Self::Output, loss: f64);
    /// Scores on the validation split, if there is one.
    fn validate(&self, model: &Self::Model) -> Result<Option<Scores>>;
    /// The learning rate of the parameter with checkpoint key `key` when the epoch's rate is
    /// `lr` (discriminative rates: the backbone may learn slower than the head).
    fn lr_of(&self, lr: f64, key: &str) -> f64;
    /// The model's tensors for a checkpoint.
    fn snapshot(&self, model: &Self::Model) -> TensorList;
    /// `model` with the tensors of a checkpoint.
    fn restore(&self, model: Self::Model, tensors: &NamedTensors) -> Result<Self::Model>;
}

/// A model, its optimizer and the objective it trains on.
pub struct Trainer<O: Objective> {
    /// What is learned, and from which batches.
    pub objective: O,
    /// The model as trained so far.
    pub model: O::Model,
    optimizer: Optimizer,
    device: Device,
    /// When set, the device's random stream (dropout masks) restarts at every epoch from
    /// (seed, epoch): a resumed run draws the same masks as one that never stopped.
    seed: Option<u64>,
}

impl<O: Objective> Trainer<O> {
    /// `model` lives on `device` (autodiff); the optimizer starts with empty state.
    pub fn new(objective: O, model: O::Model, optimizer: OptimizerConfig, device: Device) -> Self {
        Self {
            objective,
            model,
            optimizer: Optimizer::new(optimizer),
            device,
            seed: None,
        }
    }

    /// Reseeds the device's random stream from (`seed`, epoch) at the start of every epoch (for
    /// models that draw random numbers while training: dropout).
    pub fn seeded(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

impl<O: Objective> EpochRunner for Trainer<O> {
    fn steps_per_epoch(&self) -> usize {
        self.objective.steps_per_epoch()
    }

    fn optimizer_steps_per_epoch(&self) -> usize {
        if self.optimizer.config.kind == OptimizerKind::Gd {
            1
        } else {
            self.objective.steps_per_epoch()
        }
    }

    fn train_epoch(
        &mut self,
        epoch: usize,
        rates: &EpochRates,
        progress: &Progress,
    ) -> Result<EpochTrained> {
        if let Some(seed) = self.seed {
            self.device.seed(crate::data::derive_seed(&[
                seed,
                epoch as u64,
                0x0000_6472_6f70,
            ]));
        }
        let objective = &self.objective;
        let samples = objective.samples_per_epoch();
        let full_batch = self.optimizer.config.kind == OptimizerKind::Gd;
        let mut tally = objective.tally();
        let mut grads = Grads::default();
        let mut model = self.model.clone();
        // The loss of each optimizer step; `gd`'s one step has the full-batch mean, the sum
        // of the batches' share-weighted means.
        let mut step_losses = Vec::with_capacity(self.optimizer_steps_per_epoch());
        let mut full_batch_loss = 0.0;
        for (step, batch) in objective.train_batches(epoch).enumerate() {
            let batch = batch?;
            let share = objective.batch_len(&batch) as f64 / samples as f64;
            let (mut loss, output) = objective.forward(&model, batch);
            if full_batch {
                loss = loss.mul_scalar(share);
            }
            let value = to_vec(loss.clone())[0] as f64;
            let mean = if full_batch { value / share } else { value };
            check_finite(mean, epoch, step)?;
            objective.record(&mut tally, output, mean);
            if full_batch {
                full_batch_loss += value;
            } else {
                step_losses.push(mean);
            }
            grads.accumulate(&model, &mut loss.backward());
            if !full_batch {
                let lr = rates.at(step);
                model = self
                    .optimizer
                    .step(model, &grads, &|key: &str| objective.lr_of(lr, key));
                grads = Grads::default();
            }
            progress.inc(1);
            progress.set_message(tally.scores().text());
        }
        let scores = tally.scores();
        if full_batch {
            let lr = rates.at(0);
            model = self
                .optimizer
                .step(model, &grads, &|key: &str| objective.lr_of(lr, key));
            step_losses.push(full_batch_loss);
        }
        self.model = model;
        Ok(EpochTrained {
            scores,
            step_losses,
        })
    }

    fn validate(&self) -> Result<Option<Scores>> {
        self.objective.validate(&self.model)
    }

    fn snapshot(&self) -> (TensorList, TensorList) {
        (
            self.objective.snapshot(&self.model),
            self.optimizer.state_tensors(),
        )
    }

    fn restore(&mut self, model: &NamedTensors, optimizer: &NamedTensors) -> Result<()> {
        self.model = self.objective.restore(self.model.clone(), model)?;
        self.optimizer.load_state(optimizer, &self.device)
    }
}

/// Fails the epoch when a loss is not finite.
fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the loss became {loss} at epoch {}, step {}: stopping (try a lower --lr)",
            epoch + 1,
            step + 1
        )))
    }
}
