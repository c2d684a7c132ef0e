//! Where a run's pretrained weights come from: `--weights` as given — `imagenet` (the default),
//! an id of the published index (`crate::weights::hub`), a path, or `none` — turned into the file
//! or folder the task loads. Runs record the resolved path in `config.toml`, so a resumed run,
//! `eval` and `predict` read exactly the file the run started from.

use super::task::Task;
use crate::config::{FitConfig, Strategy};
use crate::error::{Error, Result};
use crate::weights::hub::{self, WeightsSpec};

/// `cfg` with `--weights` resolved for task `T`: a published entry fetched into graft's cache
/// (downloaded if missing, checked by SHA-256) and replaced by its path; `imagenet` for a model
/// without published weights (or for a task that takes model folders) left to the task. A path
/// or `none` is returned as it is, so resolving twice is harmless.
pub fn resolve_pretrained<T: Task>(cfg: &FitConfig, quiet: bool) -> Result<FitConfig> {
    let mut cfg = cfg.clone();
    if !T::IMAGENET_WEIGHTS && cfg.weights == hub::IMAGENET {
        // The task's own check says what it needs instead (a model folder).
        return Ok(cfg);
    }
    match hub::classify(&cfg.weights, &cfg.model)? {
        WeightsSpec::None | WeightsSpec::Path(_) => {}
        WeightsSpec::NoImagenet { model, available } => {
            if cfg.strategy != Strategy::Scratch && !quiet {
                eprintln!(
                    "note: {model} has no published ImageNet weights ({} have), so its backbone \
                     starts from random weights",
                    available.join(", ")
                );
            }
            cfg.weights = "none".into();
        }
        WeightsSpec::Published(p) => {
            if p.folder.is_none() && p.model != cfg.model {
                return Err(Error::invalid(format!(
                    "--weights {}: these are {} weights, not {}'s (use --model {})",
                    p.id, p.model, cfg.model, p.model
                )));
            }
            if cfg.strategy == Strategy::Scratch && p.folder.is_none() {
                // Nothing to load: a from-scratch run only borrows the architecture.
                cfg.weights = "none".into();
                return Ok(cfg);
            }
            let root = crate::files::cache_root(cfg.cache_dir.as_deref());
            let path = hub::fetch(&p, &root, quiet)?;
            cfg.weights = path.to_string_lossy().into_owned();
        }
    }
    Ok(cfg)
}
