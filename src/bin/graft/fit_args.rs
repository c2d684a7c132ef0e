//! `graft fit` flags: the settings' flags (`graft::config::SettingFlags`, each also a key of the
//! TOML file given by `--config`) plus what belongs to one invocation. A flag given on the
//! command line wins over the file, the file over the defaults.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use graft::config::{FitConfig, SettingFlags};
use graft::train::FitOptions;

#[derive(Args, Debug, Default)]
pub struct FitArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (its config.toml is used;
    /// --epochs may extend it, --device move it to another device).
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Print one JSON line with the results at the end.
    #[arg(long)]
    json: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Replace a run already in --out (graft's files there are removed first); without it,
    /// an existing run folder is an error.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    settings: SettingFlags,
}

impl FitArgs {
    /// Defaults ← task defaults ← config file ← flags.
    pub fn resolve(&self) -> Result<FitConfig> {
        Ok(self.resolve_with_given()?.cfg)
    }

    /// [`FitArgs::resolve`], with the names of the settings the user gave.
    pub fn resolve_with_given(&self) -> Result<graft::run::Resolved> {
        if let Some(run) = &self.resume {
            let mut cfg = graft::train::run_config(run)
                .with_context(|| format!("cannot resume {}", run.display()))?;
            // A resumed run keeps its settings; only the length may change, and where it runs
            // (a run started on a GPU can go on on the CPU, or the other way round).
            let changed: Vec<String> = self
                .settings
                .given()
                .into_iter()
                .filter(|k| *k != "epochs" && *k != "device")
                .map(|k| format!("--{}", k.replace('_', "-")))
                .collect();
            if !changed.is_empty() {
                bail!(
                    "--resume continues {} with the settings it was started with; only --epochs \
                     and --device may change, but {} was given (start a new run with --out to change settings)",
                    run.display(),
                    changed.join(", ")
                );
            }
            if let Some(e) = self.settings.epochs {
                cfg.epochs = e;
            }
            if let Some(d) = self.settings.device {
                cfg.device = d;
            }
            // The run folder is the one resumed, whatever its config.toml says.
            cfg.out = Some(run.clone());
            return Ok(graft::run::Resolved {
                cfg,
                given: Default::default(),
            });
        }
        Ok(graft::run::resolve_settings(
            self.config.as_deref(),
            &self.settings,
        )?)
    }

    pub fn json_flag(&self) -> bool {
        self.json
    }

    pub fn strategy_given(&self) -> bool {
        self.settings.strategy.is_some()
    }

    /// The options of a `compare` or `cv`: those continue by themselves when run again (each
    /// finished run is reused, each unfinished one resumed), so `--resume` is not theirs.
    pub fn experiment_options(&self) -> Result<FitOptions> {
        if self.resume.is_some() {
            bail!(
                "--resume is for `graft fit`; a compare or cv continues where it stopped when the \
                 same command runs again into the same --out"
            );
        }
        Ok(self.options())
    }

    /// The options of this invocation.
    pub fn options(&self) -> FitOptions {
        FitOptions {
            quiet: self.quiet,
            resume: self.resume.is_some(),
            overwrite: self.overwrite,
            ..FitOptions::default()
        }
    }
}

pub fn run(args: FitArgs) -> Result<()> {
    let cfg = args.resolve()?;
    let summary = graft::run::fit(&cfg, &args.options())?;
    let report = crate::report_for(&summary.run_dir);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let metric = graft::task::headline_metric(&cfg.task)?;
        let value = summary.score(&format!("test_{metric}")).unwrap_or(f64::NAN);
        println!("test_{metric} {value:.4}");
        if let Some(report) = report {
            println!("report {}", report.display());
        }
    }
    Ok(())
}
