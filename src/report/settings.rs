//! The settings table of every report: what a run was (model, weights, data, training
//! recipe, device), read from its `config.toml` — for a comparison, the settings its cells
//! share once, and the ones that differ per cell.

use std::path::Path;

use crate::config::FitConfig;
use crate::loss::{ClassWeights, LossChoice};
use crate::optim::OptimizerKind;
use crate::render::html::{self, Cell, esc};

/// The text-classification task's name (its settings differ: no image size, a model folder).
const TEXT_TASK: &str = "text-classification";

/// The last part of a path (`weights/resnet18.pth` → `resnet18.pth`), or the text itself.
fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |f| f.to_string_lossy().into_owned())
}

/// A float as its shortest round-trip text (`0.001`, `1e-5`).
fn float(v: f64) -> String {
    format!("{v:?}")
}

/// `(setting, value)` rows of a run's settings, in a fixed order.
pub(super) fn rows(cfg: &FitConfig) -> Vec<(&'static str, String)> {
    let text = cfg.task == TEXT_TASK;
    let weights = if cfg.weights.is_empty() || cfg.weights == "none" {
        "none (random init)".to_string()
    } else {
        file_name(&cfg.weights)
    };
    // A text run's model is its weights folder; `model` is an image setting.
    let model = if text {
        file_name(&cfg.weights)
    } else {
        cfg.model.clone()
    };
    let mut rows: Vec<(&'static str, String)> = vec![
        ("model", model),
        ("weights", weights),
        ("task", cfg.task.clone()),
        ("strategy", cfg.strategy.to_string()),
    ];
    if cfg.task == "segmentation" {
        rows.push(("decoder", cfg.decoder.to_string()));
    }
    rows.push((
        "data",
        if cfg.data.is_empty() {
            "?".into()
        } else {
            cfg.data.clone()
        },
    ));
    if text {
        rows.push((
            "max length",
            cfg.max_length
                .map_or("the model's".into(), |n| format!("{n} tokens")),
        ));
        rows.push(("pooling", cfg.pooling.to_string()));
    } else {
        // Without --image-size the task chooses from the data; a run's report puts the size
        // it chose in (`run_settings`).
        let size = match cfg.image_size {
            Some(s) => format!("{s} px"),
            None => "from the data".to_string(),
        };
        rows.push(("image size", size));
        rows.push(("resize", cfg.resize.to_string()));
        rows.push(("augment", cfg.augment.to_string()));
    }
    let optimizer = match cfg.optimizer {
        OptimizerKind::Sgd => format!(
            "sgd (momentum {}{})",
            float(cfg.momentum),
            if cfg.nesterov { ", nesterov" } else { "" }
        ),
        OptimizerKind::Adam | OptimizerKind::AdamW => {
            format!("{} (betas {})", cfg.optimizer, cfg.betas)
        }
        other => other.to_string(),
    };
    rows.push(("optimizer", optimizer));
    let mut lr = float(cfg.lr);
    if cfg.backbone_lr_mult != 1.0 {
        lr += &format!(" (backbone × {})", float(cfg.backbone_lr_mult));
    }
    rows.push(("lr", lr));
    let mut schedule = format!("{} per {}", cfg.schedule, cfg.schedule_unit);
    if cfg.warmup_epochs > 0 {
        schedule += &format!(", warm-up {} epochs", cfg.warmup_epochs);
    }
    if cfg.warmup_ratio > 0.0 {
        schedule += &format!(", warm-up ratio {}", float(cfg.warmup_ratio));
    }
    rows.push(("schedule", schedule));
    rows.push(("weight decay", float(cfg.weight_decay)));
    let mut epochs = cfg.epochs.to_string();
    if let Some(p) = cfg.early_stopping {
        epochs += &format!(
            " (early stopping: patience {p} on {})",
            cfg.early_stopping_metric
        );
    }
    rows.push(("epochs", epochs));
    rows.push(("batch size", cfg.batch_size.to_string()));
    let mut loss = cfg.loss.to_string();
    if cfg.label_smoothing > 0.0 {
        loss += &format!(", label smoothing {}", float(cfg.label_smoothing));
    }
    if matches!(cfg.loss, LossChoice::Focal) {
        loss += &format!(", γ {}", float(cfg.focal_gamma));
    }
    if !matches!(cfg.class_weights, ClassWeights::None) {
        loss += &format!(", class weights {}", cfg.class_weights);
    }
    rows.push(("loss", loss));
    rows.push(("bn", cfg.bn.to_string()));
    rows.push(("sampler", cfg.sampler.to_string()));
    rows.push(("val split", float(cfg.val_split)));
    if let Some(n) = cfg.limit_train {
        rows.push(("limit train", n.to_string()));
    }
    if let Some(n) = cfg.limit_test {
        rows.push(("limit test", n.to_string()));
    }
    rows.push(("seed", cfg.seed.to_string()));
    rows.push((
        "device / kernels",
        format!(
            "{} · kernels {} · train layout {}",
            cfg.device, cfg.kernels, cfg.train_layout
        ),
    ));
    rows
}

/// The settings as `setting | value` tables: one, or for a long list two side by side (they
/// wrap under each other on a narrow page).
pub(super) fn table(rows: &[(&str, String)]) -> String {
    let one = |rows: &[(&str, String)]| {
        let rows: Vec<(Vec<Cell>, bool)> = rows
            .iter()
            .map(|(k, v)| {
                (
                    vec![Cell::Left(k.to_string()), Cell::Left(v.clone())],
                    false,
                )
            })
            .collect();
        html::table(&[("setting", true), ("value", true)], &rows)
    };
    if rows.len() <= 10 {
        return one(rows);
    }
    let (a, b) = rows.split_at(rows.len().div_ceil(2));
    format!("<div class=\"settings\">\n{}\n{}\n</div>", one(a), one(b))
}

/// One run's settings section body; `used_size` is the input size the run recorded in its
/// `model.json` (what "from the data" came to).
pub(super) fn run_settings(cfg: &FitConfig, used_size: Option<usize>) -> String {
    let mut rows = rows(cfg);
    if let (None, Some(n)) = (cfg.image_size, used_size) {
        for (key, value) in &mut rows {
            if *key == "image size" {
                *value = format!("{n} px (chosen from the data)");
            }
        }
    }
    table(&rows)
}

/// The settings of several runs (a comparison's cells, labelled): a table of those every run
/// with a config shares, then one row per run of the settings that differ. `None` entries are
/// runs whose `config.toml` could not be read.
pub(super) fn shared_and_varying(runs: &[(String, Option<FitConfig>)]) -> String {
    let known: Vec<(&String, Vec<(&'static str, String)>)> = runs
        .iter()
        .filter_map(|(label, cfg)| Some((label, rows(cfg.as_ref()?))))
        .collect();
    if known.is_empty() {
        return html::note(
            "No cell's run folder has a readable config.toml: the settings can't be shown.",
        );
    }
    // Keys in first-seen order; a key missing from a run counts as differing.
    let mut keys: Vec<&'static str> = Vec::new();
    for (_, rows) in &known {
        for (k, _) in rows {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
    }
    let value = |rows: &[(&'static str, String)], key: &str| {
        rows.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    };
    let (mut shared, mut varying) = (Vec::new(), Vec::new());
    for key in keys {
        let first = value(&known[0].1, key);
        if known.iter().all(|(_, rows)| value(rows, key) == first) {
            shared.push((key, first.unwrap_or_default()));
        } else {
            varying.push(key);
        }
    }
    let mut out = format!(
        "<h3>Shared by every cell</h3>\n{}\n",
        if shared.is_empty() {
            html::note("No setting is the same in every cell.")
        } else {
            table(&shared)
        }
    );
    if varying.is_empty() {
        out += &html::note("Every cell has the same settings.");
    } else {
        out += &format!(
            "<h3>Varying per cell</h3>\n<p class=\"caption\">Settings that differ between cells: \
             {}.</p>\n",
            esc(&varying.join(", "))
        );
        let mut headers: Vec<(&str, bool)> = vec![("cell", true)];
        headers.extend(varying.iter().map(|k| (*k, true)));
        let rows: Vec<(Vec<Cell>, bool)> = known
            .iter()
            .map(|(label, rows)| {
                let mut cells = vec![Cell::Left((*label).clone())];
                cells.extend(
                    varying
                        .iter()
                        .map(|k| Cell::Left(value(rows, k).unwrap_or_else(|| "—".into()))),
                );
                (cells, false)
            })
            .collect();
        out += &html::table(&headers, &rows);
    }
    let missing = runs.len() - known.len();
    if missing > 0 {
        out += &html::note(&format!(
            "{missing} of {} cells have no readable config.toml in their run folder: not included.",
            runs.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_model_weights_file_and_text_length() {
        let cfg = FitConfig {
            weights: "/w/resnet18-f37072fd.pth".into(),
            ..FitConfig::default()
        };
        let r = rows(&cfg);
        assert_eq!(r[0], ("model", "resnet18".into()));
        assert_eq!(r[1], ("weights", "resnet18-f37072fd.pth".into()));
        assert!(r.iter().any(|(k, _)| *k == "image size"));
        let text = FitConfig {
            task: TEXT_TASK.into(),
            weights: "/models/bert-tiny".into(),
            max_length: Some(128),
            ..FitConfig::default()
        };
        let r = rows(&text);
        assert_eq!(r[0], ("model", "bert-tiny".into()));
        assert!(r.contains(&("max length", "128 tokens".into())));
        assert!(!r.iter().any(|(k, _)| *k == "image size"));
    }

    #[test]
    fn splits_shared_and_varying_settings() {
        let a = FitConfig::default();
        let b = FitConfig {
            lr: 0.1,
            ..FitConfig::default()
        };
        let html = shared_and_varying(&[
            ("lr=0.001".into(), Some(a)),
            ("lr=0.1".into(), Some(b)),
            ("gone".into(), None),
        ]);
        assert!(html.contains("Settings that differ between cells: lr."));
        assert!(html.contains(">resnet18<"));
        assert!(html.contains("1 of 3 cells"));
    }
}
