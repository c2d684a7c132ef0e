//! The report of a `graft rank` folder (`rank.json`): every candidate's transferability scores
//! in one table, the recommended backbone marked, and what each score means.

use std::path::{Path, PathBuf};

use super::files::{read_json, write_page};
use crate::error::Result;
use crate::render::html::{self, Cell, Page, note};
use crate::run::rank::Ranking;

/// Writes `dir/report.html` from `dir/rank.json` and returns its path.
pub fn write_rank_report(dir: &Path) -> Result<PathBuf> {
    let ranking: Ranking = read_json(&dir.join("rank.json"))?;
    write_page(dir, &render(dir, &ranking))
}

fn short(weights: &str) -> String {
    Path::new(weights)
        .file_name()
        .map_or(weights.to_string(), |f| f.to_string_lossy().into_owned())
}

fn render(dir: &Path, r: &Ranking) -> String {
    let mut page = Page::new(
        &format!("Backbone ranking — {}", r.data),
        &format!("Folder {}", dir.display()),
    );
    let best = r.recommended.clone().unwrap_or_else(|| "none".into());
    page.cards(&[
        (
            "recommended",
            best.rsplit_once('@')
                .map_or(best.clone(), |(m, w)| format!("{m}@{}", short(w))),
        ),
        ("ranked by", r.metric.clone()),
        ("candidates", r.candidates.len().to_string()),
        (
            "samples scored",
            r.candidates
                .first()
                .map_or("0".into(), |c| c.samples.to_string()),
        ),
    ]);
    let mut headers: Vec<(&str, bool)> = vec![("model", true), ("weights", true)];
    headers.extend(r.metrics.iter().map(|m| (m.as_str(), false)));
    headers.extend([("seconds", false), ("features", true)]);
    let rows: Vec<(Vec<Cell>, bool)> = r
        .candidates
        .iter()
        .map(|c| {
            let mut cells = vec![Cell::Left(c.model.clone()), Cell::Left(short(&c.weights))];
            for m in &r.metrics {
                let v = c.scores.get(m).copied().flatten();
                cells.push(Cell::Num(v.map_or("n/a".into(), |v| html::num(v, 4))));
            }
            cells.push(Cell::Num(html::num(c.seconds, 1)));
            cells.push(Cell::Left(c.feature_cache.clone()));
            let is_best = r.recommended.as_deref() == Some(&format!("{}@{}", c.model, c.weights));
            (cells, is_best)
        })
        .collect();
    let mut content = html::table(&headers, &rows);
    content += &note(
        "Higher is better for every score. logme: LogME, the log evidence of a Bayesian linear \
         model from the features to the labels (You et al. 2021); knn: leave-one-out 20-NN \
         accuracy on cosine similarity; hscore: tr(cov(f)⁺ cov(E[f|y])); leep / nce: from the \
         weights file's own ImageNet head (n/a for random weights). Scores compare candidates on \
         the same data, not across datasets; confirm the top candidates with graft compare \
         --ranking (a trained probe each).",
    );
    page.section("ranking", "Scores", &content);
    if let Some(ag) = &r.agreement {
        let rows: Vec<(Vec<Cell>, bool)> = r
            .metrics
            .iter()
            .map(|m| {
                let tau = ag.kendall_tau.get(m).copied().flatten();
                let n = ag.candidates.get(m).copied().unwrap_or(0);
                (
                    vec![
                        Cell::Left(m.clone()),
                        Cell::Num(tau.map_or("n/a".into(), |t| html::num(t, 2))),
                        Cell::Num(n.to_string()),
                    ],
                    m == &r.metric,
                )
            })
            .collect();
        let mut content = html::table(
            &[
                ("metric", true),
                ("Kendall's τ", false),
                ("candidates", false),
            ],
            &rows,
        );
        content += &note(&format!(
            "Agreement of each score's order with the test accuracies of the linear probes in {} \
             (graft compare --ranking): 1 is the same order, 0 none, -1 reversed.",
            ag.against
        ));
        page.section("agreement", "Agreement with trained probes", &content);
    }
    page.finish()
}
