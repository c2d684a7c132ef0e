//! Batches for training and evaluation: epoch order, parallel decode + transform, prefetch.
//!
//! A background thread builds the next batches while the caller trains on the current one
//! (a bounded channel keeps at most `prefetch` finished batches waiting); inside a batch the
//! samples are decoded and transformed in parallel with rayon. Each sample's random stream is
//! derived from (seed, epoch, position in the epoch), so batches are identical however the
//! threads are scheduled, and a resumed run replays an epoch exactly.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::data::image::Image;
use crate::data::split::{Subset, derive_seed};
use crate::data::transform::Pipeline;
use crate::error::{Error, Result};

/// The order in which an epoch visits the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// Subset order (evaluation).
    Sequential,
    /// A fresh permutation every epoch.
    Shuffle,
    /// `len` draws with replacement, each class equally likely (weight ∝ 1 / class count), so
    /// rare classes are seen as often as common ones; the epoch keeps its length.
    Balanced,
}

/// One batch: `images` is `[n, c, h, w]` row-major (`shape`), `labels[j]` and `indices[j]` (the
/// source index, as in `Subset::indices`) belong to image `j`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The transformed images, `[n, c, h, w]` row-major (`n * c * h * w` values).
    pub images: Vec<f32>,
    /// `[n, c, h, w]`: images, channels, height, width.
    pub shape: [usize; 4],
    /// The class of each image.
    pub labels: Vec<usize>,
    /// The source index of each image (as in `Subset::indices`).
    pub indices: Vec<usize>,
}

impl Batch {
    /// The number of images in the batch (`n`).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl std::str::FromStr for Sampler {
    type Err = Error;

    /// Parses the training samplers, `shuffle` and `balanced` (`sequential` is evaluation's).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shuffle" => Ok(Self::Shuffle),
            "balanced" => Ok(Self::Balanced),
            other => Err(Error::invalid(format!(
                "--sampler must be shuffle or balanced, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sequential => "sequential",
            Self::Shuffle => "shuffle",
            Self::Balanced => "balanced",
        })
    }
}

crate::text_setting!(Sampler);

/// Stream tags, so the shuffle, the balanced draws and the augmentation never share a stream.
const ORDER_TAG: u64 = 0x006f_7264_6572;
const SAMPLE_TAG: u64 = 0x7361_6d70_6c65;

/// Subset positions visited by one epoch (with repeats for [`Sampler::Balanced`]).
pub fn epoch_order(labels: &[usize], sampler: Sampler, seed: u64, epoch: u64) -> Vec<usize> {
    let n = labels.len();
    let mut rng = StdRng::seed_from_u64(derive_seed(&[seed, epoch, ORDER_TAG]));
    match sampler {
        Sampler::Sequential => (0..n).collect(),
        Sampler::Shuffle => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            order
        }
        Sampler::Balanced => {
            // Uniform class, then uniform member: the same distribution as weights 1/count per
            // sample, in O(1) per draw.
            let classes = labels.iter().max().map_or(0, |&m| m + 1);
            let mut members = vec![Vec::new(); classes];
            for (k, &l) in labels.iter().enumerate() {
                members[l].push(k);
            }
            let present: Vec<&Vec<usize>> = members.iter().filter(|m| !m.is_empty()).collect();
            if present.is_empty() {
                return Vec::new();
            }
            (0..n)
                .map(|_| {
                    let m = present[rng.gen_range(0..present.len())];
                    m[rng.gen_range(0..m.len())]
                })
                .collect()
        }
    }
}

/// Inverse-frequency class weights, normalised like scikit-learn's `"balanced"`:
/// `n_samples / (n_classes * count_c)`. A class with no samples gets 0.
pub fn class_weights_auto(counts: &[usize]) -> Vec<f32> {
    let total: usize = counts.iter().sum();
    let k = counts.len() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                (total as f64 / (k * c as f64)) as f32
            }
        })
        .collect()
}

struct Running {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
}

enum State {
    Idle,
    Running(Running),
    Done,
}

/// An iterator over the batches of one epoch. The worker thread starts on the first `next()`.
pub struct Loader {
    subset: Subset,
    pipeline: Arc<Pipeline>,
    batch_size: usize,
    sampler: Sampler,
    seed: u64,
    epoch: u64,
    drop_last: bool,
    prefetch: usize,
    state: State,
}

impl Loader {
    /// Batches of `batch_size` samples of `subset` for epoch `epoch`. The last batch may be
    /// smaller (see [`Loader::drop_last`]). A `batch_size` of 0 yields one error.
    pub fn new(
        subset: Subset,
        pipeline: Pipeline,
        batch_size: usize,
        sampler: Sampler,
        seed: u64,
        epoch: u64,
    ) -> Loader {
        Loader {
            subset,
            pipeline: Arc::new(pipeline),
            batch_size,
            sampler,
            seed,
            epoch,
            drop_last: false,
            prefetch: 2,
            state: State::Idle,
        }
    }

    /// Every sample of `subset` once, in order, with no augmentation randomness to seed: what
    /// evaluation and feature extraction read.
    pub fn sequential(subset: Subset, pipeline: Pipeline, batch_size: usize) -> Loader {
        Loader::new(subset, pipeline, batch_size, Sampler::Sequential, 0, 0)
    }

    /// Skip the final batch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Loader {
        self.drop_last = drop_last;
        self
    }

    /// How many finished batches may wait for the consumer (default 2; at least 1).
    pub fn prefetch(mut self, batches: usize) -> Loader {
        self.prefetch = batches.max(1);
        self
    }

    /// Batches this epoch yields (when nothing fails).
    pub fn num_batches(&self) -> usize {
        if self.batch_size == 0 {
            return 0;
        }
        let n = self.subset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The subset positions this epoch visits, in order.
    pub fn order(&self) -> Vec<usize> {
        epoch_order(&self.subset.labels(), self.sampler, self.seed, self.epoch)
    }

    fn start(&mut self) -> Result<Running> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        let (tx, rx) = sync_channel(self.prefetch);
        let subset = self.subset.clone();
        let pipeline = self.pipeline.clone();
        let order = self.order();
        let (bs, seed, epoch, drop_last) = (self.batch_size, self.seed, self.epoch, self.drop_last);
        let handle = std::thread::Builder::new()
            .name("graft-loader".into())
            .spawn(move || {
                for (b, chunk) in order.chunks(bs).enumerate() {
                    if drop_last && chunk.len() < bs {
                        break;
                    }
                    let batch = make_batch(&subset, &pipeline, chunk, b * bs, seed, epoch);
                    let failed = batch.is_err();
                    // A closed channel means the consumer is gone: stop quietly.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the data loader thread: {e}")))?;
        Ok(Running {
            rx,
            handle: Some(handle),
        })
    }
}

/// Loads and transforms the samples at subset positions `chunk` (epoch positions `first..`).
///
/// Two parallel passes: decode every image, then transform each straight into its slot of the
/// batch buffer (the shapes are known from the decoded sizes), so no per-sample output vector is
/// allocated and copied.
fn make_batch(
    subset: &Subset,
    pipeline: &Pipeline,
    chunk: &[usize],
    first: usize,
    seed: u64,
    epoch: u64,
) -> Result<Batch> {
    let decoded: Vec<Result<Image>> = chunk.par_iter().map(|&k| subset.load(k)).collect();
    let mut images = Vec::with_capacity(decoded.len());
    for img in decoded {
        images.push(img?);
    }
    let in_context =
        |j: usize, e: Error| Error::invalid(format!("{}: {e}", subset.describe(chunk[j])));
    let mut shape3 = [0usize; 3];
    for (j, img) in images.iter().enumerate() {
        let s = pipeline
            .output_shape(
                img.width as usize,
                img.height as usize,
                img.channels as usize,
            )
            .map_err(|e| in_context(j, e))?;
        if j == 0 {
            shape3 = s;
        } else if s != shape3 {
            return Err(in_context(
                j,
                Error::invalid(format!(
                    "transformed to {s:?} but the batch is {shape3:?}; add a resize step so all \
                     images have one size"
                )),
            ));
        }
    }
    let per = shape3.iter().product::<usize>();
    let mut data = vec![0.0f32; per * images.len()];
    if per > 0 {
        data.par_chunks_mut(per)
            .zip(images.par_iter())
            .enumerate()
            .try_for_each(|(j, (slot, img))| {
                let mut rng = StdRng::seed_from_u64(derive_seed(&[
                    seed,
                    epoch,
                    (first + j) as u64,
                    SAMPLE_TAG,
                ]));
                pipeline
                    .apply_into(img, &mut rng, slot)
                    .map(|_| ())
                    .map_err(|e| in_context(j, e))
            })?;
    }
    Ok(Batch {
        images: data,
        shape: [chunk.len(), shape3[0], shape3[1], shape3[2]],
        labels: chunk.iter().map(|&k| subset.label(k)).collect(),
        indices: chunk.iter().map(|&k| subset.indices[k]).collect(),
    })
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if matches!(self.state, State::Idle) {
            match self.start() {
                Ok(r) => self.state = State::Running(r),
                Err(e) => {
                    self.state = State::Done;
                    return Some(Err(e));
                }
            }
        }
        let State::Running(run) = &mut self.state else {
            return None;
        };
        match run.rx.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The worker finished (or died): report a panic once, then end.
                let panicked = run
                    .handle
                    .take()
                    .map(JoinHandle::join)
                    .is_some_and(|r| r.is_err());
                self.state = State::Done;
                panicked.then(|| Err(Error::invalid("the data loader thread panicked")))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let State::Running(run) = std::mem::replace(&mut self.state, State::Done) {
            // Closing the channel first makes the worker's next send fail, so the join waits
            // for at most the batch in progress.
            let Running { rx, handle } = run;
            drop(rx);
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }
}
