//! `graft report`: one self-contained HTML file for a run, a comparison grid or a
//! cross-validation — charts inlined as SVG, misclassified images as PNG data URLs, no scripts,
//! stylesheets, fonts or network.
//!
//! ```text
//! RUN/metrics.jsonl (+ config.toml, model.json, eval.json)  → RUN/report.html   write_run_report
//! DIR/compare.json                                          → DIR/report.html   write_compare_report
//! DIR/cv.json                                               → DIR/report.html   write_cv_report
//! DIR/rank.json                                             → DIR/report.html   write_rank_report
//! ```
//!
//! Sections sit in elements with stable ids: a run's `settings`, `loss-curve`,
//! `accuracy-curve`, `lr-curve`, `step-loss-curve` (when `metrics.jsonl` records step losses),
//! `confusion-matrix`, `per-class`, `misclassified` (the test samples of highest loss),
//! `heatmaps`, `train-batch`; a comparison's `comparison-table`, `comparison-chart`,
//! `comparison-curves`, `settings`; a cross-validation's `cv-folds`, `cv-settings`.

mod compare;
mod cv;
mod files;
mod rank;
mod run;
mod settings;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use compare::write_compare_report;
pub use cv::write_cv_report;
pub use rank::write_rank_report;
pub use run::write_run_report;

pub use files::REPORT_FILE;
/// Writes the report that fits `dir`: a comparison (`compare.json`), a cross-validation
/// (`cv.json`) or a single run (`metrics.jsonl`), checked in that order.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "not a directory (expected a run, comparison or cross-validation folder)",
        ));
    }
    if dir.join("compare.json").is_file() {
        write_compare_report(dir)
    } else if dir.join("cv.json").is_file() {
        write_cv_report(dir)
    } else if dir.join("rank.json").is_file() {
        write_rank_report(dir)
    } else if dir.join("metrics.jsonl").is_file() {
        write_run_report(dir)
    } else {
        Err(Error::file(
            dir,
            "nothing to report: no compare.json (graft compare), cv.json (graft cv), \
             rank.json (graft rank) or metrics.jsonl (graft fit) in this folder",
        ))
    }
}
