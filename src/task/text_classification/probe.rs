//! The text side of the linear probe: the frozen encoder's pooled embeddings of every split,
//! computed once and cached on disk by the texts' content (the head then trains on them:
//! `classification::head`).

use crate::data::text::{TextDataset, longest_first};
use crate::error::Result;
use crate::model::text_encoder::{EncoderFolder, Pooling, TextClassifier, batch_tensors};
use crate::model::tokenizer::TextTokenizer;
use crate::progress::Progress;
use crate::task::classification::feature_cache::{
    CacheKey, cached_rows, file_sha256, overall_status,
};
use crate::task::classification::head::FeatureSplit;
use crate::tensor::to_vec;

/// The features of every split, and how much of them came from the cache.
pub(super) struct Features {
    pub(super) train: FeatureSplit,
    pub(super) val: Option<FeatureSplit>,
    pub(super) test: FeatureSplit,
    pub(super) cache_status: &'static str,
}

/// Where and under which key features are cached.
pub(super) struct CacheSpec<'a> {
    pub(super) dir: &'a std::path::Path,
    pub(super) folder: &'a EncoderFolder,
    pub(super) max_length: usize,
    pub(super) pooling: Pooling,
}

/// Runs the frozen encoder (pooled, not normalised: what the head sees in fine-tuning too) over
/// every split, reusing cached rows.
pub(super) fn extract_features(
    model: &TextClassifier,
    ds: &TextDataset,
    tokenizer: &TextTokenizer,
    cache: &CacheSpec<'_>,
    batch_size: usize,
    quiet: bool,
) -> Result<Features> {
    let dim = cache.folder.config.hidden_size;
    let key = match &cache.folder.weights {
        Some(w) => Some(CacheKey {
            model: "text".into(),
            weights_sha256: file_sha256(w)?,
            content: ds.content_id(),
            recipe: format!(
                "{} max_length={} pooling={}",
                file_sha256(&cache.folder.dir.join("tokenizer.json"))?,
                cache.max_length,
                cache.pooling
            ),
        }),
        None => None,
    };
    let mut statuses = Vec::new();
    let mut extract = |positions: &[usize], split: &str| -> Result<FeatureSplit> {
        let (x, status) = cached_rows(key.as_ref(), cache.dir, positions, dim, |missing| {
            let what = format!("embeddings ({split} split)");
            let progress = Progress::new(quiet, what, "texts", missing.len());
            embed(model, ds, tokenizer, missing, batch_size, &progress, dim)
        })?;
        statuses.push(status);
        Ok(FeatureSplit {
            x,
            y: ds.labels_of(positions),
            idx: positions.to_vec(),
        })
    };
    let train = extract(&ds.train, "train")?;
    let val = ds.val.as_deref().map(|v| extract(v, "val")).transpose()?;
    let test = extract(&ds.test, "test")?;
    Ok(Features {
        train,
        val,
        test,
        cache_status: overall_status(&statuses),
    })
}

/// Pooled features of the texts at `positions`, one row each, in order.
fn embed(
    model: &TextClassifier,
    ds: &TextDataset,
    tokenizer: &TextTokenizer,
    positions: &[usize],
    batch_size: usize,
    progress: &Progress,
    dim: usize,
) -> Result<Vec<Vec<f32>>> {
    let device = model.head.weight.device();
    let mut rows = vec![Vec::new(); positions.len()];
    // Longest first, so batches pad little; each row goes back to its text's place.
    let order = longest_first(&ds.texts_of(positions));
    for chunk in order.chunks(batch_size.max(1)) {
        let chunk_positions: Vec<usize> = chunk.iter().map(|&k| positions[k]).collect();
        let batch = tokenizer.encode_batch(&ds.texts_of(&chunk_positions))?;
        let (ids, types, mask) = batch_tensors(&batch, &device);
        let f = to_vec(model.features(ids, types, mask));
        for (&k, row) in chunk.iter().zip(f.chunks_exact(dim)) {
            rows[k] = row.to_vec();
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    Ok(rows)
}
