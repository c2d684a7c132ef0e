//! Fine-tune, partial fine-tune and scratch: the whole network trains on image batches, with the
//! strategy's trainable stages and BatchNorm policy applied.

use burn::tensor::{Device, Tensor};

use super::evaluate::evaluate_network;
use crate::data::{Batch, Loader, Pipeline, Sampler, Subset};
use crate::error::Result;
use crate::loss::Loss;
use crate::metrics::MetricsAccumulator;
use crate::model::Classifier;
use crate::model::params::{INTERNAL_HEAD, Strictness, load_into, named_tensors};
use crate::tensor::{from_vec, labels as label_tensor, to_vec};
use crate::train::{NamedTensors, Objective, Scores, TensorList};
use crate::weights::TensorMap;

/// What the network trains on: the training split through the augmenting pipeline, scored by
/// the run's loss; validation through the evaluation pipeline.
pub(super) struct NetworkObjective<'a> {
    pub(super) loss: &'a Loss,
    pub(super) train: Subset,
    pub(super) val: Option<Subset>,
    pub(super) train_pipe: Pipeline,
    pub(super) eval_pipe: Pipeline,
    pub(super) classes: usize,
    pub(super) batch_size: usize,
    pub(super) seed: u64,
    pub(super) sampler: Sampler,
    /// Backbone learning rate = `lr_mult` × the head's.
    pub(super) lr_mult: f64,
    pub(super) head_name: &'static str,
    pub(super) device: Device,
}

impl Objective for NetworkObjective<'_> {
    type Model = Classifier;
    type Batch = Batch;
    /// Logits and labels.
    type Output = (Tensor<2>, Vec<usize>);
    type Tally = MetricsAccumulator;

    fn samples_per_epoch(&self) -> usize {
        self.train.len()
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    fn train_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(Loader::new(
            self.train.clone(),
            self.train_pipe.clone(),
            self.batch_size,
            self.sampler,
            self.seed,
            epoch as u64,
        ))
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.len()
    }

    fn forward(&self, model: &Classifier, batch: Batch) -> (Tensor<1>, Self::Output) {
        let logits = model.forward(from_vec(batch.images, batch.shape, &self.device));
        let loss = self
            .loss
            .forward(logits.clone(), label_tensor(&batch.labels, &self.device));
        (loss, (logits, batch.labels))
    }

    fn tally(&self) -> MetricsAccumulator {
        MetricsAccumulator::new(self.classes, &[])
    }

    fn record(&self, tally: &mut MetricsAccumulator, (logits, labels): Self::Output, loss: f64) {
        tally.add(&to_vec(logits.detach()), &labels, loss);
    }

    fn validate(&self, model: &Classifier) -> Result<Option<Scores>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let m = evaluate_network(
            &model.folded_for_inference(),
            val,
            &self.eval_pipe,
            self.batch_size,
            self.loss,
            self.classes,
            true,
        )?;
        Ok(Some(m.scores()))
    }

    fn lr_of(&self, lr: f64, key: &str) -> f64 {
        // Head keys are `head.*`: the head learns at `lr`, the backbone at `lr * mult`.
        let is_head = key
            .strip_prefix(INTERNAL_HEAD)
            .is_some_and(|rest| rest.starts_with('.'));
        if is_head { lr } else { lr * self.lr_mult }
    }

    fn snapshot(&self, model: &Classifier) -> TensorList {
        named_tensors(model, self.head_name)
    }

    fn restore(&self, model: Classifier, tensors: &NamedTensors) -> Result<Classifier> {
        let (m, _) = load_into(
            model,
            &TensorMap::from_named(tensors),
            self.head_name,
            Strictness::Strict,
        )?;
        Ok(m)
    }
}
