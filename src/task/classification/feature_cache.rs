//! The feature cache: a frozen backbone's pooled features, computed once and kept on disk.
//!
//! One file per (model, weights, dataset source, transform); it holds features for the sample
//! indices extracted so far. A request for indices it lacks extracts only those and rewrites
//! the file (atomically), so k-fold folds, limits and splits of one source share one cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::weights::{load_weights, save_safetensors};

/// Bump when the cached content's meaning changes, to invalidate old files.
const CACHE_VERSION: &str = "graft-features-v2";

/// Hex SHA-256 of a file's bytes: what identifies weights and tokenizers in cache keys.
pub use crate::files::sha256_file as file_sha256;

/// The feature cache folder: `--cache-dir`, `$GRAFT_CACHE_DIR`, or `~/.cache/graft`.
pub fn cache_dir(setting: Option<&Path>) -> PathBuf {
    crate::files::cache_root(setting)
}

/// Identifies one cache file.
#[derive(Debug, Clone)]
pub struct CacheKey {
    /// The zoo model's name (also the start of the file name).
    pub model: String,
    /// The SHA-256 of the weights file the backbone was loaded from.
    pub weights_sha256: String,
    /// The samples' content (`Source::content_id`): not the spec, which may name other images
    /// tomorrow, nor the split, whose images a cv fold shares with its training split.
    pub content: String,
    /// Everything else that shapes a feature: the transform and input size of images, the
    /// sequence length and pooling of texts.
    pub recipe: String,
}

impl CacheKey {
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            CACHE_VERSION,
            &self.model,
            &self.weights_sha256,
            &self.content,
            &self.recipe,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        format!("{:x}", h.finalize())
    }

    /// `<dir>/features/<model>-<digest16>.safetensors`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let d = self.digest();
        dir.join("features")
            .join(format!("{}-{}.safetensors", self.model, &d[..16]))
    }
}

/// Features by sample index, as loaded from / written to one cache file.
#[derive(Debug, Default)]
pub struct FeatureStore {
    /// Values per feature row.
    pub dim: usize,
    /// Each cached sample's `dim` features, by sample index.
    pub rows: BTreeMap<usize, Vec<f32>>,
}

impl FeatureStore {
    /// Loads a cache file. A missing file is an empty store; a file that fails its checksum or
    /// does not hold what a cache holds is reported and treated as empty, so its features are
    /// computed again and the file rewritten.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        match Self::read(path) {
            Ok(store) => Ok(store),
            Err(problem) => {
                eprintln!(
                    "warning: {}: {problem}; computing these features again",
                    path.display()
                );
                Ok(Self::default())
            }
        }
    }

    fn read(path: &Path) -> std::result::Result<Self, String> {
        let map = load_weights(path).map_err(|e| e.to_string())?;
        let (Some(idx), Some(x), Some(sum)) =
            (map.get("indices"), map.get("features"), map.get("checksum"))
        else {
            return Err("not a feature cache of this graft version".into());
        };
        let dim = x.shape.get(1).copied().unwrap_or(0);
        if x.shape.len() != 2 || x.shape[0] != idx.data.len() || dim == 0 {
            return Err("inconsistent shapes".into());
        }
        if sum.data != checksum(&idx.data, &x.data) {
            return Err("damaged (its checksum does not match)".into());
        }
        let rows = idx
            .data
            .iter()
            .zip(x.data.chunks_exact(dim))
            .map(|(&i, row)| (i as usize, row.to_vec()))
            .collect();
        Ok(Self { dim, rows })
    }

    /// Writes the store atomically, with its checksum.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let n = self.rows.len();
        // Indices are stored as f32, exact up to 2^24.
        if self.rows.keys().next_back().is_some_and(|&i| i >= 1 << 24) {
            return Err(Error::file(
                path,
                "the feature cache holds at most 16,777,216 samples per source",
            ));
        }
        let indices: Vec<f32> = self.rows.keys().map(|&i| i as f32).collect();
        let features: Vec<f32> = self.rows.values().flatten().copied().collect();
        let sum = checksum(&indices, &features);
        save_safetensors(
            path,
            &[
                ("indices".to_string(), vec![n], indices),
                ("features".to_string(), vec![n, self.dim], features),
                ("checksum".to_string(), vec![sum.len()], sum),
            ],
        )
    }

    /// The indices among `wanted` that the store lacks.
    pub fn missing(&self, wanted: &[usize]) -> Vec<usize> {
        wanted
            .iter()
            .copied()
            .filter(|i| !self.rows.contains_key(i))
            .collect()
    }

    /// Row-major `(wanted.len(), dim)` features in `wanted`'s order (all must be present).
    pub fn gather(&self, wanted: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(wanted.len() * self.dim);
        for i in wanted {
            if let Some(row) = self.rows.get(i) {
                out.extend_from_slice(row);
            }
        }
        out
    }
}

/// SHA-256 of the indices and features, one byte per f32 (exact): what a cache file must match.
fn checksum(indices: &[f32], features: &[f32]) -> Vec<f32> {
    let mut h = Sha256::new();
    for v in indices.iter().chain(features) {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|&b| f32::from(b)).collect()
}

/// Features of the samples `indices` (by source index), row-major: from the cache file of `key`
/// where present; `compute` extracts the missing ones (given in order, returning one row
/// each), which are added to the file. Without a key (random weights: nothing worth keeping)
/// everything is computed. Also says whether the cache had them all (`hit`), none (`miss`) or
/// some (`partial`).
pub fn cached_rows(
    key: Option<&CacheKey>,
    dir: &Path,
    indices: &[usize],
    dim: usize,
    compute: impl FnOnce(&[usize]) -> Result<Vec<Vec<f32>>>,
) -> Result<(Vec<f32>, &'static str)> {
    let path = key.map(|k| k.path(dir));
    let mut store = match &path {
        Some(p) => FeatureStore::load(p)?,
        None => FeatureStore::default(),
    };
    if store.dim != 0 && store.dim != dim {
        store = FeatureStore::default();
    }
    let missing = store.missing(indices);
    if missing.is_empty() {
        return Ok((store.gather(indices), "hit"));
    }
    let status = if missing.len() == indices.len() {
        "miss"
    } else {
        "partial"
    };
    let rows = compute(&missing)?;
    store.dim = dim;
    for (i, row) in missing.into_iter().zip(rows) {
        store.rows.insert(i, row);
    }
    if let Some(p) = &path {
        store.save(p)?;
    }
    Ok((store.gather(indices), status))
}

/// `hit` when every split was, `miss` when none was, else `partial`.
pub fn overall_status(statuses: &[&str]) -> &'static str {
    if statuses.iter().all(|s| *s == "hit") {
        "hit"
    } else if statuses.iter().all(|s| *s == "miss") {
        "miss"
    } else {
        "partial"
    }
}
