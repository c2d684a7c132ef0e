//! What every report page reads and writes: JSON files named in errors, the page file itself,
//! and links between reports.

use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The report's file name inside the folder it describes.
pub const REPORT_FILE: &str = "report.html";

/// Reads and parses a JSON file, naming it in errors.
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::files::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// Writes `dir/report.html` and returns its path.
pub(super) fn write_page(dir: &Path, html: &str) -> Result<PathBuf> {
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, html).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// The `href` from the report in `dir` to the run report of `run_dir`, if that report exists.
/// A relative `run_dir` is tried relative to `dir` first, then to the working directory.
pub(super) fn run_report_link(dir: &Path, run_dir: &Path) -> Option<String> {
    let target = run_file(dir, run_dir, REPORT_FILE)?.canonicalize().ok()?;
    let base = dir.canonicalize().ok()?;
    let rel = relative_path(&base, &target)?;
    Some(crate::render::html::href(&rel))
}

/// The file `name` of the run folder `run_dir` named in a report of `dir`, if it exists: a
/// relative `run_dir` is tried relative to `dir` first, then to the working directory.
pub(super) fn run_file(dir: &Path, run_dir: &Path, name: &str) -> Option<PathBuf> {
    let candidates = if run_dir.is_absolute() {
        vec![run_dir.to_path_buf()]
    } else {
        vec![dir.join(run_dir), run_dir.to_path_buf()]
    };
    candidates
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The settings of the run folder `run_dir` named in a report of `dir` (its `config.toml`),
/// if it can be read.
pub(super) fn run_config(dir: &Path, run_dir: &Path) -> Option<crate::config::FitConfig> {
    let path = run_file(dir, run_dir, "config.toml")?;
    crate::config::FitConfig::from_toml_file(&path).ok()
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
pub(super) fn value_text(v: &serde_json::Value) -> String {
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
