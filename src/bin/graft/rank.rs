//! `graft rank`: which backbone to fine-tune, from the candidates' frozen features alone.

use anyhow::Result;
use clap::Args;
use graft::run::rank::{agreement, parse_candidates, rank, save};
use graft::transferability::Estimator;
use serde_json::json;

use crate::fit_args::FitArgs;

#[derive(Args, Debug)]
#[command(mut_arg("resume", |a| a.hide(true)))]
pub struct RankArgs {
    /// The candidates: MODEL@WEIGHTS,MODEL@WEIGHTS,... (MODEL@none: random weights).
    #[arg(long, value_name = "M@W,M@W,...")]
    models: String,
    /// Transferability score(s), comma-separated, the first one ranking: logme, knn (leave-one-out
    /// 20-NN accuracy, on at most 10,000 samples), hscore, leep, nce (these two need the file's ImageNet head), or all.
    #[arg(long, default_value = "logme")]
    metric: String,
    /// A `graft compare --ranking` folder over the same candidates: print Kendall's τ between
    /// each metric and the test accuracies of its trained probes.
    #[arg(long, value_name = "COMPARE_DIR")]
    against: Option<std::path::PathBuf>,
    #[command(flatten)]
    fit: FitArgs,
}

pub fn run(a: RankArgs) -> Result<()> {
    let resolved = a.fit.resolve_with_given()?;
    let base = resolved.cfg;
    let metrics: Vec<Estimator> = if a.metric == "all" {
        Estimator::ALL.to_vec()
    } else {
        a.metric
            .split(',')
            .map(|m| m.trim().parse())
            .collect::<graft::Result<_>>()?
    };
    let candidates = parse_candidates(&a.models)?;
    let json_out = a.fit.json_flag();
    let quiet = a.fit.options().quiet;
    let mut ranking = rank(&base, &candidates, &metrics, quiet)?;
    if let Some(dir) = &a.against {
        ranking.agreement = Some(agreement(&ranking, dir)?);
    }
    let dir = base.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::path::PathBuf::from("runs").join(format!("rank-{secs}"))
    });
    save(&dir, &ranking)?;
    let report = crate::report_for(&dir);
    if !quiet && let Some(p) = &report {
        eprintln!("report {}", p.display());
    }
    if json_out {
        println!(
            "{}",
            json!({
                "data": ranking.data,
                "metric": ranking.metric,
                "candidates": ranking.candidates,
                "recommended": ranking.recommended,
                "agreement": ranking.agreement,
                "report": report,
            })
        );
        return Ok(());
    }
    let names: Vec<String> = metrics.iter().map(ToString::to_string).collect();
    print!("{:<24} {:<36}", "model", "weights");
    for n in &names {
        print!(" {n:>10}");
    }
    println!(" {:>9}", "seconds");
    for c in &ranking.candidates {
        let weights = std::path::Path::new(&c.weights)
            .file_name()
            .map_or(c.weights.clone(), |f| f.to_string_lossy().into_owned());
        print!("{:<24} {:<36}", c.model, weights);
        for n in &names {
            match c.scores.get(n).copied().flatten() {
                Some(v) => print!(" {v:>10.4}"),
                None => print!(" {:>10}", "n/a"),
            }
        }
        println!(" {:>9.1}", c.seconds);
    }
    if let Some(ag) = &ranking.agreement {
        print!("Kendall's tau vs the probes in {}:", ag.against);
        for n in &names {
            let tau = ag.kendall_tau.get(n).copied().flatten();
            let over = ag.candidates.get(n).copied().unwrap_or(0);
            print!(
                " {n} {} (n={over})",
                tau.map_or("n/a".to_string(), |t| format!("{t:.2}"))
            );
        }
        println!();
    }
    match &ranking.recommended {
        Some(r) => println!("recommended (highest {}): {r}", ranking.metric),
        None => println!("no candidate has a {} score", ranking.metric),
    }
    Ok(())
}
