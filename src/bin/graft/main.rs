//! The `graft` command line: parse arguments, build the library's objects, run one command.
//! All the work happens in the library; this binary only turns flags into calls and results
//! into text.

mod bench;
mod embed;
mod experiments;
mod explain;
mod fit_args;
mod inspect;
mod predict;
mod rank;
mod weights;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Transfer learning in Rust: pretrained backbones, fine-tuning, honest evaluation.
#[derive(Parser)]
#[command(name = "graft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a dataset from a pretrained backbone (or from scratch), evaluate it and
    /// save the run.
    Fit(fit_args::FitArgs),
    /// Evaluate a finished run: accuracy, per-class precision/recall/F1, confusion matrix.
    Eval {
        /// The run folder written by `graft fit`.
        #[arg(long)]
        run: PathBuf,
        /// Evaluate on this dataset's test split instead of the run's (written to
        /// RUN/eval-<spec>.json; the run's own eval.json and report stay as they are).
        #[arg(long)]
        data: Option<String>,
        /// Print the evaluation as JSON.
        #[arg(long)]
        json: bool,
        /// Where to run the model: cpu | vulkan | wgpu | cuda [default: the run's own device].
        #[arg(long)]
        device: Option<graft::tensor::DeviceKind>,
    },
    /// Classify images (or texts) with a pretrained model or a fine-tuned run, or write masks
    /// and colour overlays of images with a segmentation run.
    Predict(predict::PredictArgs),
    /// Heat maps of what an image classifier looked at (Grad-CAM, HiResCAM, Grad-CAM++,
    /// EigenCAM, Score-CAM), as overlay PNGs or JSON, with a faithfulness score.
    Explain(explain::ExplainArgs),
    /// Sentence embeddings from a text model folder (as sentence-transformers' encode).
    Embed(embed::EmbedArgs),
    /// Describe a weights file (tensors, dtypes, shapes, matching model) or a dataset spec.
    Inspect {
        /// A .pth / .safetensors file, a text model folder, or a dataset spec (cifar10:DIR,
        /// idx:DIR, fashion-mnist, folder:DIR, csv:FILE, textfolder:DIR).
        target: String,
        /// Print every tensor, not only a summary.
        #[arg(long)]
        all: bool,
    },
    /// List the model zoo with each model's preset.
    Models,
    /// List the published weights graft downloads by name (`--weights imagenet` or an id),
    /// and which are cached; `--fetch` downloads some now.
    Weights(weights::WeightsArgs),
    /// List the tasks graft fine-tunes for (the `--task` values).
    Tasks,
    /// Run a grid of fits (e.g. strategies, losses × optimizers, backbones) and tabulate them.
    Compare(experiments::CompareArgs),
    /// Rank candidate backbones for a dataset from their frozen features (LogME, k-NN,
    /// H-score, LEEP, NCE), without training any.
    Rank(rank::RankArgs),
    /// Stratified k-fold cross-validation of a fit.
    Cv(experiments::CvArgs),
    /// Write the HTML report of a run, comparison or cross-validation folder.
    Report {
        /// A run, compare or cv folder.
        dir: PathBuf,
    },
    /// Measure speed with the same cases and JSON fields as the PyTorch reference script.
    Bench(bench::BenchArgs),
}

fn main() {
    // Before any other thread exists: glibc's malloc tuned for tensor buffers.
    graft::tune_allocator();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Fit(args) => fit_args::run(args),
        Command::Eval {
            run,
            data,
            json,
            device,
        } => eval(run, data, device, json),
        Command::Predict(args) => predict::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Inspect { target, all } => inspect::run(&target, all),
        Command::Bench(args) => bench::run(args),
        Command::Compare(args) => experiments::run_compare(args),
        Command::Rank(args) => rank::run(args),
        Command::Cv(args) => experiments::run_cv(args),
        Command::Report { dir } => graft::report::write_report(&dir)
            .map(|p| println!("{}", p.display()))
            .map_err(Into::into),
        Command::Weights(args) => weights::run(args),
        Command::Models => {
            models();
            Ok(())
        }
        Command::Tasks => {
            for (name, summary) in graft::task::TASKS {
                println!("{name:<24} {summary}");
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Writes the HTML report of a finished run/compare/cv folder; a failure is a warning, never
/// the run's failure.
pub fn report_for(dir: &std::path::Path) -> Option<PathBuf> {
    match graft::report::write_report(dir) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: no report for {}: {e}", dir.display());
            None
        }
    }
}

fn eval(
    run: PathBuf,
    data: Option<String>,
    device: Option<graft::tensor::DeviceKind>,
    json: bool,
) -> Result<()> {
    let evaluated = graft::run::evaluate(&run, data.as_deref(), device, json)?;
    if json {
        println!("{}", serde_json::to_string(&evaluated.json)?);
    } else {
        print!("{}", evaluated.table);
        println!("written to {}", evaluated.written.display());
    }
    Ok(())
}

fn models() {
    println!(
        "{:<26} {:>5} {:>8} {:<6} {:<26} summary",
        "name", "size", "features", "head", "mean / std"
    );
    for p in graft::model::ZOO {
        println!(
            "{:<26} {:>5} {:>8} {:<6} {:<26} {}",
            p.name,
            p.input_size,
            p.arch.feature_dim(),
            p.head_name,
            format!("{:.3?} / {:.3?}", p.mean[0], p.std[0]),
            p.summary
        );
    }
}
