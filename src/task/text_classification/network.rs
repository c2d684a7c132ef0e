//! Fine-tune, partial fine-tune and scratch for texts: the encoder and head train on batches of
//! texts, tokenized per batch and padded to the batch's longest (batches of similar lengths with
//! `group_by_length`).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::evaluate::evaluate_texts;
use crate::data::text::{TextDataset, group_by_length};
use crate::data::{Sampler, epoch_order};
use crate::error::Result;
use crate::loss::Loss;
use crate::metrics::MetricsAccumulator;
use crate::model::params::{INTERNAL_HEAD, Strictness, load_into, named_tensors};
use crate::model::text_encoder::{TEXT_HEAD, TextClassifier, batch_tensors};
use crate::model::tokenizer::{TextTokenizer, TokenBatch};
use crate::tensor::{labels as label_tensor, to_vec};
use crate::train::{NamedTensors, Objective, Scores, TensorList};
use crate::weights::TensorMap;

/// A tokenized batch with its labels.
pub(super) struct TextBatch {
    tokens: TokenBatch,
    labels: Vec<usize>,
}

/// What the text network trains on: the training texts in the sampler's order, scored by the
/// run's loss; validation on the validation texts.
pub(super) struct TextObjective<'a> {
    pub(super) loss: &'a Loss,
    pub(super) ds: &'a TextDataset,
    pub(super) train: Vec<usize>,
    pub(super) val: Option<Vec<usize>>,
    pub(super) tokenizer: &'a TextTokenizer,
    pub(super) classes: usize,
    pub(super) batch_size: usize,
    pub(super) seed: u64,
    pub(super) sampler: Sampler,
    /// Batches of similar lengths (transformers' `group_by_length`).
    pub(super) group_by_length: bool,
    /// Encoder learning rate = `lr_mult` × the head's.
    pub(super) lr_mult: f64,
    pub(super) device: Device,
}

impl Objective for TextObjective<'_> {
    type Model = TextClassifier;
    type Batch = TextBatch;
    /// Logits and labels.
    type Output = (Tensor<2>, Vec<usize>);
    type Tally = MetricsAccumulator;

    fn samples_per_epoch(&self) -> usize {
        self.train.len()
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    fn train_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<TextBatch>> + '_> {
        let labels = self.ds.labels_of(&self.train);
        let mut order = epoch_order(&labels, self.sampler, self.seed, epoch as u64);
        if self.group_by_length {
            order = group_by_length(&order, &self.ds.texts_of(&self.train), self.batch_size);
        }
        let chunks: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(|c| c.iter().map(|&k| self.train[k]).collect())
            .collect();
        Box::new(chunks.into_iter().map(move |positions| {
            Ok(TextBatch {
                tokens: self.tokenizer.encode_batch(&self.ds.texts_of(&positions))?,
                labels: self.ds.labels_of(&positions),
            })
        }))
    }

    fn batch_len(&self, batch: &TextBatch) -> usize {
        batch.labels.len()
    }

    fn forward(&self, model: &TextClassifier, batch: TextBatch) -> (Tensor<1>, Self::Output) {
        let (ids, types, mask) = batch_tensors(&batch.tokens, &self.device);
        let logits = model.forward(ids, types, mask);
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

    fn validate(&self, model: &TextClassifier) -> Result<Option<Scores>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let m = evaluate_texts(
            &model.valid(),
            self.ds,
            val,
            self.tokenizer,
            self.batch_size,
            self.loss,
            self.classes,
        )?;
        Ok(Some(m.scores()))
    }

    fn lr_of(&self, lr: f64, key: &str) -> f64 {
        let is_head = key
            .strip_prefix(INTERNAL_HEAD)
            .is_some_and(|rest| rest.starts_with('.'));
        if is_head { lr } else { lr * self.lr_mult }
    }

    fn snapshot(&self, model: &TextClassifier) -> TensorList {
        named_tensors(model, TEXT_HEAD)
    }

    fn restore(&self, model: TextClassifier, tensors: &NamedTensors) -> Result<TextClassifier> {
        let (m, _) = load_into(
            model,
            &TensorMap::from_named(tensors),
            TEXT_HEAD,
            Strictness::Strict,
        )?;
        Ok(m)
    }
}
