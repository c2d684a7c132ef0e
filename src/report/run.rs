//! The report of one run folder, for any task: headline numbers, the settings, a training curve
//! per metric (loss, the task's metrics, the learning rate), then the task's own sections
//! ([`Task::report`]: for image classification the confusion matrix, per-class precision /
//! recall and the misclassified test images).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::files::write_page;
use super::settings;
use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::render::charts::{self, BLUE_C, GREEN_C, Line, ORANGE_C, YAxis};
use crate::render::html::{self, Page, note, pct};
use crate::task::{TaskFn, with_task};
use crate::train::{Metric, Task, TaskReport};

/// One line of `metrics.jsonl`, read leniently: a diverged run writes `null` for NaN losses.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct EpochRow {
    pub(super) epoch: usize,
    lr: Option<f64>,
    seconds: Option<f64>,
    /// The training loss of each optimizer step of the epoch, in order (absent in runs written
    /// before it was recorded).
    #[serde(default)]
    step_losses: Option<Vec<Option<f64>>>,
    /// `train_loss`, `val_accuracy`, ...
    #[serde(flatten)]
    scores: BTreeMap<String, Option<f64>>,
}

impl EpochRow {
    pub(super) fn get(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied().flatten()
    }
}

/// Everything a run folder holds that the report shows; only `metrics.jsonl` is required.
struct RunFiles {
    epochs: Vec<EpochRow>,
    config: Option<FitConfig>,
    /// The task's metrics and its part of the page.
    metrics: &'static [Metric],
    task: TaskReport,
}

/// Writes `run_dir/report.html` for a `graft fit` run folder and returns its path.
pub fn write_run_report(run_dir: &Path) -> Result<PathBuf> {
    let files = read_run(run_dir)?;
    let html = render(run_dir, &files);
    write_page(run_dir, &html)
}

fn read_run(dir: &Path) -> Result<RunFiles> {
    struct TaskPart<'a>(&'a Path, Option<&'a FitConfig>);
    impl TaskFn for TaskPart<'_> {
        type Output = (&'static [Metric], TaskReport);
        fn call<T: Task>(self) -> Result<Self::Output> {
            Ok((T::METRICS, T::report(self.0, self.1)?))
        }
    }
    let config_path = dir.join("config.toml");
    let config = if config_path.exists() {
        Some(FitConfig::from_toml_file(&config_path)?)
    } else {
        None
    };
    // Folders without a config.toml predate the task setting: image classification.
    let task = config
        .as_ref()
        .map_or(FitConfig::default().task, |c| c.task.clone());
    let epochs = read_epochs(&dir.join("metrics.jsonl"))?;
    let (metrics, task) = with_task(&task, TaskPart(dir, config.as_ref()))?;
    Ok(RunFiles {
        epochs,
        config,
        metrics,
        task,
    })
}

/// The epochs of a `metrics.jsonl`, each line checked.
pub(super) fn read_epochs(path: &Path) -> Result<Vec<EpochRow>> {
    let text = crate::files::read_text(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::file(path, format!("line {}: invalid metrics line: {e}", i + 1))
            })
        })
        .collect()
}

fn render(dir: &Path, f: &RunFiles) -> String {
    let cfg = f.config.as_ref();
    let pick = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "?".into());
    let model = pick(cfg.map(|c| c.model.clone()));
    let data = pick(cfg.map(|c| c.data.clone()));
    let strategy = pick(cfg.map(|c| c.strategy.to_string()));
    let title = format!("{model} on {data} — {strategy}");
    let subtitle = format!("Run {}", dir.display());
    let mut page = Page::new(&title, &subtitle);
    page.cards(&headline(f));
    let settings_html = match cfg {
        Some(c) => settings::run_settings(c, used_image_size(dir)),
        None => note("No config.toml in this run folder: settings are not shown."),
    };
    page.section("settings", "Settings", &settings_html);
    curves(&mut page, &f.epochs, f.metrics);
    if let Some(body) = step_losses(&f.epochs) {
        page.section("step-loss-curve", "Training loss per step", &body);
    }
    for section in &f.task.sections {
        page.section(&section.id, &section.heading, &section.html);
    }
    page.finish()
}

/// The task's headline numbers, then the final validation metrics, epochs and training time.
fn headline(f: &RunFiles) -> Vec<(String, String)> {
    let mut items = f.task.cards.clone();
    if let Some(last) = f.epochs.last() {
        for m in f.metrics {
            if let Some(v) = last.get(&format!("val_{}", m.name)) {
                items.push((format!("final val {}", m.name), pct(v)));
            }
        }
        items.push(("epochs".into(), f.epochs.len().to_string()));
        let secs: f64 = f.epochs.iter().filter_map(|e| e.seconds).sum();
        items.push(("training time".into(), format!("{secs:.1} s")));
    }
    items
}

fn series(
    epochs: &[EpochRow],
    name: &str,
    color: plotters::style::RGBColor,
    get: impl Fn(&EpochRow) -> Option<f64>,
) -> Line {
    Line {
        name: name.to_string(),
        points: epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64, get(e)?)))
            .collect(),
        color,
    }
}

/// `(train, val)` curves of one score (`loss`, `accuracy`).
fn split_series(epochs: &[EpochRow], name: &str) -> Vec<Line> {
    ["train", "val"]
        .into_iter()
        .zip([BLUE_C, ORANGE_C])
        .map(|(split, color)| {
            let key = format!("{split}_{name}");
            series(epochs, &format!("{split} {name}"), color, |e| e.get(&key))
        })
        .collect()
}

/// One chart per score, in sections with stable ids: `loss-curve`, `<metric>-curve` (e.g.
/// `accuracy-curve`), `lr-curve`.
fn curves(page: &mut Page, epochs: &[EpochRow], metrics: &[Metric]) {
    let mut charts: Vec<(String, String, String, YAxis, Vec<Line>)> = vec![(
        "loss-curve".into(),
        "Loss".into(),
        "loss".into(),
        YAxis::Linear,
        split_series(epochs, "loss"),
    )];
    for m in metrics {
        charts.push((
            format!("{}-curve", m.name),
            m.label.to_string(),
            m.name.to_string(),
            YAxis::Fraction,
            split_series(epochs, m.name),
        ));
    }
    charts.push((
        "lr-curve".into(),
        "Learning rate".into(),
        "learning rate".into(),
        YAxis::Scientific,
        vec![series(epochs, "learning rate", GREEN_C, |e| e.lr)],
    ));
    for (id, heading, y_desc, axis, lines) in charts {
        let body = match charts::line_chart(&format!("{heading} per epoch"), &y_desc, &lines, axis)
        {
            Ok(Some(svg)) => html::figure(&svg, ""),
            Ok(None) => {
                note("Nothing to plot: metrics.jsonl has no epochs with finite values here yet.")
            }
            Err(e) => note(&e.to_string()),
        };
        page.section(&id, &heading, &body);
    }
}

/// Above this many optimizer steps, the step chart shows means of consecutive steps.
const MAX_STEP_POINTS: usize = 2000;

/// The chart of the training loss of every optimizer step (x: the step, counted over the whole
/// run), with each epoch's mean over its steps; `None` when `metrics.jsonl` records no step
/// losses (runs written before they were).
fn step_losses(epochs: &[EpochRow]) -> Option<String> {
    if !epochs
        .iter()
        .any(|e| e.step_losses.as_ref().is_some_and(|s| !s.is_empty()))
    {
        return None;
    }
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut means: Vec<(f64, f64)> = Vec::new();
    let mut step = 0usize;
    for e in epochs {
        let losses = e.step_losses.as_deref().unwrap_or(&[]);
        let first = step + 1;
        let mut finite = Vec::new();
        for l in losses {
            step += 1;
            let l = l.unwrap_or(f64::NAN);
            steps.push((step as f64, l));
            if l.is_finite() {
                finite.push(l);
            }
        }
        if !finite.is_empty() {
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            means.push(((first + step) as f64 / 2.0, mean));
        }
    }
    let total = steps.len();
    let stride = total.div_ceil(MAX_STEP_POINTS).max(1);
    let shown: Vec<(f64, f64)> = if stride == 1 {
        steps
    } else {
        steps
            .chunks(stride)
            .filter_map(|c| {
                let ok: Vec<&(f64, f64)> = c.iter().filter(|p| p.1.is_finite()).collect();
                (!ok.is_empty()).then(|| {
                    let n = ok.len() as f64;
                    (
                        ok.iter().map(|p| p.0).sum::<f64>() / n,
                        ok.iter().map(|p| p.1).sum::<f64>() / n,
                    )
                })
            })
            .collect()
    };
    let lines = [
        Line {
            name: if stride == 1 {
                "loss per step".into()
            } else {
                format!("loss per step (means of {stride})")
            },
            points: shown,
            color: BLUE_C,
        },
        Line {
            name: "mean of the epoch's steps".into(),
            points: means,
            color: ORANGE_C,
        },
    ];
    let caption = format!(
        "{total} optimizer steps over {} epochs; the epoch means sit at each epoch's middle step.",
        epochs.len()
    );
    Some(
        match charts::line_chart_over(
            "Training loss per step",
            "optimizer step",
            "loss",
            &lines,
            YAxis::Linear,
        ) {
            Ok(Some(svg)) => html::figure(&svg, &caption),
            Ok(None) => note("Nothing to plot: every recorded step loss is NaN."),
            Err(e) => note(&e.to_string()),
        },
    )
}

/// The input size a finished run used, from its `model.json` (image tasks record it there).
fn used_image_size(dir: &Path) -> Option<usize> {
    let text = crate::files::read_text(&dir.join("model.json")).ok()?;
    let card: serde_json::Value = serde_json::from_str(&text).ok()?;
    card["image_size"].as_u64().map(|n| n as usize)
}
