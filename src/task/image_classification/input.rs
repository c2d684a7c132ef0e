//! What an image-classification run reads before it builds anything: its dataset with the
//! run's limits, and the input size when `--image-size` is not given. Shared by the fit and the
//! report (which must see the same images at the same size).

use crate::config::FitConfig;
use crate::data::{self, Dataset};
use crate::error::Result;
use crate::model::Preset;

/// The run's dataset with its `limit_train` / `limit_test` applied (no validation split yet).
pub fn open_limited(cfg: &FitConfig) -> Result<Dataset> {
    let mut ds = data::open(&cfg.data)?;
    if let Some(n) = cfg.limit_train {
        ds = ds.limit_train(n, cfg.seed);
    }
    if let Some(n) = cfg.limit_test {
        ds = ds.limit_test(n, cfg.seed);
    }
    Ok(ds)
}

/// How many training images [`input_size_for`] looks at.
const SIZE_SAMPLE: usize = 25;
/// The smallest input size chosen from the data: below it the backbones' last maps shrink to
/// 1×1 and pretrained features lose most of their use.
const MIN_CHOSEN_SIZE: usize = 64;

/// The input size when `--image-size` is not given, from the data: the training images'
/// typical (median) longer side, rounded up to a multiple of 32 (the backbones' total stride),
/// at least `MIN_CHOSEN_SIZE` (64 px; or the model's own size when smaller: the tiny test
/// networks) and at most the size the model was pretrained at — so 28 px scans train at 64 px,
/// not at a 7× upscaled 224, and photos at the pretrained 224. Returns the size and the typical
/// side. Deterministic: evenly spaced images of the training split.
pub fn input_size_for(ds: &Dataset, preset: &Preset) -> Result<(usize, usize)> {
    let n = ds.train.len();
    let picks = SIZE_SAMPLE.min(n);
    let mut sides = Vec::with_capacity(picks);
    for k in 0..picks {
        let image = ds.train.load(k * n / picks)?;
        sides.push(image.width.max(image.height) as usize);
    }
    sides.sort_unstable();
    let typical = sides
        .get(sides.len() / 2)
        .copied()
        .unwrap_or(preset.input_size);
    let floor = MIN_CHOSEN_SIZE.min(preset.input_size);
    let size = typical
        .div_ceil(32)
        .saturating_mul(32)
        .clamp(floor, preset.input_size);
    Ok((size, typical))
}
