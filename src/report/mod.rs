//! `graft report`: one self-contained HTML file for a run, a comparison grid or a
//! cross-validation — charts inlined as SVG, misclassified images as PNG data URLs, no scripts,
//! stylesheets, fonts or network.
//!
//! ```text
//! RUN/metrics.jsonl (+ config.toml, model.json, eval.json)  → RUN/report.html   write_run_report
//! DIR/compare.json                                          → DIR/report.html   write_compare_report
//! DIR/cv.json                                               → DIR/report.html   write_cv_report
//! ```
//!
//! Charts sit in elements with stable ids (`loss-curve`, `accuracy-curve`, `lr-curve`,
//! `confusion-matrix`, `per-class`, `misclassified`, `comparison-table`, `comparison-chart`,
//! `cv-folds`).

mod compare;
mod cv;
mod run;

use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub use compare::write_compare_report;
pub use cv::write_cv_report;
pub use run::write_run_report;

/// The report's file name inside the folder it describes.
pub const REPORT_FILE: &str = "report.html";

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
    } else if dir.join("metrics.jsonl").is_file() {
        write_run_report(dir)
    } else {
        Err(Error::file(
            dir,
            "nothing to report: no compare.json (graft compare), cv.json (graft cv) or \
             metrics.jsonl (graft fit) in this folder",
        ))
    }
}

/// Reads and parses a JSON file, naming it in errors.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// Writes `dir/report.html` and returns its path.
fn write_page(dir: &Path, html: &str) -> Result<PathBuf> {
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, html).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// The `href` from the report in `dir` to the run report of `run_dir`, if that report exists.
/// A relative `run_dir` is tried relative to `dir` first, then to the working directory.
fn run_report_link(dir: &Path, run_dir: &Path) -> Option<String> {
    let candidates = if run_dir.is_absolute() {
        vec![run_dir.to_path_buf()]
    } else {
        vec![dir.join(run_dir), run_dir.to_path_buf()]
    };
    let target = candidates
        .into_iter()
        .map(|d| d.join(REPORT_FILE))
        .find(|p| p.is_file())?
        .canonicalize()
        .ok()?;
    let base = dir.canonicalize().ok()?;
    let rel = relative_path(&base, &target)?;
    Some(crate::render::html::href(&rel))
}

/// `target` relative to the directory `base` (both absolute and normalised), with `/`.
fn relative_path(base: &Path, target: &Path) -> Option<String> {
    let b: Vec<Component> = base.components().collect();
    let t: Vec<Component> = target.components().collect();
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    for c in &t[common..] {
        parts.push(c.as_os_str().to_str()?.to_string());
    }
    Some(parts.join("/"))
}

/// A JSON value as table text: strings without quotes, other values as JSON.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let rel = relative_path(
            Path::new("/a/b/cmp"),
            Path::new("/a/b/cmp/cell-1/report.html"),
        );
        assert_eq!(rel.as_deref(), Some("cell-1/report.html"));
        let rel = relative_path(Path::new("/a/b/cmp"), Path::new("/a/runs/x/report.html"));
        assert_eq!(rel.as_deref(), Some("../../runs/x/report.html"));
    }
}
