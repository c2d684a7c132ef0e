//! The settings of a run: one struct shared by the CLI flags, the TOML config file and the
//! `config.toml` saved in every run folder. Strings here are parsed and validated into typed
//! choices by [`FitConfig::plan`] before anything runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::{LossKind, OptimizerConfig, OptimizerKind, Schedule};

/// Every setting of `graft fit` (flags override the file, the file overrides these defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    /// Backbone name from the zoo (`graft models`).
    pub model: String,
    /// Pretrained weights: a .pth/.safetensors path, or `none` for random init.
    pub weights: String,
    /// Dataset spec: `cifar10:DIR`, `cifar100:DIR`, `idx:DIR`, `fashion-mnist`, `folder:DIR`.
    pub data: String,
    /// Output classes (default: the dataset's).
    pub num_classes: Option<usize>,
    /// `linear-probe`, `fine-tune`, `partial:K` or `scratch`.
    pub strategy: String,
    /// BatchNorm policy while training: `train` (batch statistics, running stats updated) or
    /// `frozen` (pretrained statistics used and kept).
    pub bn: String,
    /// Momentum of the BatchNorm running statistics while training (`--bn train`). Default 0.1
    /// (PyTorch's): the pretrained value of TensorFlow-born weights (0.01 for EfficientNet-Lite)
    /// is meant for long schedules and leaves the statistics stale after a short fine-tune.
    pub bn_momentum: f64,
    /// Learning-rate multiplier for the backbone (the head uses `lr`).
    pub backbone_lr_mult: f64,
    /// `ce`, `focal` or `mse`.
    pub loss: String,
    /// `none`, `auto` (inverse frequency) or `w1,w2,...`.
    pub class_weights: String,
    pub label_smoothing: f64,
    pub focal_gamma: f64,
    /// L2 penalty as `weight_decay` in PyTorch's optimizers (decoupled for AdamW).
    pub weight_decay: f64,
    /// `gd`, `sgd`, `adam` or `adamw`.
    pub optimizer: String,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub betas: [f64; 2],
    pub eps: f64,
    /// `constant`, `step:EVERY:GAMMA` or `cosine`.
    pub schedule: String,
    pub warmup_epochs: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Square input size (default: the model's pretrained size).
    pub image_size: Option<usize>,
    /// How evaluation images are brought to size: `shorter-crop`, `exact` or `none`.
    pub resize: String,
    /// `crop,flip`, `crop`, `flip` or `none` (training split only).
    pub augment: String,
    /// `shuffle` or `balanced` (class-balanced resampling).
    pub sampler: String,
    /// Fraction of the training split held out for validation (stratified).
    pub val_split: f64,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub seed: u64,
    /// Run folder (default `runs/<model>-<strategy>-<time>`).
    pub out: Option<PathBuf>,
    /// Feature cache folder (default `$GRAFT_CACHE_DIR` or `~/.cache/graft`).
    pub cache_dir: Option<PathBuf>,
    /// `cpu` (flex) or `cuda` (needs the `cuda` feature).
    pub device: String,
    /// Stop when the validation loss has not improved for this many epochs.
    pub early_stopping: Option<usize>,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            model: "resnet18".into(),
            weights: "none".into(),
            data: String::new(),
            num_classes: None,
            strategy: "fine-tune".into(),
            bn: "train".into(),
            bn_momentum: 0.1,
            backbone_lr_mult: 1.0,
            loss: "ce".into(),
            class_weights: "none".into(),
            label_smoothing: 0.0,
            focal_gamma: 2.0,
            weight_decay: 0.0,
            optimizer: "adam".into(),
            lr: 1e-3,
            momentum: 0.9,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: "constant".into(),
            warmup_epochs: 0,
            epochs: 5,
            batch_size: 64,
            image_size: None,
            resize: "shorter-crop".into(),
            augment: "crop,flip".into(),
            sampler: "shuffle".into(),
            val_split: 0.1,
            limit_train: None,
            limit_test: None,
            seed: 0,
            out: None,
            cache_dir: None,
            device: "cpu".into(),
            early_stopping: None,
        }
    }
}

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Frozen backbone, cached features, linear head.
    LinearProbe,
    /// Every layer trains.
    FineTune,
    /// The last K stages and the head train.
    Partial(usize),
    /// Same network, random init: the baseline that measures the transfer gain.
    Scratch,
}

impl Strategy {
    /// Parses `linear-probe`, `fine-tune`, `partial:K`, `scratch`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear-probe" => Ok(Self::LinearProbe),
            "fine-tune" => Ok(Self::FineTune),
            "scratch" => Ok(Self::Scratch),
            _ => match s.strip_prefix("partial:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Self::Partial(k)),
                _ => Err(Error::invalid(format!(
                    "unknown strategy `{s}` (use linear-probe, fine-tune, partial:K with K >= 1, or scratch)"
                ))),
            },
        }
    }
}

/// Class weighting of the loss.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    None,
    /// Inverse class frequency on the training split.
    Auto,
    Given(Vec<f32>),
}

/// Which augmentations the training split gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AugmentChoice {
    pub crop: bool,
    pub flip: bool,
}

/// A validated [`FitConfig`]: every choice parsed into its type.
#[derive(Debug, Clone)]
pub struct Plan {
    pub strategy: Strategy,
    pub bn_frozen: bool,
    pub loss: LossKind,
    pub class_weights: ClassWeights,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub augment: AugmentChoice,
    pub balanced: bool,
}

impl FitConfig {
    /// Reads a TOML config file (unknown keys are errors, naming the file).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
    }

    /// The config as TOML (what `config.toml` in a run folder holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and checks every choice; nothing runs before this succeeds.
    pub fn plan(&self) -> Result<Plan> {
        let strategy = Strategy::parse(&self.strategy)?;
        let bn_frozen = match self.bn.as_str() {
            "train" => false,
            "frozen" => true,
            other => {
                return Err(Error::invalid(format!(
                    "--bn must be train or frozen, got `{other}`"
                )));
            }
        };
        let loss = LossKind::parse(&self.loss, self.label_smoothing, self.focal_gamma)?;
        let class_weights = match self.class_weights.as_str() {
            "none" | "" => ClassWeights::None,
            "auto" => ClassWeights::Auto,
            list => ClassWeights::Given(
                list.split(',')
                    .map(|w| {
                        w.trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|w| w.is_finite() && *w >= 0.0)
                            .ok_or_else(|| {
                                Error::invalid(format!(
                                    "--class-weights: `{w}` is not a non-negative number"
                                ))
                            })
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let kind = OptimizerKind::parse(&self.optimizer)?;
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "--{name} must be positive, got {v}"
                )))
            }
        };
        positive("lr", self.lr)?;
        positive("eps", self.eps)?;
        if !(self.bn_momentum.is_finite() && (0.0..=1.0).contains(&self.bn_momentum)) {
            return Err(Error::invalid(format!(
                "--bn-momentum must be in [0, 1], got {}",
                self.bn_momentum
            )));
        }
        if !(self.backbone_lr_mult.is_finite() && self.backbone_lr_mult >= 0.0) {
            return Err(Error::invalid("--backbone-lr-mult must be >= 0"));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::invalid(
                "--epochs and --batch-size must be at least 1",
            ));
        }
        if let Some(p) = self.early_stopping {
            if p == 0 {
                return Err(Error::invalid(
                    "--early-stopping PATIENCE must be at least 1",
                ));
            }
            if self.val_split <= 0.0 {
                return Err(Error::invalid(
                    "--early-stopping watches the validation loss: it needs --val-split > 0",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(Error::invalid(format!(
                "--val-split must be in [0, 1), got {}",
                self.val_split
            )));
        }
        if !matches!(self.resize.as_str(), "shorter-crop" | "exact" | "none") {
            return Err(Error::invalid(format!(
                "--resize must be shorter-crop, exact or none, got `{}`",
                self.resize
            )));
        }
        let mut augment = AugmentChoice::default();
        for part in self.augment.split(',').map(str::trim) {
            match part {
                "crop" => augment.crop = true,
                "flip" => augment.flip = true,
                "none" | "" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "--augment: unknown `{other}` (use crop,flip or none)"
                    )));
                }
            }
        }
        let balanced = match self.sampler.as_str() {
            "shuffle" => false,
            "balanced" => true,
            other => {
                return Err(Error::invalid(format!(
                    "--sampler must be shuffle or balanced, got `{other}`"
                )));
            }
        };
        Ok(Plan {
            strategy,
            bn_frozen,
            loss,
            class_weights,
            optimizer: OptimizerConfig {
                kind,
                momentum: if kind == OptimizerKind::Adam || kind == OptimizerKind::AdamW {
                    0.0
                } else {
                    self.momentum
                },
                nesterov: self.nesterov,
                betas: (self.betas[0], self.betas[1]),
                eps: self.eps,
                weight_decay: self.weight_decay,
            },
            schedule: Schedule::parse(&self.schedule)?,
            augment,
            balanced,
        })
    }
}
