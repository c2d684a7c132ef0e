//! The report of one run folder: headline numbers, training curves, confusion matrix,
//! per-class precision / recall and the misclassified test images.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::charts::{self, BLUE_C, Bars, GREEN_C, Line, ORANGE_C, YAxis};
use super::html::{self, Cell, Page, esc, note, num, pct};
use super::{images, read_json_if_present, write_page};
use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::train::fit::ModelCard;

/// One line of `metrics.jsonl`, read leniently: a diverged run writes `null` for NaN losses.
#[derive(Debug, Clone, Deserialize)]
struct EpochRow {
    epoch: usize,
    train_loss: Option<f64>,
    train_accuracy: Option<f64>,
    val_loss: Option<f64>,
    val_accuracy: Option<f64>,
    lr: Option<f64>,
    seconds: Option<f64>,
}

/// Everything a run folder holds that the report shows; only `metrics.jsonl` is required.
struct RunFiles {
    epochs: Vec<EpochRow>,
    config: Option<FitConfig>,
    card: Option<ModelCard>,
    eval: Option<Evaluation>,
}

/// Writes `run_dir/report.html` for a `graft fit` run folder and returns its path.
pub fn write_run_report(run_dir: &Path) -> Result<PathBuf> {
    let files = read_run(run_dir)?;
    let html = render(run_dir, &files);
    write_page(run_dir, &html)
}

fn read_run(dir: &Path) -> Result<RunFiles> {
    let config_path = dir.join("config.toml");
    let config = if config_path.exists() {
        Some(FitConfig::from_toml_file(&config_path)?)
    } else {
        None
    };
    Ok(RunFiles {
        epochs: read_epochs(&dir.join("metrics.jsonl"))?,
        config,
        card: read_json_if_present(&dir.join("model.json"))?,
        eval: read_json_if_present(&dir.join("eval.json"))?,
    })
}

fn read_epochs(path: &Path) -> Result<Vec<EpochRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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
    let pick = |from_card: Option<&str>, from_cfg: Option<&str>| {
        from_card
            .or(from_cfg)
            .filter(|s| !s.is_empty())
            .unwrap_or("?")
            .to_string()
    };
    let cfg = f.config.as_ref();
    let card = f.card.as_ref();
    let model = pick(
        card.map(|c| c.model.as_str()),
        cfg.map(|c| c.model.as_str()),
    );
    let data = pick(cfg.map(|c| c.data.as_str()), card.map(|c| c.data.as_str()));
    let strategy = pick(
        card.map(|c| c.strategy.as_str()),
        cfg.map(|c| c.strategy.as_str()),
    );
    let title = format!("{model} on {data} — {strategy}");
    let mut subtitle = format!("Run {}", dir.display());
    if let Some(c) = cfg {
        subtitle += &format!(
            " · optimizer {} lr {} · schedule {} · {} epochs · batch {} · loss {} · seed {}",
            c.optimizer, c.lr, c.schedule, c.epochs, c.batch_size, c.loss, c.seed
        );
    }
    let mut page = Page::new(&title, &subtitle);
    page.cards(&headline(f));
    if f.config.is_none() {
        page.raw(&note(
            "No config.toml in this run folder: settings are not shown.",
        ));
    }
    curves(&mut page, &f.epochs);
    match &f.eval {
        Some(eval) => {
            confusion(&mut page, eval);
            per_class(&mut page, eval);
            let spec = cfg
                .map(|c| c.data.as_str())
                .or(card.map(|c| c.data.as_str()));
            page.section(
                "misclassified",
                "Misclassified test images",
                &images::grid(spec, eval),
            );
        }
        None => {
            let msg = note("No eval.json yet (the run has not finished): no test metrics to show.");
            for (id, heading) in [
                ("confusion-matrix", "Confusion matrix"),
                ("per-class", "Per-class precision and recall"),
                ("misclassified", "Misclassified test images"),
            ] {
                page.section(id, heading, &msg);
            }
        }
    }
    page.finish()
}

fn headline(f: &RunFiles) -> Vec<(&'static str, String)> {
    let mut items = Vec::new();
    if let Some(e) = &f.eval {
        items.push(("test accuracy", pct(e.accuracy)));
        let top5 = e
            .top_k
            .iter()
            .find(|(k, _)| *k == 5)
            .map_or("—".to_string(), |(_, a)| pct(*a));
        items.push(("top-5 accuracy", top5));
        items.push(("macro F1", num(e.macro_f1, 4)));
        items.push(("test loss", num(e.mean_loss, 4)));
        items.push(("test samples", e.samples.to_string()));
    }
    if let Some(last) = f.epochs.last() {
        if let Some(v) = last.val_accuracy {
            items.push(("final val accuracy", pct(v)));
        }
        items.push(("epochs", f.epochs.len().to_string()));
        let secs: f64 = f.epochs.iter().filter_map(|e| e.seconds).sum();
        items.push(("training time", format!("{secs:.1} s")));
    }
    items
}

fn series(
    epochs: &[EpochRow],
    name: &str,
    color: plotters::style::RGBColor,
    get: fn(&EpochRow) -> Option<f64>,
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

fn curves(page: &mut Page, epochs: &[EpochRow]) {
    let charts: [(&str, &str, &str, YAxis, Vec<Line>); 3] = [
        (
            "loss-curve",
            "Loss",
            "loss",
            YAxis::Linear,
            vec![
                series(epochs, "train loss", BLUE_C, |e| e.train_loss),
                series(epochs, "val loss", ORANGE_C, |e| e.val_loss),
            ],
        ),
        (
            "accuracy-curve",
            "Accuracy",
            "accuracy",
            YAxis::Fraction,
            vec![
                series(epochs, "train accuracy", BLUE_C, |e| e.train_accuracy),
                series(epochs, "val accuracy", ORANGE_C, |e| e.val_accuracy),
            ],
        ),
        (
            "lr-curve",
            "Learning rate",
            "learning rate",
            YAxis::Scientific,
            vec![series(epochs, "learning rate", GREEN_C, |e| e.lr)],
        ),
    ];
    for (id, heading, y_desc, axis, lines) in charts {
        let body = match charts::line_chart(&format!("{heading} per epoch"), y_desc, &lines, axis) {
            Ok(Some(svg)) => html::figure(&svg, ""),
            Ok(None) => {
                note("Nothing to plot: metrics.jsonl has no epochs with finite values here yet.")
            }
            Err(e) => note(&e.to_string()),
        };
        page.section(id, heading, &body);
    }
}

fn confusion(page: &mut Page, eval: &Evaluation) {
    let names = &eval.class_names;
    let body = match charts::heatmap("Confusion matrix (test)", names, &eval.confusion) {
        Ok(svg) => html::figure(
            &svg,
            "Rows: true class; columns: predicted class. Numbers are counts (shown when the cells are \
             large enough); the colour is the share of the true class's samples.",
        ),
        Err(e) => note(&e.to_string()),
    };
    page.section("confusion-matrix", "Confusion matrix", &body);
}

fn per_class(page: &mut Page, eval: &Evaluation) {
    let cats: Vec<String> = eval.per_class.iter().map(|m| m.name.clone()).collect();
    let bars = [
        Bars {
            name: "precision".into(),
            values: eval.per_class.iter().map(|m| m.precision).collect(),
            errors: None,
            color: BLUE_C,
        },
        Bars {
            name: "recall".into(),
            values: eval.per_class.iter().map(|m| m.recall).collect(),
            errors: None,
            color: ORANGE_C,
        },
    ];
    let chart = match charts::bar_chart(
        "Precision and recall per class (test)",
        &cats,
        &bars,
        "",
        0.0,
        None,
    ) {
        Ok(svg) => html::figure(&svg, ""),
        Err(e) => note(&e.to_string()),
    };
    let rows: Vec<(Vec<Cell>, bool)> = eval
        .per_class
        .iter()
        .map(|m| {
            (
                vec![
                    Cell::Left(m.name.clone()),
                    Cell::Num(num(m.precision, 4)),
                    Cell::Num(num(m.recall, 4)),
                    Cell::Num(num(m.f1, 4)),
                    Cell::Num(m.support.to_string()),
                ],
                false,
            )
        })
        .collect();
    let table = html::table(
        &[
            ("class", true),
            ("precision", false),
            ("recall", false),
            ("F1", false),
            ("support", false),
        ],
        &rows,
    );
    let summary = format!(
        "<p class=\"caption\">Macro F1 {} over {} classes.</p>",
        esc(&num(eval.macro_f1, 4)),
        eval.per_class.len()
    );
    page.section(
        "per-class",
        "Per-class precision and recall",
        &format!("{chart}\n{table}\n{summary}"),
    );
}
