//! `graft fit` flags: each one also settable in the TOML file given by `--config`; a flag given
//! on the command line wins over the file, the file over the defaults.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use graft::config::FitConfig;
use graft::train::fit::{FitOptions, fit};

#[derive(Args, Debug, Default)]
pub struct FitArgs {
    /// TOML file with any of the settings below (keys as the flags, with `_` for `-`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint (its config.toml is used;
    /// --epochs may extend it).
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Print one JSON line with the results at the end.
    #[arg(long)]
    json: bool,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,

    /// Backbone from the zoo (`graft models`) [default: resnet18].
    #[arg(long)]
    model: Option<String>,
    /// Pretrained weights (.pth zip or legacy, .safetensors) or `none` [default: none].
    #[arg(long)]
    weights: Option<String>,
    /// Dataset: cifar10:DIR, cifar100:DIR, idx:DIR, fashion-mnist, folder:DIR.
    #[arg(long)]
    data: Option<String>,
    /// Output classes [default: the dataset's].
    #[arg(long)]
    num_classes: Option<usize>,
    /// linear-probe | fine-tune | partial:K | scratch [default: fine-tune].
    #[arg(long)]
    strategy: Option<String>,
    /// BatchNorm while training: train | frozen [default: train].
    #[arg(long)]
    bn: Option<String>,
    /// Momentum of the BatchNorm running statistics while training [default: 0.1].
    #[arg(long)]
    bn_momentum: Option<f64>,
    /// Learning-rate multiplier of the backbone (discriminative rates) [default: 1].
    #[arg(long)]
    backbone_lr_mult: Option<f64>,
    /// ce | focal | mse [default: ce].
    #[arg(long)]
    loss: Option<String>,
    /// none | auto | w1,w2,... [default: none].
    #[arg(long)]
    class_weights: Option<String>,
    /// Label smoothing of the cross-entropy [default: 0].
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Focusing parameter of the focal loss [default: 2].
    #[arg(long)]
    focal_gamma: Option<f64>,
    /// L2 penalty (PyTorch's weight_decay; decoupled for adamw) [default: 0].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// gd | sgd | adam | adamw [default: adam].
    #[arg(long)]
    optimizer: Option<String>,
    /// Learning rate [default: 0.001].
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f64>,
    /// Nesterov momentum (SGD) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    nesterov: Option<bool>,
    /// Adam betas as B1,B2 [default: 0.9,0.999].
    #[arg(long, value_delimiter = ',', num_args = 2)]
    betas: Option<Vec<f64>>,
    /// Adam epsilon [default: 1e-8].
    #[arg(long)]
    eps: Option<f64>,
    /// constant | step:EVERY:GAMMA | cosine [default: constant].
    #[arg(long)]
    schedule: Option<String>,
    /// Linear warm-up epochs [default: 0].
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// [default: 5]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 64]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Square input size [default: the model's pretrained size].
    #[arg(long)]
    image_size: Option<usize>,
    /// Evaluation resize: shorter-crop | exact | none [default: shorter-crop].
    #[arg(long)]
    resize: Option<String>,
    /// Training augmentation: crop,flip | crop | flip | none [default: crop,flip].
    #[arg(long)]
    augment: Option<String>,
    /// shuffle | balanced (class-balanced resampling) [default: shuffle].
    #[arg(long)]
    sampler: Option<String>,
    /// Validation fraction of the training split [default: 0.1].
    #[arg(long)]
    val_split: Option<f64>,
    /// Use a stratified subset of N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use a stratified subset of N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder [default: runs/MODEL-STRATEGY-TIME].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Feature cache folder [default: $GRAFT_CACHE_DIR or ~/.cache/graft].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// cpu | cuda [default: cpu].
    #[arg(long)]
    device: Option<String>,
    /// Stop after PATIENCE epochs without a lower validation loss.
    #[arg(long, value_name = "PATIENCE")]
    early_stopping: Option<usize>,
}

macro_rules! apply {
    ($cfg:ident, $args:ident, $($field:ident),* $(,)?) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl FitArgs {
    /// Defaults ← config file ← flags.
    pub fn resolve(&self) -> Result<FitConfig> {
        let mut cfg = match (&self.resume, &self.config) {
            (Some(run), _) => FitConfig::from_toml_file(&run.join("config.toml"))
                .with_context(|| format!("cannot resume {}", run.display()))?,
            (None, Some(path)) => FitConfig::from_toml_file(path)?,
            (None, None) => FitConfig::default(),
        };
        if self.resume.is_some() {
            // A resumed run keeps its settings; only the length may change.
            if let Some(e) = self.epochs {
                cfg.epochs = e;
            }
            return Ok(cfg);
        }
        apply!(
            cfg,
            self,
            model,
            weights,
            data,
            strategy,
            bn,
            bn_momentum,
            backbone_lr_mult,
            loss,
            class_weights,
            label_smoothing,
            focal_gamma,
            weight_decay,
            optimizer,
            lr,
            momentum,
            nesterov,
            eps,
            schedule,
            warmup_epochs,
            epochs,
            batch_size,
            resize,
            augment,
            sampler,
            val_split,
            seed,
            device
        );
        if let Some(b) = &self.betas {
            cfg.betas = [b[0], b[1]];
        }
        for (dst, src) in [
            (&mut cfg.num_classes, self.num_classes),
            (&mut cfg.image_size, self.image_size),
            (&mut cfg.limit_train, self.limit_train),
            (&mut cfg.limit_test, self.limit_test),
            (&mut cfg.early_stopping, self.early_stopping),
        ] {
            if src.is_some() {
                *dst = src;
            }
        }
        if self.out.is_some() {
            cfg.out = self.out.clone();
        }
        if self.cache_dir.is_some() {
            cfg.cache_dir = self.cache_dir.clone();
        }
        Ok(cfg)
    }
}

impl FitArgs {
    pub fn json_flag(&self) -> bool {
        self.json
    }
    pub fn quiet_flag(&self) -> bool {
        self.quiet
    }
    pub fn strategy_given(&self) -> bool {
        self.strategy.is_some()
    }
}

pub fn run(args: FitArgs) -> Result<()> {
    let cfg = args.resolve()?;
    let opts = FitOptions {
        quiet: args.quiet,
        resume: args.resume.is_some(),
    };
    let summary = fit(&cfg, &opts)?;
    crate::report_for(&summary.run_dir);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("test_accuracy {:.4}", summary.test_accuracy);
    }
    Ok(())
}
