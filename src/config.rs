//! The settings of a run, each defined once: its name (the flag `--name`, the TOML key `name`),
//! its type (a typed choice parses itself: see [`crate::choice`]), its default and its help all
//! come from one line of the `settings!` table below. From that table come [`FitConfig`] (what
//! a run is: the TOML file, `config.toml` in every run folder), [`SettingFlags`] (the clap flags,
//! each optional so that a flag given wins over the file and the file over the defaults) and the
//! merge of the two. [`FitConfig::check`] then validates ranges and combinations before anything
//! runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Augment, Resize, Sampler};
use crate::error::{Error, Result};
use crate::kernels::{KernelChoice, TrainLayout};
use crate::linear_model::{ProbeL2, ProbeSolver};
use crate::loss::{ClassWeights, LossChoice};
use crate::model::segmenter::DecoderKind;
use crate::model::text_encoder::Pooling;
use crate::optim::{Betas, OptimizerConfig, OptimizerKind, Schedule, ScheduleUnit};
use crate::tensor::DeviceKind;

/// The widest head graft builds (ImageNet-21k has 21,841 classes).
pub const MAX_CLASSES: usize = 100_000;
/// The largest square input (bounded so that a typo cannot ask for terabytes).
pub const MAX_IMAGE_SIZE: usize = 2048;
/// The largest batch.
pub const MAX_BATCH: usize = 1 << 16;
/// The largest input batch, in bytes of f32 pixels.
const MAX_INPUT_BATCH_BYTES: u64 = 2 << 30;

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
    /// Segmentation: the pretrained backbone stays as it is (BatchNorm statistics included);
    /// the decoder and the head train.
    Frozen,
}

impl std::str::FromStr for Strategy {
    type Err = Error;

    /// Parses `linear-probe`, `fine-tune`, `partial:K`, `scratch`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear-probe" => Ok(Self::LinearProbe),
            "fine-tune" => Ok(Self::FineTune),
            "scratch" => Ok(Self::Scratch),
            "frozen" => Ok(Self::Frozen),
            _ => match s.strip_prefix("partial:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Self::Partial(k)),
                _ => Err(Error::invalid(format!(
                    "unknown strategy `{s}` (use linear-probe, fine-tune, partial:K with K >= 1, \
                     scratch, or for segmentation frozen)"
                ))),
            },
        }
    }
}

impl Strategy {
    /// Whether a backbone parameter of stage `stage` (of `stages`, as `stage_of` numbers them)
    /// trains under this strategy; the new head or decoder always trains.
    pub fn trains_stage(self, stage: usize, stages: usize) -> bool {
        match self {
            Self::LinearProbe | Self::Frozen => false,
            Self::Partial(k) => stage + k >= stages,
            Self::FineTune | Self::Scratch => true,
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LinearProbe => f.write_str("linear-probe"),
            Self::FineTune => f.write_str("fine-tune"),
            Self::Partial(k) => write!(f, "partial:{k}"),
            Self::Scratch => f.write_str("scratch"),
            Self::Frozen => f.write_str("frozen"),
        }
    }
}

crate::text_setting!(Strategy);

/// What BatchNorm does while the network trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnPolicy {
    /// Batch statistics, running statistics updated (in the stages that train).
    Train,
    /// Pretrained statistics used and kept.
    Frozen,
}

impl std::str::FromStr for BnPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Self::Train),
            "frozen" => Ok(Self::Frozen),
            other => Err(Error::invalid(format!(
                "--bn must be train or frozen, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for BnPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Frozen => "frozen",
        })
    }
}

crate::text_setting!(BnPolicy);

/// How a setting's type appears as a flag: `T` for a setting of type `T`, `T` too for an
/// optional `Option<T>` (the flag sets `Some`), and how a given flag value is stored.
pub trait FlagValue {
    /// The type clap parses.
    type Flag: Clone + Send + Sync + 'static;
    /// Stores a flag's value in the setting.
    fn set(&mut self, value: Self::Flag);
    /// The default as shown in `--help` (`None`: no default to show).
    fn default_text(&self) -> Option<String>;
}

macro_rules! plain_flag_values {
    ($($ty:ty),*) => {$(
        impl FlagValue for $ty {
            type Flag = $ty;
            fn set(&mut self, value: $ty) {
                *self = value;
            }
            fn default_text(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

plain_flag_values!(
    String,
    usize,
    u64,
    bool,
    Strategy,
    BnPolicy,
    LossChoice,
    ClassWeights,
    OptimizerKind,
    Betas,
    Schedule,
    ScheduleUnit,
    Resize,
    Augment,
    Sampler,
    ProbeSolver,
    ProbeL2,
    DeviceKind,
    KernelChoice,
    TrainLayout,
    Pooling,
    DecoderKind
);

impl FlagValue for f64 {
    type Flag = f64;
    fn set(&mut self, value: f64) {
        *self = value;
    }
    /// Rust's shortest round-trip form (`1e-8`, `0.001`), not `0.00000001`.
    fn default_text(&self) -> Option<String> {
        Some(format!("{self:?}"))
    }
}

impl<T: Clone + Send + Sync + std::fmt::Debug + 'static> FlagValue for Option<T> {
    type Flag = T;
    fn set(&mut self, value: T) {
        *self = Some(value);
    }
    fn default_text(&self) -> Option<String> {
        None
    }
}

/// A value a [`FitConfigBuilder`] method accepts for a setting of type `T` (for an optional
/// setting, of the type inside the `Option`): a `T` itself, and for text and paths their
/// borrowed forms (`&str`, `&Path`, ...).
pub trait IntoSetting<T> {
    /// The setting's value.
    fn into_setting(self) -> T;
}

impl<T> IntoSetting<T> for T {
    fn into_setting(self) -> T {
        self
    }
}

impl IntoSetting<String> for &str {
    fn into_setting(self) -> String {
        self.to_string()
    }
}

impl IntoSetting<String> for &String {
    fn into_setting(self) -> String {
        self.clone()
    }
}

impl IntoSetting<PathBuf> for &Path {
    fn into_setting(self) -> PathBuf {
        self.to_path_buf()
    }
}

impl IntoSetting<PathBuf> for &PathBuf {
    fn into_setting(self) -> PathBuf {
        self.clone()
    }
}

impl IntoSetting<PathBuf> for &str {
    fn into_setting(self) -> PathBuf {
        PathBuf::from(self)
    }
}

impl IntoSetting<PathBuf> for String {
    fn into_setting(self) -> PathBuf {
        PathBuf::from(self)
    }
}

/// A [`FitConfig`] written in code: [`FitConfig::builder`], then one typed method per setting
/// (named as the setting and its TOML key, documented as it: `.epochs(3)`,
/// `.strategy(Strategy::FineTune)`, `.out("runs/x")`), then `build()` (in [`crate::run`]),
/// which resolves them as `graft fit` resolves its flags (the task's defaults for the settings
/// not given) and checks them all. A method called twice keeps the last value.
///
/// ```no_run
/// use graft::config::{FitConfig, Strategy};
/// use graft::optim::OptimizerKind;
///
/// let cfg = FitConfig::builder()
///     .data("folder:my-images")
///     .model("resnet_tiny")
///     .strategy(Strategy::Scratch)
///     .optimizer(OptimizerKind::Adam)
///     .lr(3e-3)
///     .epochs(3)
///     .out("runs/example")
///     .build()?;
/// # Ok::<(), graft::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FitConfigBuilder {
    /// The settings given so far, as if given as `graft fit` flags.
    pub(crate) flags: SettingFlags,
}

impl FitConfigBuilder {
    /// The names (TOML keys) of the settings given so far.
    pub fn given(&self) -> Vec<&'static str> {
        self.flags.given()
    }
}

/// The `--help` text of a flag: its documentation and, when it has one, its default.
pub fn flag_help(doc: &str, default: Option<String>) -> String {
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    match default {
        Some(d) if !d.is_empty() => format!("{doc} [default: {d}]"),
        _ => doc,
    }
}

/// Defines [`FitConfig`], its defaults, [`SettingFlags`] and their merge, and the typed methods
/// of [`FitConfigBuilder`] from one table: `/// doc` lines, `name: Type = default,` and optional
/// clap attributes in `#[flag(...)]`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $(#[flag($($flag:tt)*)])?
        $name:ident : $ty:ty = $default:expr,
    )*) => {
        /// Every setting of `graft fit` (flags override the file, the file overrides these
        /// defaults).
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct FitConfig {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for FitConfig {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// The settings as `graft fit` flags (also flattened into `cv` and `compare`): each
        /// optional, so that only the flags given override the config file.
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct SettingFlags {
            $(
                #[arg(
                    long,
                    help = flag_help(concat!($($doc, " ",)*), FlagValue::default_text(&{
                        let d: $ty = $default;
                        d
                    }))
                    $(, $($flag)*)?
                )]
                // The setting's own documentation, for rustdoc only: clap reads literal doc
                // attributes, not this `concat!`, so `--help` stays `flag_help`'s text.
                #[doc = concat!($($doc, "\n",)*)]
                pub $name: Option<<$ty as FlagValue>::Flag>,
            )*
        }

        impl SettingFlags {
            /// Writes every given flag into `cfg`.
            pub fn apply_to(&self, cfg: &mut FitConfig) {
                $( if let Some(v) = &self.$name { cfg.$name.set(v.clone()); } )*
            }

            /// The names (TOML keys) of the settings given as flags.
            pub fn given(&self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $( if self.$name.is_some() { names.push(stringify!($name)); } )*
                names
            }
        }

        impl FitConfigBuilder {
            $(
                $(#[doc = $doc])*
                pub fn $name(
                    mut self,
                    value: impl IntoSetting<<$ty as FlagValue>::Flag>,
                ) -> Self {
                    self.flags.$name = Some(value.into_setting());
                    self
                }
            )*
        }
    };
}

settings! {
    /// The task: what is learned from what (`graft tasks`) [default: from --data and
    /// --weights; image-classification].
    task: String = "image-classification".into(),
    /// Backbone from the zoo (`graft models`); for texts, the model folder given as --weights
    /// decides.
    model: String = "resnet18".into(),
    /// Pretrained weights: imagenet (the model's published ImageNet weights, downloaded once
    /// into the cache and checked; random init for models without any), a published id
    /// (`graft weights` lists them), a .pth / .safetensors file, or none; for texts, a
    /// published text model (all-MiniLM-L6-v2) or a Hugging Face / sentence-transformers
    /// folder.
    weights: String = "imagenet".into(),
    /// Dataset: images (cifar10:DIR, cifar100:DIR, idx:DIR, fashion-mnist, folder:DIR) or texts
    /// (csv:FILE_OR_DIR, textfolder:DIR).
    data: String = String::new(),
    /// Output classes [default: the dataset's].
    num_classes: Option<usize> = None,
    /// Segmentation decoder: fpn | unet (smp's designs).
    decoder: DecoderKind = DecoderKind::Fpn,
    /// linear-probe | fine-tune | partial:K | scratch | frozen (segmentation: the decoder
    /// trains on the pretrained backbone as it is).
    strategy: Strategy = Strategy::FineTune,
    /// Linear probe: lbfgs (logistic regression on standardised features to convergence, L2
    /// chosen on the validation split) or sgd (the head trained by --optimizer for --epochs).
    probe: ProbeSolver = ProbeSolver::Lbfgs,
    /// L2 strength of the lbfgs probe: auto (chosen on the validation split) or a number.
    probe_l2: ProbeL2 = ProbeL2::Auto,
    /// BatchNorm while training: train (batch statistics, running statistics updated) or frozen
    /// (pretrained statistics used and kept).
    bn: BnPolicy = BnPolicy::Train,
    /// Momentum of the BatchNorm running statistics while training (PyTorch convention): the
    /// pretrained value of TensorFlow-born weights (0.01 for EfficientNet-Lite) is meant for long
    /// schedules and leaves the statistics stale after a short fine-tune.
    bn_momentum: f64 = 0.1,
    /// Learning-rate multiplier of the backbone (discriminative rates; the head uses --lr).
    backbone_lr_mult: f64 = 1.0,
    /// ce | focal | mse; for segmentation also dice | jaccard | ce+dice.
    loss: LossChoice = LossChoice::CrossEntropy,
    /// Per-class loss weights: none | auto (inverse frequency) | w1,w2,...
    class_weights: ClassWeights = ClassWeights::None,
    /// Label smoothing of the cross-entropy.
    label_smoothing: f64 = 0.0,
    /// Focusing parameter of the focal loss.
    focal_gamma: f64 = 2.0,
    /// L2 penalty (PyTorch's weight_decay; decoupled for adamw).
    weight_decay: f64 = 0.0,
    /// gd | sgd | adam | adamw.
    optimizer: OptimizerKind = OptimizerKind::Adam,
    /// Learning rate.
    lr: f64 = 1e-3,
    /// SGD momentum.
    momentum: f64 = 0.9,
    /// Nesterov momentum (SGD).
    #[flag(num_args = 0..=1, default_missing_value = "true")]
    nesterov: bool = false,
    /// Adam betas as B1,B2.
    betas: Betas = Betas([0.9, 0.999]),
    /// Adam epsilon.
    eps: f64 = 1e-8,
    /// constant | step:EVERY:GAMMA | cosine | linear (after warm-up).
    schedule: Schedule = Schedule::Constant,
    /// epoch | step: the schedule advances after each epoch (PyTorch's recipes) or after each
    /// optimizer step (transformers').
    schedule_unit: ScheduleUnit = ScheduleUnit::Epoch,
    /// Linear warm-up epochs.
    warmup_epochs: usize = 0,
    /// Linear warm-up over this fraction of all optimizer steps (transformers' warmup_ratio;
    /// needs schedule_unit = step).
    warmup_ratio: f64 = 0.0,
    /// Training epochs.
    epochs: usize = 5,
    /// Samples per batch.
    batch_size: usize = 64,
    /// Square input size [default: the model's pretrained size].
    image_size: Option<usize> = None,
    /// Text: batches of texts of similar lengths (transformers' group_by_length: mega-batches of
    /// 50 batches sorted by length), so little padding is computed [default: true for text].
    #[flag(num_args = 0..=1, default_missing_value = "true")]
    group_by_length: bool = false,
    /// Text: the most tokens a text keeps [default: the model folder's max_seq_length].
    max_length: Option<usize> = None,
    /// Text: how token states become one vector: auto (the model folder's), mean or cls.
    pooling: Pooling = Pooling::Auto,
    /// Evaluation resize: auto (shorter-crop, but an image smaller than the input size is
    /// upscaled whole, its longer side cropped) | shorter-crop (shorter side to size/0.875, centre
    /// crop) | exact (stretch) | none.
    resize: Resize = Resize::Auto,
    /// Training augmentation: crop,flip | crop | flip | none.
    augment: Augment = Augment { crop: true, flip: true },
    /// shuffle | balanced (class-balanced resampling).
    sampler: Sampler = Sampler::Shuffle,
    /// Stratified validation fraction of the training split.
    val_split: f64 = 0.1,
    /// Use a stratified subset of N training samples.
    limit_train: Option<usize> = None,
    /// Use a stratified subset of N test samples.
    limit_test: Option<usize> = None,
    /// Seed of the data order, augmentation and head init.
    seed: u64 = 0,
    /// Run folder [default: runs/MODEL-STRATEGY-TIME].
    out: Option<PathBuf> = None,
    /// Feature cache folder [default: $GRAFT_CACHE_DIR or ~/.cache/graft].
    cache_dir: Option<PathBuf> = None,
    /// cpu | vulkan | wgpu (graft built with --features vulkan) | cuda (--features cuda).
    device: DeviceKind = DeviceKind::Cpu,
    /// Stop after PATIENCE epochs without improvement of --early-stopping-metric.
    #[flag(value_name = "PATIENCE")]
    early_stopping: Option<usize> = None,
    /// The validation metric early stopping watches: val_loss, or val_ and a metric of the task
    /// (val_accuracy).
    early_stopping_metric: String = "val_loss".into(),
    /// CPU kernels: graft (graft's own) or burn (burn's stock ops, for comparisons);
    /// $GRAFT_KERNELS overrides.
    kernels: KernelChoice = KernelChoice::Graft,
    /// Memory order of activations while training: channels-last or nchw (for comparisons);
    /// $GRAFT_TRAIN_LAYOUT overrides.
    train_layout: TrainLayout = TrainLayout::ChannelsLast,
}

impl FitConfig {
    /// A builder of settings in code, with one typed method per setting: see
    /// [`FitConfigBuilder`].
    pub fn builder() -> FitConfigBuilder {
        FitConfigBuilder::default()
    }

    /// Reads a TOML config file (unknown keys are errors, naming the file).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = crate::files::read_text(path)?;
        toml::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
    }

    /// The config as TOML (what `config.toml` in a run folder holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Applies `key = value` to a config through its TOML form, so every key of the config file
    /// is a grid key and unknown keys are rejected by name.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<FitConfig> {
        let cfg = self;
        let mut table: toml::Table = toml::from_str(&cfg.to_toml())
            .map_err(|e| Error::invalid(format!("config round trip: {e}")))?;
        // `model=NAME@WEIGHTS` pairs a backbone with its weights file (for rankings).
        if key == "model"
            && let Some((m, w)) = value.split_once('@')
        {
            table.insert("model".into(), toml::Value::String(m.into()));
            table.insert("weights".into(), toml::Value::String(w.into()));
        } else {
            let v = if let Ok(i) = value.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(f) = value.parse::<f64>() {
                toml::Value::Float(f)
            } else if let Ok(b) = value.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(value.into())
            };
            table.insert(key.into(), v);
        }
        let text = toml::to_string(&table).map_err(|e| Error::invalid(e.to_string()))?;
        // An integer given for a float key is fine in TOML terms only as a float.
        let parsed: std::result::Result<FitConfig, _> = toml::from_str(&text);
        match parsed {
            Ok(c) => Ok(c),
            Err(_) if value.parse::<i64>().is_ok() => {
                table.insert(
                    key.into(),
                    toml::Value::Float(value.parse::<f64>().unwrap_or(0.0)),
                );
                let text = toml::to_string(&table).map_err(|e| Error::invalid(e.to_string()))?;
                toml::from_str(&text).map_err(|e| Error::invalid(format!("{key}={value}: {e}")))
            }
            Err(e) => Err(Error::invalid(format!("{key}={value}: {e}"))),
        }
    }

    /// The update rule's hyper-parameters (momentum is SGD's only).
    pub fn optimizer_config(&self) -> OptimizerConfig {
        let adam = matches!(self.optimizer, OptimizerKind::Adam | OptimizerKind::AdamW);
        OptimizerConfig {
            kind: self.optimizer,
            momentum: if adam { 0.0 } else { self.momentum },
            nesterov: self.nesterov,
            betas: (self.betas.0[0], self.betas.0[1]),
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Checks every range and combination; nothing runs before this succeeds. (Each choice was
    /// checked when it was parsed.)
    pub fn check(&self) -> Result<()> {
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
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(format!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if !(self.bn_momentum.is_finite() && (0.0..=1.0).contains(&self.bn_momentum)) {
            return Err(Error::invalid(format!(
                "--bn-momentum must be in [0, 1], got {}",
                self.bn_momentum
            )));
        }
        if !(self.backbone_lr_mult.is_finite() && self.backbone_lr_mult >= 0.0) {
            return Err(Error::invalid("--backbone-lr-mult must be >= 0"));
        }
        if !(self.warmup_ratio.is_finite() && (0.0..1.0).contains(&self.warmup_ratio)) {
            return Err(Error::invalid(format!(
                "--warmup-ratio must be in [0, 1), got {}",
                self.warmup_ratio
            )));
        }
        if self.strategy == Strategy::LinearProbe && self.probe == ProbeSolver::Lbfgs {
            let sgd_only = if self.loss != LossChoice::CrossEntropy {
                Some(format!("--loss {}", self.loss))
            } else if self.label_smoothing > 0.0 {
                Some("--label-smoothing".to_string())
            } else if self.early_stopping.is_some() {
                Some("--early-stopping".to_string())
            } else if self.sampler != Sampler::Shuffle {
                Some(format!(
                    "--sampler {} (--class-weights auto weighs classes in the lbfgs probe)",
                    self.sampler
                ))
            } else {
                None
            };
            if let Some(what) = sgd_only {
                return Err(Error::invalid(format!(
                    "{what} applies to a head trained by epochs: add --probe sgd (the default \
                     linear probe, --probe lbfgs, fits cross-entropy with L2 to convergence)"
                )));
            }
        }
        if self.warmup_ratio > 0.0 && self.schedule_unit == ScheduleUnit::Epoch {
            return Err(Error::invalid(
                "--warmup-ratio counts optimizer steps: add --schedule-unit step (or warm up \
                 whole epochs with --warmup-epochs)",
            ));
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
                return Err(Error::invalid(format!(
                    "--early-stopping watches {}: it needs --val-split > 0",
                    self.early_stopping_metric
                )));
            }
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(Error::invalid(format!(
                "--val-split must be in [0, 1), got {}",
                self.val_split
            )));
        }
        let non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "--{name} must be a number >= 0, got {v}"
                )))
            }
        };
        non_negative("momentum", self.momentum)?;
        non_negative("weight-decay", self.weight_decay)?;
        non_negative("focal-gamma", self.focal_gamma)?;
        if let Some(n) = self.num_classes
            && !(1..=MAX_CLASSES).contains(&n)
        {
            return Err(Error::invalid(format!(
                "--num-classes must be between 1 and {MAX_CLASSES}, got {n}"
            )));
        }
        if self.batch_size > MAX_BATCH {
            return Err(Error::invalid(format!(
                "--batch-size must be at most {MAX_BATCH}, got {}",
                self.batch_size
            )));
        }
        if let Some(size) = self.image_size {
            if !(1..=MAX_IMAGE_SIZE).contains(&size) {
                return Err(Error::invalid(format!(
                    "--image-size must be between 1 and {MAX_IMAGE_SIZE}, got {size}"
                )));
            }
            let batch_bytes = (self.batch_size * 3 * size * size * 4) as u64;
            if batch_bytes > MAX_INPUT_BATCH_BYTES {
                return Err(Error::invalid(format!(
                    "a batch of {} images of {size}x{size} takes {} MiB before the network even \
                     starts (at most {} MiB): lower --batch-size or --image-size",
                    self.batch_size,
                    batch_bytes >> 20,
                    MAX_INPUT_BATCH_BYTES >> 20
                )));
            }
        }
        for (flag, n) in [
            ("limit-train", self.limit_train),
            ("limit-test", self.limit_test),
        ] {
            if n == Some(0) {
                return Err(Error::invalid(format!(
                    "--{flag} 0 leaves no samples: give at least 1, or leave it out"
                )));
            }
        }
        Ok(())
    }
}
