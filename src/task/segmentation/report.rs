//! The segmentation part of a run's report: headline cards and per-class IoU / Dice (a table
//! with bars), from the run's `eval.json`.

use std::fmt::Write as _;
use std::path::Path;

use super::evaluate::SegEvaluation;
use crate::config::FitConfig;
use crate::error::Result;
use crate::render::html::{Cell, esc, note, num, pct, table};
use crate::train::{Section, TaskReport};

pub(super) fn report(run_dir: &Path, _cfg: Option<&FitConfig>) -> Result<TaskReport> {
    let eval: Option<SegEvaluation> =
        crate::task::classification::report::read_json_if_present(&run_dir.join("eval.json"))?;
    let Some(e) = eval else {
        return Ok(TaskReport {
            cards: Vec::new(),
            sections: vec![Section::new(
                "per-class-iou",
                "IoU per class",
                note("No eval.json yet (the run has not finished): no test metrics to show."),
            )],
        });
    };
    let cards = vec![
        ("test mIoU".to_string(), pct(e.miou)),
        ("pixel accuracy".to_string(), pct(e.pixel_accuracy)),
        ("mean Dice".to_string(), pct(e.dice)),
        ("test loss".to_string(), num(e.loss, 4)),
        ("test images".to_string(), e.samples.to_string()),
    ];
    Ok(TaskReport {
        cards,
        sections: vec![Section::new(
            "per-class-iou",
            "IoU per class",
            per_class(&e),
        )],
    })
}

/// One row per class: IoU as a bar and a number, Dice, the class's share of the pixels.
fn per_class(e: &SegEvaluation) -> String {
    let rows: Vec<(Vec<Cell>, bool)> = e
        .class_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let iou = e.iou_per_class.get(i).copied().unwrap_or(0.0);
            let pixels: u64 = e.confusion.get(i).map_or(0, |r| r.iter().sum());
            let share = if e.pixels > 0 {
                pixels as f64 / e.pixels as f64
            } else {
                0.0
            };
            let mut bar = String::new();
            let _ = write!(
                bar,
                "<span style=\"display:inline-block;width:{:.1}px;height:0.8em;\
                 background:#4c78a8\"></span>",
                (iou.clamp(0.0, 1.0) * 200.0)
            );
            let absent = if e.absent_classes.contains(&i) {
                " (absent: counts as 0)"
            } else {
                ""
            };
            (
                vec![
                    Cell::Left(format!("{name}{absent}")),
                    Cell::Html(bar),
                    Cell::Num(num(iou, 4)),
                    Cell::Num(num(e.dice_per_class.get(i).copied().unwrap_or(0.0), 4)),
                    Cell::Num(pct(share)),
                ],
                false,
            )
        })
        .collect();
    format!(
        "<p class=\"caption\">On {} test images ({} pixels; 255 = ignored pixels left out), as \
         smp computes them: pixel counts summed over the split, then per class. {}</p>{}",
        e.samples,
        e.pixels,
        esc(&format!(
            "mIoU {:.4}, pooled (micro) IoU {:.4}.",
            e.miou, e.iou_micro
        )),
        table(
            &[
                ("class", true),
                ("IoU", true),
                ("", false),
                ("Dice", false),
                ("pixels", false)
            ],
            &rows
        )
    )
}
