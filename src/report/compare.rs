//! The report of a `graft compare` folder (`compare.json`): the grid's table, with links to
//! each cell's run report, and a bar chart of accuracy with ± sd error bars.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::files::{read_json, run_config, run_file, run_report_link, value_text, write_page};
use super::run::read_epochs;
use super::settings;
use crate::error::Result;
use crate::render::charts::{self, BLUE_C, Bars, Line, PALETTE, YAxis};
use crate::render::html::{self, Cell, Page, note, num, pct};

/// `compare.json`, read leniently (numbers may be `null` where a run diverged).
#[derive(Debug, Deserialize)]
struct Comparison {
    #[serde(default)]
    grid: Grid,
    cells: Vec<CellRow>,
}

impl Comparison {
    /// The compared test metric (`accuracy`; the same for every cell).
    fn metric(&self) -> &str {
        self.cells.first().map_or("accuracy", |c| c.metric.as_str())
    }

    /// Whether any cell ran two seeds or more: a spread over one seed is no spread, so a
    /// single-seed comparison shows no "± sd" anywhere.
    fn seeded(&self) -> bool {
        self.cells.iter().any(|c| c.tests.len() >= 2)
    }
}

#[derive(Debug, Deserialize)]
struct CellRow {
    #[serde(default)]
    settings: serde_json::Map<String, Value>,
    #[serde(default = "accuracy")]
    metric: String,
    #[serde(alias = "test_accuracy")]
    test: Option<f64>,
    sd: Option<f64>,
    #[serde(default, alias = "accuracies")]
    tests: Vec<Option<f64>>,
    final_loss: Option<f64>,
    seconds: Option<f64>,
    #[serde(default)]
    run_dirs: Vec<PathBuf>,
}

fn accuracy() -> String {
    "accuracy".into()
}

/// The grid's axes in file order (so the table's columns follow the command line).
#[derive(Debug, Default)]
struct Grid(Vec<(String, Vec<Value>)>);

impl<'de> Deserialize<'de> for Grid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Axes;
        impl<'de> Visitor<'de> for Axes {
            type Value = Grid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of setting → list of values")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Grid, A::Error> {
                let mut axes = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    let values = match v {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    axes.push((k, values));
                }
                Ok(Grid(axes))
            }
        }
        d.deserialize_map(Axes)
    }
}

/// Writes `dir/report.html` from `dir/compare.json` and returns its path.
pub fn write_compare_report(dir: &Path) -> Result<PathBuf> {
    let cmp: Comparison = read_json(&dir.join("compare.json"))?;
    write_page(dir, &render(dir, &cmp))
}

/// The settings columns: the grid's keys in order, then any other keys the cells carry.
fn columns(cmp: &Comparison) -> Vec<String> {
    let mut cols: Vec<String> = cmp.grid.0.iter().map(|(k, _)| k.clone()).collect();
    for cell in &cmp.cells {
        for k in cell.settings.keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    cols
}

fn setting(cell: &CellRow, key: &str) -> String {
    cell.settings.get(key).map(value_text).unwrap_or_default()
}

fn render(dir: &Path, cmp: &Comparison) -> String {
    let cols = columns(cmp);
    let axes: Vec<String> = cmp
        .grid
        .0
        .iter()
        .map(|(k, vs)| {
            format!(
                "{k} ∈ {{{}}}",
                vs.iter().map(value_text).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let runs: usize = cmp
        .cells
        .iter()
        .map(|c| c.tests.len().max(c.run_dirs.len()))
        .sum();
    // Each cell's settings, from its first run's config.toml.
    let configs: Vec<(String, Option<crate::config::FitConfig>)> = cmp
        .cells
        .iter()
        .map(|c| {
            let cfg = c.run_dirs.first().and_then(|d| run_config(dir, d));
            (label(&cols, c), cfg)
        })
        .collect();
    let mut title = format!("Comparison: {} settings", cmp.cells.len());
    if let Some(shared) = shared_model(&configs) {
        title += &format!(" — {shared}");
    }
    let mut page = Page::new(
        &title,
        &format!(
            "Folder {} · {} · {runs} runs",
            dir.display(),
            axes.join(" × ")
        ),
    );
    let best = cmp
        .cells
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.test.filter(|a| a.is_finite())?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    let metric = cmp.metric();
    if let Some(b) = best {
        let c = &cmp.cells[b];
        let mut cards = vec![(
            format!("best test {metric}"),
            pct(c.test.unwrap_or(f64::NAN)),
        )];
        if cmp.seeded() {
            cards.push(("± sd over seeds".into(), pct(c.sd.unwrap_or(f64::NAN))));
        }
        cards.push(("best setting".into(), label(&cols, c)));
        page.cards(&cards);
    }
    page.section("comparison-table", "Results", &table(dir, &cols, cmp, best));
    page.section(
        "comparison-chart",
        &format!("Test {metric}"),
        &chart(&cols, cmp),
    );
    page.section(
        "comparison-curves",
        "Validation curves",
        &curves(dir, &cols, cmp),
    );
    let mut settings_html = settings::shared_and_varying(&configs);
    if cmp.seeded() {
        settings_html += "\n<p class=\"caption\">The settings are each cell's first seed's; the \
                          other seeds' runs differ only in their seed (seed + 1, ...).</p>";
    }
    page.section("settings", "Settings", &settings_html);
    page.finish()
}

/// `"resnet18 on cifar10:DIR"` when every cell with settings shares model and data.
fn shared_model(configs: &[(String, Option<crate::config::FitConfig>)]) -> Option<String> {
    let known: Vec<&crate::config::FitConfig> =
        configs.iter().filter_map(|(_, c)| c.as_ref()).collect();
    let first = known.first()?;
    let name = |c: &crate::config::FitConfig| {
        settings::rows(c)
            .into_iter()
            .find(|(k, _)| *k == "model")
            .map(|(_, v)| v)
    };
    let (model, data) = (name(first)?, first.data.clone());
    known
        .iter()
        .all(|c| name(c).as_deref() == Some(model.as_str()) && c.data == data)
        .then(|| format!("{model} on {data}"))
}

/// The mean over a cell's seeds of score `key` at each epoch, from the runs' `metrics.jsonl`.
fn cell_curve(dir: &Path, cell: &CellRow, key: &str) -> Vec<(f64, f64)> {
    let mut sums: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for run in &cell.run_dirs {
        let Some(path) = run_file(dir, run, "metrics.jsonl") else {
            continue;
        };
        let Ok(epochs) = read_epochs(&path) else {
            continue;
        };
        for e in &epochs {
            if let Some(v) = e.get(key).filter(|v| v.is_finite()) {
                let s = sums.entry(e.epoch).or_insert((0.0, 0));
                s.0 += v;
                s.1 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(epoch, (sum, n))| (epoch as f64, sum / n as f64))
        .collect()
}

/// The cells' validation loss and headline metric per epoch, one line per cell, overlaid.
fn curves(dir: &Path, cols: &[String], cmp: &Comparison) -> String {
    let metric = cmp.metric();
    let mut out = String::new();
    for (key, heading, axis) in [
        (
            "val_loss".to_string(),
            "Validation loss".to_string(),
            YAxis::Linear,
        ),
        (
            format!("val_{metric}"),
            format!("Validation {metric}"),
            YAxis::Fraction,
        ),
    ] {
        let lines: Vec<Line> = cmp
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| Line {
                name: label(cols, c),
                points: cell_curve(dir, c, &key),
                color: PALETTE[i % PALETTE.len()],
            })
            .filter(|l| !l.points.is_empty())
            .collect();
        let series = lines.len();
        let y_desc = key.replacen('_', " ", 1);
        match charts::line_chart(&format!("{heading} per epoch"), &y_desc, &lines, axis) {
            Ok(Some(svg)) => {
                out += &format!(
                    "<div class=\"overlay\" data-series=\"{series}\">{}</div>\n",
                    html::figure(&svg, "")
                );
            }
            Ok(None) => {}
            Err(e) => out += &note(&e.to_string()),
        }
    }
    if out.is_empty() {
        return note(
            "No cell's run folder has validation scores in its metrics.jsonl (runs with \
             --val-split 0 have none, and cells whose runs are gone can't be drawn).",
        );
    }
    let seeds = if cmp.seeded() {
        " Each line is the mean over the cell's seeds."
    } else {
        ""
    };
    out + &format!(
        "<p class=\"caption\">One line per cell, from its runs' metrics.jsonl.{seeds}</p>"
    )
}

/// `"lr=0.01, strategy=fine-tune"` for a cell.
fn label(cols: &[String], cell: &CellRow) -> String {
    let parts: Vec<String> = cols
        .iter()
        .filter(|k| cell.settings.contains_key(k.as_str()))
        .map(|k| format!("{k}={}", setting(cell, k)))
        .collect();
    if parts.is_empty() {
        "(base)".to_string()
    } else {
        parts.join(", ")
    }
}

fn table(dir: &Path, cols: &[String], cmp: &Comparison, best: Option<usize>) -> String {
    if cmp.cells.is_empty() {
        return note("compare.json has no cells.");
    }
    let seeded = cmp.seeded();
    let score_header = if seeded {
        format!("test {} (mean ± sd)", cmp.metric())
    } else {
        format!("test {}", cmp.metric())
    };
    let mut headers: Vec<(&str, bool)> = cols.iter().map(|c| (c.as_str(), true)).collect();
    headers.push((score_header.as_str(), false));
    if seeded {
        headers.push(("per seed", false));
    }
    headers.extend([("final loss", false), ("seconds", false), ("report", true)]);
    let rows: Vec<(Vec<Cell>, bool)> = cmp
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut cells: Vec<Cell> = cols.iter().map(|k| Cell::Left(setting(c, k))).collect();
            let acc = c.test.unwrap_or(f64::NAN);
            if seeded {
                cells.push(Cell::Num(format!(
                    "{} ± {}",
                    pct(acc),
                    pct(c.sd.unwrap_or(f64::NAN))
                )));
                let seeds: Vec<String> =
                    c.tests.iter().map(|a| pct(a.unwrap_or(f64::NAN))).collect();
                cells.push(Cell::Num(seeds.join(", ")));
            } else {
                cells.push(Cell::Num(pct(acc)));
            }
            cells.push(Cell::Num(num(c.final_loss.unwrap_or(f64::NAN), 4)));
            cells.push(Cell::Num(num(c.seconds.unwrap_or(f64::NAN), 1)));
            let link = c
                .run_dirs
                .first()
                .and_then(|d| run_report_link(dir, d))
                .map_or_else(String::new, |h| format!("<a href=\"{h}\">run report</a>"));
            cells.push(Cell::Html(link));
            (cells, Some(i) == best)
        })
        .collect();
    let mut html = html::table(&headers, &rows);
    if best.is_some() {
        html += "\n<p class=\"caption\">The best mean is in bold. Links open the first seed's run \
                 report (write it with <code>graft report RUN</code>).</p>";
    }
    html
}

fn chart(cols: &[String], cmp: &Comparison) -> String {
    if cmp.cells.is_empty() {
        return note("No cells to chart.");
    }
    let cats: Vec<String> = cmp.cells.iter().map(|c| label(cols, c)).collect();
    let values: Vec<f64> = cmp
        .cells
        .iter()
        .map(|c| c.test.unwrap_or(f64::NAN))
        .collect();
    let seeded = cmp.seeded();
    let errors: Vec<f64> = cmp
        .cells
        .iter()
        .map(|c| if seeded { c.sd.unwrap_or(0.0) } else { 0.0 })
        .collect();
    let start = charts::bar_axis_start(&values, &errors);
    let metric = cmp.metric();
    let bars = [Bars {
        name: format!("test {metric}"),
        values,
        errors: seeded.then_some(errors),
        color: BLUE_C,
    }];
    let (title, bars_note) = if seeded {
        (
            format!("Test {metric} (mean ± sd over seeds)"),
            "Error bars: ± one standard deviation over seeds.",
        )
    } else {
        (
            format!("Test {metric} (one seed)"),
            "One seed per setting: no spread to show (add --seeds 3 for error bars).",
        )
    };
    match charts::bar_chart(&title, &cats, &bars, &format!("test {metric}"), start, None) {
        Ok(svg) => {
            let caption = if start > 0.0 {
                format!(
                    "{bars_note} The axis starts at {} so that differences are visible.",
                    pct(start)
                )
            } else {
                bars_note.to_string()
            };
            html::figure(&svg, &caption)
        }
        Err(e) => note(&e.to_string()),
    }
}
