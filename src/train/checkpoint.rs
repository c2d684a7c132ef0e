//! Checkpoints: model and optimizer state plus the loop's position, as one atomic unit.
//!
//! ```text
//! RUN/checkpoint/LATEST              "epoch-0003 <sha256 of its state.json>"  (the commit point)
//! RUN/checkpoint/epoch-0003/         model.safetensors, optimizer.safetensors, state.json
//! RUN/checkpoint/epoch-0002/         the previous one, kept until the next commit
//! ```
//!
//! A checkpoint is written whole into its own folder (every file and the folder fsynced), then
//! `LATEST` is replaced atomically to point at it: killed or out of disk at any moment, `LATEST`
//! names a complete checkpoint — the new one or the one before. `state.json` records each file's
//! SHA-256 and the epoch; loading checks all of them, so a torn, stale or bit-flipped checkpoint
//! is refused by name instead of being resumed. The folders of older epochs are removed after the
//! commit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::files::{crash_point, read_file, sync_dir, write_atomic};
use crate::weights::{NamedTensors, TensorMap, load_weights, safetensors_bytes};

/// Where the loop stands after a completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    /// Epochs completed (the next epoch to run, 0-based).
    pub epochs_done: usize,
    /// The best value so far of the metric early stopping watches.
    #[serde(alias = "best_val_loss")]
    pub best: Option<f64>,
    /// Epochs since `best` last improved.
    pub epochs_without_improvement: usize,
    /// The data order and augmentation of epoch e derive from (seed, e), so the seed is the
    /// whole RNG state.
    pub seed: u64,
    /// The epoch callback asked to stop after this epoch: a resume finishes the run without
    /// training further (absent from `state.json` when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// `state.json`: the loop state and the checksums of the files beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    #[serde(flatten)]
    state: LoopState,
    /// SHA-256 of `model.safetensors` and `optimizer.safetensors`.
    files: Vec<(String, String)>,
}

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";
const LATEST: &str = "LATEST";

/// The checkpoint folder of a run.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

fn epoch_dir_name(epochs_done: usize) -> String {
    format!("epoch-{epochs_done:04}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes the checkpoint after epoch `state.epochs_done` and commits it.
pub fn save(
    run_dir: &Path,
    model: &[(String, Vec<usize>, Vec<f32>)],
    optimizer: &[(String, Vec<usize>, Vec<f32>)],
    state: &LoopState,
) -> Result<()> {
    let root = dir(run_dir);
    let name = epoch_dir_name(state.epochs_done);
    let d = root.join(&name);
    // A folder of this name can only be a leftover of a crash before its commit.
    if d.exists() {
        std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    let mut files = Vec::new();
    for (file, tensors) in [(MODEL, model), (OPTIMIZER, optimizer)] {
        let bytes = safetensors_bytes(tensors)?;
        write_atomic(&d.join(file), &bytes)?;
        files.push((file.to_string(), sha256_hex(&bytes)));
        crash_point("checkpoint-file");
    }
    let manifest = Manifest {
        state: state.clone(),
        files,
    };
    let json = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    write_atomic(&d.join(STATE), json.as_bytes())?;
    sync_dir(&d);
    crash_point("checkpoint-before-commit");
    let latest = format!("{name} {}\n", sha256_hex(json.as_bytes()));
    write_atomic(&root.join(LATEST), latest.as_bytes())?;
    crash_point("checkpoint-after-commit");
    remove_older(&root, state.epochs_done);
    Ok(())
}

/// Removes the checkpoints of epochs before the previous one, and leftovers of the layout
/// before checkpoints had their own folders (best effort: what stays is never read).
fn remove_older(root: &Path, epochs_done: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old_epoch = name
            .strip_prefix("epoch-")
            .and_then(|n| n.parse::<usize>().ok());
        if old_epoch.is_some_and(|e| e + 1 < epochs_done) {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if [MODEL, OPTIMIZER, STATE].contains(&name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the run has a committed checkpoint to resume from.
pub fn exists(run_dir: &Path) -> bool {
    let root = dir(run_dir);
    root.join(LATEST).is_file() || root.join(STATE).is_file()
}

/// Reads the committed checkpoint back, every checksum checked: (model tensors, optimizer
/// tensors, loop state).
pub fn load(run_dir: &Path) -> Result<(NamedTensors, NamedTensors, LoopState)> {
    let root = dir(run_dir);
    let latest_path = root.join(LATEST);
    if !latest_path.is_file() {
        return load_unversioned(&root);
    }
    let damaged = |what: String| {
        Error::file(
            &latest_path,
            format!(
                "the checkpoint is damaged ({what}); it cannot be resumed safely — start the run \
                 again (same settings give the same result)"
            ),
        )
    };
    let latest = String::from_utf8(crate::files::read_file_at_most(
        &latest_path,
        4096,
        "LATEST",
    )?)
    .map_err(|_| damaged("LATEST is not text".into()))?;
    let mut parts = latest.split_whitespace();
    let (Some(name), Some(state_sha), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(damaged(format!("LATEST reads `{}`", latest.trim())));
    };
    if !name.starts_with("epoch-") || name.contains(['/', '\\', '.']) {
        return Err(damaged(format!("LATEST names `{name}`")));
    }
    let d = root.join(name);
    let state_bytes =
        crate::files::read_file_at_most(&d.join(STATE), 1 << 20, "a checkpoint state")?;
    if sha256_hex(&state_bytes) != state_sha {
        return Err(damaged(format!(
            "{name}/{STATE} does not match its checksum"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&state_bytes)
        .map_err(|e| damaged(format!("{name}/{STATE}: {e}")))?;
    if epoch_dir_name(manifest.state.epochs_done) != name {
        return Err(damaged(format!(
            "{name} holds the state after epoch {}",
            manifest.state.epochs_done
        )));
    }
    let read = |file: &str| -> Result<NamedTensors> {
        let want = manifest
            .files
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, h)| h.as_str())
            .ok_or_else(|| damaged(format!("{name}/{STATE} lists no {file}")))?;
        let path = d.join(file);
        let bytes = read_file(&path)?;
        if sha256_hex(&bytes) != want {
            return Err(damaged(format!(
                "{name}/{file} does not match its checksum"
            )));
        }
        Ok(named(load_weights(&path)?))
    };
    Ok((read(MODEL)?, read(OPTIMIZER)?, manifest.state))
}

/// The layout written before checkpoints had folders and checksums (`checkpoint/state.json`
/// beside the two tensor files): read as it is, with a warning.
fn load_unversioned(root: &Path) -> Result<(NamedTensors, NamedTensors, LoopState)> {
    let state_path = root.join(STATE);
    if !state_path.is_file() {
        return Err(Error::file(
            root,
            "no checkpoint to resume from (the run stopped before its first epoch ended)",
        ));
    }
    eprintln!(
        "warning: {} was written by an older graft without checksums: resuming it as it is",
        root.display()
    );
    let text = String::from_utf8(crate::files::read_file_at_most(
        &state_path,
        1 << 20,
        "a checkpoint state",
    )?)
    .map_err(|_| Error::file(&state_path, "not text"))?;
    let state: LoopState = serde_json::from_str(&text)
        .map_err(|e| Error::file(&state_path, format!("invalid checkpoint state: {e}")))?;
    Ok((
        named(load_weights(&root.join(MODEL))?),
        named(load_weights(&root.join(OPTIMIZER))?),
        state,
    ))
}

fn named(map: TensorMap) -> NamedTensors {
    map.tensors
        .into_iter()
        .map(|(k, t)| (k, (t.shape, t.data)))
        .collect()
}
