//! The image side of the linear probe: a frozen backbone's features of every split, computed
//! once and cached on disk (the head then trains on them: `classification::head`).

use std::path::Path;

use crate::data::{Dataset, Loader, Pipeline, Subset};
use crate::error::Result;
use crate::model::Classifier;
use crate::progress::Progress;
use crate::task::classification::feature_cache::{
    CacheKey, cached_rows, file_sha256, overall_status,
};
use crate::task::classification::head::FeatureSplit;
use crate::tensor::{from_vec, to_vec};

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
    let weights_id = weights_digest(cache.weights)?;
    let mut statuses = Vec::new();
    let mut extract = |subset: &Subset, split: &str| -> Result<FeatureSplit> {
        let (features, status) = extract_split(
            extractor,
            subset,
            split,
            eval_pipe,
            cache,
            weights_id.as_deref(),
            batch_size,
            quiet,
        )?;
        statuses.push(status);
        Ok(features)
    };
    let train = extract(&ds.train, "train")?;
    let val = ds.val.as_ref().map(|v| extract(v, "val")).transpose()?;
    let test = extract(&ds.test, "test")?;
    Ok(Features {
        train,
        val,
        test,
        cache_status: overall_status(&statuses),
    })
}

/// The SHA-256 that keys a weights file's cached features (`None`: random weights).
pub(super) fn weights_digest(weights: &str) -> Result<Option<String>> {
    if weights == "none" {
        Ok(None)
    } else {
        file_sha256(Path::new(weights)).map(Some)
    }
}

/// The features of one split (`split` names it in the progress line), from the cache where it
/// has them; and the cache status (`hit`, `miss`, `partial`).
#[allow(clippy::too_many_arguments)]
pub(super) fn extract_split(
    extractor: &Classifier,
    subset: &Subset,
    split: &str,
    eval_pipe: &Pipeline,
    cache: &CacheSpec<'_>,
    weights_id: Option<&str>,
    batch_size: usize,
    quiet: bool,
) -> Result<(FeatureSplit, &'static str)> {
    let dim = extractor.head.weight.dims()[1];
    let key = match weights_id {
        Some(w) => Some(CacheKey {
            model: cache.model.to_string(),
            weights_sha256: w.to_string(),
            content: subset.source.content_id()?,
            recipe: format!("{} {}", eval_pipe.describe(), cache.image_size),
        }),
        None => None,
    };
    let (x, status) = cached_rows(key.as_ref(), cache.dir, &subset.indices, dim, |missing| {
        let progress = Progress::new(
            quiet,
            format!("features ({split} split)"),
            "images",
            missing.len(),
        );
        run_extractor(
            extractor, subset, missing, eval_pipe, batch_size, &progress, dim,
        )
    })?;
    Ok((
        FeatureSplit {
            x,
            y: (0..subset.len()).map(|k| subset.label(k)).collect(),
            idx: subset.indices.clone(),
        },
        status,
    ))
}

/// The pooled features of the source samples `indices`, one row each, in order.
fn run_extractor(
    model: &Classifier,
    subset: &Subset,
    indices: &[usize],
    pipe: &Pipeline,
    batch_size: usize,
    progress: &Progress,
    dim: usize,
) -> Result<Vec<Vec<f32>>> {
    let todo = Subset {
        source: subset.source.clone(),
        indices: indices.to_vec(),
    };
    let device = model.head.weight.device();
    let mut rows = Vec::with_capacity(indices.len());
    for batch in Loader::sequential(todo, pipe.clone(), batch_size) {
        let batch = batch?;
        let x = from_vec(batch.images, batch.shape, &device);
        let f = to_vec(model.forward_features(x));
        rows.extend(f.chunks_exact(dim).map(<[f32]>::to_vec));
        progress.inc(batch.labels.len() as u64);
    }
    progress.finish();
    Ok(rows)
}
