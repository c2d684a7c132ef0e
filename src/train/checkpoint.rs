//! Checkpoints: model and optimizer state plus the loop's position, written so that an
//! interrupted run loses nothing: every file goes to a temporary name and is renamed into place,
//! and `state.json`, written last, is what marks a checkpoint complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::{NamedTensors, load_weights, save_safetensors};

/// Where the loop stands after a completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    /// Epochs completed (the next epoch to run, 0-based).
    pub epochs_done: usize,
    /// The best value so far of the metric early stopping watches.
    #[serde(alias = "best_val_loss")]
    pub best: Option<f64>,
    pub epochs_without_improvement: usize,
    /// The data order and augmentation of epoch e derive from (seed, e), so the seed is the
    /// whole RNG state.
    pub seed: u64,
}

/// The checkpoint folder of a run.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Writes model tensors, optimizer state and loop state (in that order; the last write marks
/// the checkpoint complete).
pub fn save(
    run_dir: &Path,
    model: &[(String, Vec<usize>, Vec<f32>)],
    optimizer: &[(String, Vec<usize>, Vec<f32>)],
    state: &LoopState,
) -> Result<()> {
    let d = dir(run_dir);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    save_safetensors(&d.join("model.safetensors"), model)?;
    save_safetensors(&d.join("optimizer.safetensors"), optimizer)?;
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    write_atomic(&d.join("state.json"), json.as_bytes())
}

/// Reads a checkpoint back: (model tensors, optimizer tensors, loop state).
pub fn load(run_dir: &Path) -> Result<(NamedTensors, NamedTensors, LoopState)> {
    let d = dir(run_dir);
    let state_path = d.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: LoopState = serde_json::from_str(&text)
        .map_err(|e| Error::file(&state_path, format!("invalid checkpoint state: {e}")))?;
    let read = |name: &str| -> Result<NamedTensors> {
        let map = load_weights(&d.join(name))?;
        Ok(map
            .tensors
            .into_iter()
            .map(|(k, t)| (k, (t.shape, t.data)))
            .collect())
    };
    Ok((
        read("model.safetensors")?,
        read("optimizer.safetensors")?,
        state,
    ))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
