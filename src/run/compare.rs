//! `graft compare`: a grid of fits sharing base settings, each cell run for several seeds, into
//! one table of the task's headline test metric. Re-run into the same folder, a comparison
//! continues where it stopped: a cell finished with the same settings is reused, an unfinished
//! one resumed, and one made with other settings is an error (or, with `--overwrite`, run
//! again); frozen-backbone cells reuse cached features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cv::mean_sd;
use crate::config::FitConfig;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::task::{TaskFn, headline_metric, with_task};
use crate::train::run_dir::{Prior, prior_run};
use crate::train::{FitOptions, Task, check};

/// One axis of the grid: a `FitConfig` key (`-` or `_`) and its values.
pub type Axis = (String, Vec<String>);

/// Parses `KEY=V1,V2,...`.
pub fn parse_axis(s: &str) -> Result<Axis> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(format!("--grid expects KEY=V1,V2, got `{s}`")))?;
    let values: Vec<String> = v
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    if values.is_empty() {
        return Err(Error::invalid(format!("--grid {k}: no values")));
    }
    Ok((k.trim().replace('-', "_"), values))
}

/// The named grids for task `task`: `transfer` (the transfer gain: the task's frozen,
/// fine-tune and scratch strategies) and `seeds` (the seeds' losses × optimizers).
pub fn preset_grid(name: &str, task: &str) -> Result<Vec<Axis>> {
    let axis = |k: &str, v: &[&str]| (k.to_string(), v.iter().map(|s| s.to_string()).collect());
    match name {
        "transfer" => Ok(vec![axis(
            "strategy",
            crate::task::transfer_strategies(task)?,
        )]),
        "seeds" => Ok(vec![
            axis("loss", &["ce", "mse", "focal"]),
            axis("optimizer", &["gd", "sgd", "adam"]),
        ]),
        other => Err(Error::invalid(format!(
            "unknown compare preset `{other}` (transfer, seeds)"
        ))),
    }
}

/// One cell of the comparison (`compare.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The cell's grid settings: key → value.
    pub settings: BTreeMap<String, String>,
    /// The test metric compared (the task's first metric).
    #[serde(default = "accuracy")]
    pub metric: String,
    /// Its mean over seeds.
    #[serde(alias = "test_accuracy")]
    pub test: f64,
    /// The sample standard deviation of the metric over seeds (0 with one seed).
    pub sd: f64,
    /// Its value per seed.
    #[serde(alias = "accuracies")]
    pub tests: Vec<f64>,
    /// The final training loss, averaged over seeds.
    pub final_loss: f64,
    /// Wall-clock seconds per run, averaged over seeds.
    pub seconds: f64,
    /// The run folder of each seed (`cell-NN-seed-S`).
    pub run_dirs: Vec<PathBuf>,
}

fn accuracy() -> String {
    "accuracy".into()
}

/// The whole comparison (`compare.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The grid: each setting varied and its values.
    pub grid: BTreeMap<String, Vec<String>>,
    /// Every combination of the grid's values, in grid order.
    pub cells: Vec<Cell>,
}

/// A cell's settings with its pretrained weights resolved (fetched if need be), checked for
/// its task before anything runs.
fn check_settings(cfg: &FitConfig, quiet: bool) -> Result<FitConfig> {
    struct Check<'a>(&'a FitConfig, bool);
    impl TaskFn for Check<'_> {
        type Output = FitConfig;
        fn call<T: Task>(self) -> Result<FitConfig> {
            let cfg = crate::train::resolve_pretrained::<T>(self.0, self.1)?;
            check::<T>(&cfg)?;
            Ok(cfg)
        }
    }
    with_task(&cfg.task, Check(cfg, quiet))
}

/// Every combination of the axes, in order.
fn combinations(axes: &[Axis]) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for (k, values) in axes {
        out = out
            .into_iter()
            .flat_map(|m| {
                values.iter().map(move |v| {
                    let mut m = m.clone();
                    m.insert(k.clone(), v.clone());
                    m
                })
            })
            .collect();
    }
    out
}

/// Runs the grid into `dir/cell-NN-seed-S`, skipping finished runs, and writes `compare.json`.
pub fn compare(
    base: &FitConfig,
    given: &std::collections::BTreeSet<String>,
    axes: &[Axis],
    seeds: usize,
    dir: &Path,
    opts: &FitOptions,
) -> Result<Comparison> {
    if axes.is_empty() {
        return Err(Error::invalid(
            "compare needs at least one --grid KEY=V1,V2 (or --preset)",
        ));
    }
    let seeds = seeds.max(1);
    let mut cells = Vec::new();
    let combos = combinations(axes);
    // Validate every cell before running any: a typo fails in a second, not after an hour.
    let mut configs = Vec::new();
    for settings in &combos {
        let mut cfg = base.clone();
        for (k, v) in settings {
            cfg = cfg.with_setting(k, v)?;
        }
        // The cell's own task defaults (a linear-probe cell of a text grid trains at the
        // probe's rate), where neither the user nor the grid set a value.
        let mut fixed = given.clone();
        fixed.extend(settings.keys().cloned());
        let cfg = super::with_task_defaults(cfg, &fixed)?;
        configs.push(check_settings(&cfg, opts.quiet)?);
    }
    // Every seed's run folder is checked before anything runs: a folder holding a run with
    // other settings fails now, not after an hour.
    let mut plans = Vec::new();
    for (i, cfg) in configs.iter().enumerate() {
        let mut runs = Vec::new();
        for s in 0..seeds {
            let out = dir.join(format!("cell-{:02}-seed-{s}", i + 1));
            let run_cfg = FitConfig {
                seed: cfg.seed + s as u64,
                out: Some(out.clone()),
                ..cfg.clone()
            };
            let prior = prior_run(&out, &run_cfg, opts.overwrite)?;
            runs.push((run_cfg, prior));
        }
        plans.push(runs);
    }
    for (i, (settings, runs)) in combos.iter().zip(plans).enumerate() {
        let metric = headline_metric(&runs[0].0.task)?;
        let mut scores = Vec::new();
        let mut losses = Vec::new();
        let mut seconds = 0.0;
        let mut run_dirs = Vec::new();
        for (s, (run_cfg, prior)) in runs.into_iter().enumerate() {
            let out = run_cfg.out.clone().unwrap_or_default();
            let summary = match prior {
                Prior::Finished(done) => done,
                Prior::Unfinished | Prior::Empty => {
                    if !opts.quiet {
                        let desc: Vec<String> =
                            settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        eprintln!(
                            "cell {}/{} seed {s}: {}",
                            i + 1,
                            combos.len(),
                            desc.join(" ")
                        );
                    }
                    let run_opts = FitOptions {
                        resume: matches!(prior, Prior::Unfinished),
                        ..opts.clone()
                    };
                    super::fit(&run_cfg, &run_opts)?
                }
            };
            let score = summary.score(&format!("test_{metric}")).ok_or_else(|| {
                Error::file(
                    out.join("summary.json"),
                    "no test score in this run's summary (rerun with --overwrite)",
                )
            })?;
            scores.push(score);
            losses.push(summary.train_loss);
            seconds += summary.seconds;
            run_dirs.push(out);
        }
        let (mean, sd) = mean_sd(&scores);
        cells.push(Cell {
            settings: settings.clone(),
            metric: metric.to_string(),
            test: mean,
            sd,
            tests: scores,
            final_loss: mean_sd(&losses).0,
            seconds: seconds / seeds as f64,
            run_dirs,
        });
    }
    let result = Comparison {
        grid: axes.iter().cloned().collect(),
        cells,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    write_atomic(&dir.join("compare.json"), json.as_bytes())?;
    Ok(result)
}

impl Comparison {
    /// The table as aligned text (cells in grid order, or best first with `ranked`); each
    /// score with its "± sd" over seeds only when the comparison ran two seeds or more.
    pub fn table(&self, ranked: bool) -> String {
        let keys: Vec<&String> = self.grid.keys().collect();
        let mut cells: Vec<&Cell> = self.cells.iter().collect();
        if ranked {
            cells.sort_by(|a, b| b.test.total_cmp(&a.test));
        }
        let width = |k: &String| {
            cells
                .iter()
                .map(|c| c.settings.get(k).map_or(0, String::len))
                .max()
                .unwrap_or(0)
                .max(k.len())
        };
        let mut s = String::new();
        if ranked {
            s += "rank ";
        }
        for k in &keys {
            s += &format!("{:<w$}  ", k, w = width(k));
        }
        let metric = self.cells.first().map_or("accuracy", |c| c.metric.as_str());
        // A spread over one seed is no spread: "± sd" only when some cell ran two or more.
        let seeded = self.cells.iter().any(|c| c.tests.len() >= 2);
        let header = if seeded {
            format!("test {metric} (± sd)")
        } else {
            format!("test {metric}")
        };
        let w = header.chars().count().max(17);
        s += &format!("{header:<w$} final loss   seconds\n");
        for (r, c) in cells.iter().enumerate() {
            if ranked {
                s += &format!("{:>4} ", r + 1);
            }
            for k in &keys {
                s += &format!(
                    "{:<w$}  ",
                    c.settings.get(*k).map_or("", String::as_str),
                    w = width(k)
                );
            }
            let score = if seeded {
                format!("{:.4} ± {:.4}", c.test, c.sd)
            } else {
                format!("{:.4}", c.test)
            };
            s += &format!("{score:<w$} {:>10.4}   {:>7.1}\n", c.final_loss, c.seconds);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(lr: &str, tests: &[f64]) -> Cell {
        let (test, sd) = mean_sd(tests);
        Cell {
            settings: [("lr".to_string(), lr.to_string())].into_iter().collect(),
            metric: "accuracy".into(),
            test,
            sd,
            tests: tests.to_vec(),
            final_loss: 0.25,
            seconds: 3.0,
            run_dirs: Vec::new(),
        }
    }

    fn comparison(cells: Vec<Cell>) -> Comparison {
        Comparison {
            grid: [("lr".to_string(), vec!["0.1".into(), "0.01".into()])]
                .into_iter()
                .collect(),
            cells,
        }
    }

    #[test]
    fn the_text_table_shows_a_spread_only_over_two_seeds_or_more() {
        let one = comparison(vec![cell("0.1", &[0.91]), cell("0.01", &[0.87])]).table(false);
        assert!(!one.contains('±'), "{one}");
        assert!(one.contains("0.9100") && one.contains("0.8700"), "{one}");
        let two =
            comparison(vec![cell("0.1", &[0.9, 0.92]), cell("0.01", &[0.87, 0.87])]).table(true);
        assert!(two.contains("0.9100 ± 0.0141"), "{two}");
        assert!(two.contains("(± sd)"), "{two}");
        // The columns line up: each row's loss ends where the header's "final loss" does.
        let lines: Vec<&str> = two.lines().collect();
        let end = lines[0].find("final loss").unwrap() + "final loss".len();
        for row in &lines[1..] {
            let chars: Vec<char> = row.chars().collect();
            let header_chars = lines[0][..end].chars().count();
            let loss: String = chars[header_chars - 6..header_chars].iter().collect();
            assert_eq!(loss, "0.2500", "{two}");
        }
    }
}
