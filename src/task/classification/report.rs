//! The classification parts of a run's report: headline test numbers, the confusion matrix
//! and per-class precision / recall.

use std::path::Path;

use crate::error::{Error, Result};
use crate::metrics::Evaluation;
use crate::render::charts::{self, BLUE_C, Bars, ORANGE_C};
use crate::render::html::{self, Cell, esc, note, num, pct};
use crate::train::{Section, TaskReport};

/// A classification run's part of its report: headline cards, the confusion matrix, per-class
/// precision / recall and the task's examples (`misclassified` section: `examples` renders
/// it); without an `eval.json` (an unfinished run) the sections say so.
pub fn report(
    run_dir: &Path,
    examples_heading: &str,
    examples: impl FnOnce(&Evaluation) -> String,
) -> Result<TaskReport> {
    let eval: Option<Evaluation> = read_json_if_present(&run_dir.join("eval.json"))?;
    Ok(match &eval {
        Some(e) => {
            let mut sections = sections(e);
            sections.push(Section::new("misclassified", examples_heading, examples(e)));
            TaskReport {
                cards: cards(e),
                sections,
            }
        }
        None => {
            let msg = note("No eval.json yet (the run has not finished): no test metrics to show.");
            TaskReport {
                cards: Vec::new(),
                sections: [
                    ("confusion-matrix", "Confusion matrix"),
                    ("per-class", "Per-class precision and recall"),
                    ("misclassified", examples_heading),
                ]
                .into_iter()
                .map(|(id, heading)| Section::new(id, heading, msg.clone()))
                .collect(),
            }
        }
    })
}

/// The headline cards of an evaluation.
pub fn cards(e: &Evaluation) -> Vec<(String, String)> {
    let top5 = e
        .top_k
        .iter()
        .find(|(k, _)| *k == 5)
        .map_or("—".to_string(), |(_, a)| pct(*a));
    vec![
        ("test accuracy".to_string(), pct(e.accuracy)),
        ("top-5 accuracy".to_string(), top5),
        ("macro F1".to_string(), num(e.macro_f1, 4)),
        ("test loss".to_string(), num(e.mean_loss, 4)),
        ("test samples".to_string(), e.samples.to_string()),
    ]
}

/// The confusion matrix and per-class sections.
pub fn sections(e: &Evaluation) -> Vec<Section> {
    let mut s = Vec::new();
    confusion(&mut s, e);
    per_class(&mut s, e);
    s
}

/// Reads and parses a JSON file, naming it in errors; `None` when the file does not exist.
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::files::read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

fn confusion(sections: &mut Vec<Section>, eval: &Evaluation) {
    let names = &eval.class_names;
    let body = match charts::heatmap("Confusion matrix (test)", names, &eval.confusion) {
        Ok(svg) => html::figure(
            &svg,
            "Rows: true class; columns: predicted class. Numbers are counts (shown when the cells are \
             large enough); the colour is the share of the true class's samples.",
        ),
        Err(e) => note(&e.to_string()),
    };
    sections.push(Section::new("confusion-matrix", "Confusion matrix", body));
}

fn per_class(sections: &mut Vec<Section>, eval: &Evaluation) {
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
    sections.push(Section::new(
        "per-class",
        "Per-class precision and recall",
        format!("{chart}\n{table}\n{summary}"),
    ));
}
