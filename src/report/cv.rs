//! The report of a `graft cv` folder (`cv.json`): accuracy per fold as bars with the mean ± sd
//! band, and a table linking each fold's run report.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::files::{read_json, run_config, run_report_link, value_text, write_page};
use super::settings;
use crate::error::Result;
use crate::render::charts::{self, BLUE_C, Bars, Reference};
use crate::render::html::{self, Cell, Page, note, pct};

/// `cv.json`, read leniently (numbers may be `null` where a fold diverged).
#[derive(Debug, Deserialize)]
struct CrossValidation {
    #[serde(default = "accuracy")]
    metric: String,
    folds: Vec<Option<f64>>,
    mean: Option<f64>,
    sd: Option<f64>,
    #[serde(default)]
    run_dirs: Vec<PathBuf>,
    #[serde(default)]
    settings: Option<serde_json::Map<String, Value>>,
}

fn accuracy() -> String {
    "accuracy".into()
}

/// Writes `dir/report.html` from `dir/cv.json` and returns its path.
pub fn write_cv_report(dir: &Path) -> Result<PathBuf> {
    let cv: CrossValidation = read_json(&dir.join("cv.json"))?;
    write_page(dir, &render(dir, &cv))
}

fn render(dir: &Path, cv: &CrossValidation) -> String {
    let k = cv.folds.len();
    // The folds share their settings (but `out`): the first readable fold's config.toml.
    let config = cv.run_dirs.iter().find_map(|d| run_config(dir, d));
    let mut settings: Vec<(String, String)> = match &config {
        Some(c) => settings::rows(c)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        None => Vec::new(),
    };
    // Older cv.json files carry a settings map: what is not in the config's rows.
    for (key, v) in cv.settings.iter().flatten() {
        if !settings.iter().any(|(k, _)| k == key) {
            settings.push((key.clone(), value_text(v)));
        }
    }
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut title = format!("Cross-validation: {k} folds");
    match (get("model"), get("data")) {
        (Some(model), Some(data)) => title += &format!(" — {model} on {data}"),
        (Some(model), None) => title += &format!(" — {model}"),
        _ => {}
    }
    let mut page = Page::new(&title, &format!("Folder {}", dir.display()));
    let mean = cv.mean.unwrap_or(f64::NAN);
    let sd = cv.sd.unwrap_or(f64::NAN);
    let finite: Vec<f64> = cv
        .folds
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let metric = &cv.metric;
    page.cards(&[
        (format!("mean {metric}"), pct(mean)),
        ("± sd over folds".into(), pct(sd)),
        ("worst fold".into(), pct(lo)),
        ("best fold".into(), pct(hi)),
        ("folds".into(), k.to_string()),
    ]);
    page.section(
        "cv-folds",
        &format!("Test {metric} per fold"),
        &format!("{}\n{}", chart(cv), table(dir, cv)),
    );
    let body = if settings.is_empty() {
        note("No fold's run folder has a readable config.toml: the settings can't be shown.")
    } else {
        let rows: Vec<(&str, String)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let mut body = settings::table(&rows);
        if config.is_some() {
            body += "\n<p class=\"caption\">Every fold trains with these settings; the seed \
                     also draws the folds.</p>";
        }
        body
    };
    page.section("cv-settings", "Settings", &body);
    page.finish()
}

fn chart(cv: &CrossValidation) -> String {
    if cv.folds.is_empty() {
        return note("cv.json lists no folds.");
    }
    let cats: Vec<String> = (1..=cv.folds.len()).map(|i| format!("fold {i}")).collect();
    let values: Vec<f64> = cv.folds.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let mean = cv.mean.unwrap_or(f64::NAN);
    let sd = cv.sd.unwrap_or(0.0);
    let mut floor = values.clone();
    floor.push(mean - sd);
    let start = charts::bar_axis_start(&floor, &[]);
    let reference = Reference {
        value: mean,
        band: sd,
        label: format!("mean {} ± {}", pct(mean), pct(sd)),
    };
    let metric = &cv.metric;
    let bars = [Bars {
        name: format!("test {metric}"),
        values,
        errors: None,
        color: BLUE_C,
    }];
    match charts::bar_chart(
        &format!("Test {metric} per fold"),
        &cats,
        &bars,
        &format!("test {metric}"),
        start,
        Some(&reference),
    ) {
        Ok(svg) => {
            let mut caption =
                "Green line: mean over folds; shaded band: ± one standard deviation.".to_string();
            if start > 0.0 {
                caption += &format!(
                    " The axis starts at {} so that differences are visible.",
                    pct(start)
                );
            }
            html::figure(&svg, &caption)
        }
        Err(e) => note(&e.to_string()),
    }
}

fn table(dir: &Path, cv: &CrossValidation) -> String {
    let rows: Vec<(Vec<Cell>, bool)> = cv
        .folds
        .iter()
        .enumerate()
        .map(|(i, acc)| {
            let run = cv.run_dirs.get(i);
            let link = run
                .and_then(|d| run_report_link(dir, d))
                .map_or_else(String::new, |h| format!("<a href=\"{h}\">run report</a>"));
            (
                vec![
                    Cell::Num((i + 1).to_string()),
                    Cell::Num(pct(acc.unwrap_or(f64::NAN))),
                    Cell::Left(run.map(|d| d.display().to_string()).unwrap_or_default()),
                    Cell::Html(link),
                ],
                false,
            )
        })
        .collect();
    let header = format!("test {}", cv.metric);
    html::table(
        &[
            ("fold", false),
            (header.as_str(), false),
            ("run folder", true),
            ("report", true),
        ],
        &rows,
    )
}
