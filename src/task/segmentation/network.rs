//! Training a segmenter: image/mask batches through the paired transforms, the run's dense
//! loss, the confusion of every pixel for mIoU.

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::data::{PairTransform, SegBatch, SegSample, load_batch};
use super::evaluate::evaluate_segmenter;
use super::loss::SegLoss;
use crate::data::split::derive_seed;
use crate::error::Result;
use crate::metrics::segmentation::SegTally;
use crate::model::Segmenter;
use crate::model::params::{INTERNAL_HEAD, Strictness, load_into, named_tensors};
use crate::model::segmenter::SEGMENTATION_HEAD;
use crate::tensor::{from_vec, to_vec};
use crate::train::{NamedTensors, Objective, Scores, Tally, TensorList};
use crate::weights::TensorMap;

/// Tags of the random streams (epoch order, per-batch transforms).
const ORDER_TAG: u64 = 0x5E60_0D3E;
const AUGMENT_TAG: u64 = 0x5E6A_06E7;

pub(super) struct SegObjective<'a> {
    pub(super) loss: &'a SegLoss,
    pub(super) train: Vec<SegSample>,
    pub(super) val: Option<Vec<SegSample>>,
    pub(super) train_transform: PairTransform,
    pub(super) eval_transform: PairTransform,
    pub(super) classes: usize,
    pub(super) batch_size: usize,
    pub(super) seed: u64,
    /// Backbone learning rate = `lr_mult` × the decoder's and head's.
    pub(super) lr_mult: f64,
    pub(super) device: Device,
}

impl Objective for SegObjective<'_> {
    type Model = Segmenter;
    type Batch = SegBatch;
    /// Logits and masks.
    type Output = (Tensor<4>, Vec<u8>);
    type Tally = SegTally;

    fn samples_per_epoch(&self) -> usize {
        self.train.len()
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    fn train_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<SegBatch>> + '_> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(derive_seed(&[
            self.seed,
            epoch as u64,
            ORDER_TAG,
        ])));
        let batches: Vec<Vec<usize>> = order.chunks(self.batch_size).map(<[_]>::to_vec).collect();
        Box::new(batches.into_iter().enumerate().map(move |(b, idx)| {
            let samples: Vec<&SegSample> = idx.iter().map(|&i| &self.train[i]).collect();
            let seed = derive_seed(&[self.seed, epoch as u64, b as u64, AUGMENT_TAG]);
            load_batch(&samples, &self.train_transform, seed)
        }))
    }

    fn batch_len(&self, batch: &SegBatch) -> usize {
        batch.n
    }

    fn forward(&self, model: &Segmenter, batch: SegBatch) -> (Tensor<1>, Self::Output) {
        let s = batch.size;
        let logits = model.forward(from_vec(batch.images, [batch.n, 3, s, s], &self.device));
        let loss = self.loss.forward(logits.clone(), &batch.masks);
        (loss, (logits, batch.masks))
    }

    fn tally(&self) -> SegTally {
        SegTally::new(self.classes)
    }

    fn record(&self, tally: &mut SegTally, (logits, masks): Self::Output, loss: f64) {
        let dims = logits.dims();
        tally.add(&to_vec(logits.detach()), dims, &masks, loss);
    }

    fn validate(&self, model: &Segmenter) -> Result<Option<Scores>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let tally = evaluate_segmenter(
            &model.folded_for_inference(),
            val,
            &self.eval_transform,
            self.batch_size,
            self.loss,
            self.classes,
            true,
        )?;
        Ok(Some(tally.scores()))
    }

    fn lr_of(&self, lr: f64, key: &str) -> f64 {
        // The decoder and the head are new: they learn at `lr`, the backbone at `lr * mult`.
        let new = [INTERNAL_HEAD, "decoder"].iter().any(|p| {
            key.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
        });
        if new { lr } else { lr * self.lr_mult }
    }

    fn snapshot(&self, model: &Segmenter) -> TensorList {
        named_tensors(model, SEGMENTATION_HEAD)
    }

    fn restore(&self, model: Segmenter, tensors: &NamedTensors) -> Result<Segmenter> {
        let (m, _) = load_into(
            model,
            &TensorMap::from_named(tensors),
            SEGMENTATION_HEAD,
            Strictness::Strict,
        )?;
        Ok(m)
    }
}
