//! A linear head trained on fixed features (a frozen backbone's, computed once): the linear
//! probe of every classification task, through the same trainer and epoch loop as the networks.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::data;
use crate::data::Sampler;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::metrics::MetricsAccumulator;
use crate::model::Linear;
use crate::model::params::INTERNAL_HEAD;
use crate::tensor::{from_vec, labels as label_tensor, to_vec};
use crate::train::{NamedTensors, Objective, Scores, TensorList};

/// Features of one split: row-major `(n, dim)` and labels.
pub struct FeatureSplit {
    /// The features, `n * dim` values.
    pub x: Vec<f32>,
    /// The label of each row.
    pub y: Vec<usize>,
    /// Source index of each row (for the misclassified-samples list).
    pub idx: Vec<usize>,
}

/// A batch of feature rows with their labels.
pub struct FeatureBatch {
    x: Vec<f32>,
    y: Vec<usize>,
}

/// The head alone, trained on cached features.
pub struct HeadObjective<'a> {
    /// The loss the head minimises.
    pub loss: &'a Loss,
    /// The training split's features.
    pub train: FeatureSplit,
    /// The validation split's features, when there is one.
    pub val: Option<FeatureSplit>,
    /// Feature width (the head's inputs).
    pub dim: usize,
    /// The number of classes (the head's outputs).
    pub classes: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Seeds each epoch's sample order.
    pub seed: u64,
    /// How each epoch's order is drawn.
    pub sampler: Sampler,
    /// The (autodiff) device the head trains on.
    pub device: Device,
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
pub fn evaluate_features(
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
