//! `graft compare` and `graft cv`: experiments made of several fits.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use graft::config::Strategy;
use graft::run::compare::{compare, parse_axis, preset_grid};
use graft::run::cv::cross_validate;
use serde_json::json;

use crate::fit_args::FitArgs;

#[derive(Args, Debug)]
// Each finished run of a compare or cv is reused and each unfinished one resumed on its own, so
// `fit`'s --resume is not theirs: hidden from their help (and refused if given anyway).
#[command(mut_arg("resume", |a| a.hide(true)))]
pub struct CompareArgs {
    /// A grid axis KEY=V1,V2 over any fit setting (repeatable); `model=NAME@WEIGHTS` pairs a
    /// backbone with its weights.
    #[arg(long = "grid", value_name = "KEY=V1,V2")]
    grid: Vec<String>,
    /// A named grid: `transfer` (linear-probe vs fine-tune vs scratch at equal budget) or
    /// `seeds` (the seeds' losses × optimizers).
    #[arg(long)]
    preset: Option<String>,
    /// Runs per cell, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Rank the cells by test accuracy ("which pretrained model should I fine-tune?": use
    /// `--grid model=A@wA.pth,B@wB.pth`; implies `--strategy linear-probe` unless given).
    #[arg(long)]
    ranking: bool,
    #[command(flatten)]
    fit: FitArgs,
}

#[derive(Args, Debug)]
#[command(mut_arg("resume", |a| a.hide(true)))]
pub struct CvArgs {
    /// Number of stratified folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    #[command(flatten)]
    fit: FitArgs,
}

fn out_dir(cfg_out: &Option<PathBuf>, kind: &str) -> PathBuf {
    cfg_out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("{kind}-{secs}"))
    })
}

pub fn run_compare(a: CompareArgs) -> Result<()> {
    let resolved = a.fit.resolve_with_given()?;
    let mut base = resolved.cfg;
    // A ranking of backbones compares fast linear probes on cached features unless told
    // otherwise.
    if a.ranking && !a.fit.strategy_given() {
        base.strategy = Strategy::LinearProbe;
    }
    let mut axes = match &a.preset {
        Some(p) => preset_grid(p, &base.task)?,
        None => Vec::new(),
    };
    for g in &a.grid {
        axes.push(parse_axis(g)?);
    }
    let dir = out_dir(&base.out, "compare");
    let opts = a.fit.experiment_options()?;
    let result = compare(&base, &resolved.given, &axes, a.seeds, &dir, &opts)?;
    // Each cell's own report first, so the comparison page can link to them.
    for cell in &result.cells {
        for run in &cell.run_dirs {
            crate::report_for(run);
        }
    }
    let report = crate::report_for(&dir);
    if a.fit.json_flag() {
        println!(
            "{}",
            json!({"cells": result.cells, "dir": dir, "report": report})
        );
    } else {
        print!("{}", result.table(a.ranking));
        println!("results in {}", dir.display());
        if let Some(report) = report {
            println!("report {}", report.display());
        }
    }
    Ok(())
}

pub fn run_cv(a: CvArgs) -> Result<()> {
    let cfg = a.fit.resolve()?;
    let dir = out_dir(&cfg.out, "cv");
    let opts = a.fit.experiment_options()?;
    let r = cross_validate(&cfg, a.folds, &dir, &opts)?;
    for run in &r.run_dirs {
        crate::report_for(run);
    }
    let report = crate::report_for(&dir);
    if a.fit.json_flag() {
        println!(
            "{}",
            json!({"folds": r.folds, "mean": r.mean, "sd": r.sd, "dir": dir, "report": report})
        );
    } else {
        for (i, acc) in r.folds.iter().enumerate() {
            println!("fold {}: {acc:.4}", i + 1);
        }
        if r.folds.len() >= 2 {
            println!(
                "mean {:.4} ± {:.4} (sd over {} folds)",
                r.mean,
                r.sd,
                r.folds.len()
            );
        } else {
            // One fold has no spread to show.
            println!("mean {:.4} (one fold)", r.mean);
        }
        if let Some(report) = report {
            println!("report {}", report.display());
        }
    }
    Ok(())
}
