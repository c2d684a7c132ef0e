//! Which kernels run and in which memory order networks train: two process-wide settings,
//! recorded in every run's `config.toml` and `summary.json` (`kernels`, `train_layout`). The
//! environment variables `GRAFT_KERNELS=burn|graft` and `GRAFT_TRAIN_LAYOUT=nchw|channels-last`
//! override them, for comparisons and bug hunts without editing configs.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};

/// The `kernels` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    /// graft's CPU kernels where they apply (the default).
    Graft,
    /// burn's stock ops everywhere.
    Burn,
}

impl std::str::FromStr for KernelChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "graft" => Ok(Self::Graft),
            "burn" => Ok(Self::Burn),
            other => Err(Error::invalid(format!(
                "kernels must be graft or burn, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Graft => "graft",
            Self::Burn => "burn",
        })
    }
}

crate::text_setting!(KernelChoice);

/// The `train_layout` setting: the memory order of activations while a network trains (frozen
/// backbones always run channels-last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainLayout {
    /// NHWC: graft's channels-last kernels (the default).
    ChannelsLast,
    /// Row-major NCHW: graft's NCHW kernels, to compare the two.
    Nchw,
}

impl std::str::FromStr for TrainLayout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "channels-last" | "nhwc" => Ok(Self::ChannelsLast),
            "nchw" => Ok(Self::Nchw),
            _ => Err(Error::invalid(format!(
                "train layout must be channels-last or nchw, got `{s}`"
            ))),
        }
    }
}

impl std::fmt::Display for TrainLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ChannelsLast => "channels-last",
            Self::Nchw => "nchw",
        })
    }
}

crate::text_setting!(TrainLayout);

/// 0 = not decided yet (the environment or the default decides on first use), 1 = on, 2 = off.
static ENABLED: AtomicU8 = AtomicU8::new(0);
/// The same for channels-last training.
static CHANNELS_LAST: AtomicU8 = AtomicU8::new(0);

/// The value of environment variable `name` parsed as `T`, if set (a value that does not parse
/// is ignored with a warning rather than silently).
fn env_override<T: std::str::FromStr<Err = Error>>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("warning: ignoring {name}={value}: {e}");
            None
        }
    }
}

/// Applies a run's settings (the environment variables win) and returns the effective ones,
/// which the run records.
pub fn configure(kernels: KernelChoice, layout: TrainLayout) -> (KernelChoice, TrainLayout) {
    let kernels = env_override("GRAFT_KERNELS").unwrap_or(kernels);
    let layout = env_override("GRAFT_TRAIN_LAYOUT").unwrap_or(layout);
    set_enabled(kernels == KernelChoice::Graft);
    set_flag(&CHANNELS_LAST, layout == TrainLayout::ChannelsLast);
    (kernels, layout)
}

fn set_flag(flag: &AtomicU8, on: bool) {
    flag.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Reads a flag, deciding it on first use with `default`.
fn flag(flag: &AtomicU8, default: impl FnOnce() -> bool) -> bool {
    match flag.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = default();
            set_flag(flag, on);
            on
        }
    }
}

/// Whether graft's kernels are used where they apply.
pub fn enabled() -> bool {
    flag(&ENABLED, || {
        env_override("GRAFT_KERNELS").unwrap_or(KernelChoice::Graft) == KernelChoice::Graft
    })
}

/// Turns graft's kernels on or off for the whole process (off = burn's stock ops).
pub fn set_enabled(on: bool) {
    set_flag(&ENABLED, on);
}

/// Whether networks train channels-last.
pub fn train_channels_last() -> bool {
    flag(&CHANNELS_LAST, || {
        env_override("GRAFT_TRAIN_LAYOUT").unwrap_or(TrainLayout::ChannelsLast)
            == TrainLayout::ChannelsLast
    })
}
