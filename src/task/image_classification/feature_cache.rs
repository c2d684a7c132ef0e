//! The feature cache: a frozen backbone's pooled features, computed once and kept on disk.
//!
//! One file per (model, weights, dataset source, transform); it holds features for the sample
//! indices extracted so far. A request for indices it lacks extracts only those and rewrites
//! the file (atomically), so k-fold folds, limits and splits of one source share one cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::weights::{load_weights, save_safetensors};

/// Bump when the cached content's meaning changes, to invalidate old files.
const CACHE_VERSION: &str = "graft-features-v1";

/// Hex SHA-256 of a file's bytes (streams; weights files can be large).
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The feature cache folder: `--cache-dir`, `$GRAFT_CACHE_DIR`, or `~/.cache/graft`.
pub fn cache_dir(setting: Option<&Path>) -> PathBuf {
    if let Some(d) = setting {
        return d.to_path_buf();
    }
    if let Ok(d) = std::env::var("GRAFT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var("HOME") {
        Ok(home) => PathBuf::from(home).join(".cache/graft"),
        Err(_) => PathBuf::from(".cache/graft"),
    }
}

/// Identifies one cache file.
#[derive(Debug, Clone)]
pub struct CacheKey {
    pub model: String,
    pub weights_sha256: String,
    pub data: String,
    /// Which source of the dataset (`train` or `test`).
    pub source: String,
    pub transform: String,
    pub image_size: usize,
}

impl CacheKey {
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            CACHE_VERSION,
            &self.model,
            &self.weights_sha256,
            &self.data,
            &self.source,
            &self.transform,
            &self.image_size.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        format!("{:x}", h.finalize())
    }

    /// `<dir>/features/<model>-<source>-<digest16>.safetensors`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let d = self.digest();
        dir.join("features").join(format!(
            "{}-{}-{}.safetensors",
            self.model,
            self.source,
            &d[..16]
        ))
    }
}

/// Features by sample index, as loaded from / written to one cache file.
#[derive(Debug, Default)]
pub struct FeatureStore {
    pub dim: usize,
    pub rows: BTreeMap<usize, Vec<f32>>,
}

impl FeatureStore {
    /// Loads a cache file; a missing file is an empty store, a corrupt one an error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let map = load_weights(path)?;
        let (Some(idx), Some(x)) = (map.get("indices"), map.get("features")) else {
            return Err(Error::file(
                path,
                "not a graft feature cache (delete it to rebuild)",
            ));
        };
        let dim = x.shape.get(1).copied().unwrap_or(0);
        if x.shape.len() != 2 || x.shape[0] != idx.data.len() || dim == 0 {
            return Err(Error::file(
                path,
                "inconsistent feature cache (delete it to rebuild)",
            ));
        }
        let rows = idx
            .data
            .iter()
            .zip(x.data.chunks_exact(dim))
            .map(|(&i, row)| (i as usize, row.to_vec()))
            .collect();
        Ok(Self { dim, rows })
    }

    /// Writes the store atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let n = self.rows.len();
        let indices: Vec<f32> = self.rows.keys().map(|&i| i as f32).collect();
        let features: Vec<f32> = self.rows.values().flatten().copied().collect();
        save_safetensors(
            path,
            &[
                ("indices".to_string(), vec![n], indices),
                ("features".to_string(), vec![n, self.dim], features),
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
