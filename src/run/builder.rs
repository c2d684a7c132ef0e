//! The end of a [`FitConfigBuilder`]: `build()` resolves settings written in code exactly as
//! `graft fit` resolves its flags ([`resolve_settings`]: the task inferred unless given, its
//! defaults on every setting not given) and checks them, so a config built in code is one
//! `graft fit` would have run.

use super::settings::resolve_settings;
use crate::config::{FitConfig, FitConfigBuilder};
use crate::error::{Error, Result};
use crate::task::{TaskFn, with_task};
use crate::train::{Task, check};

impl FitConfigBuilder {
    /// The finished settings: the task inferred from `data` and `weights` unless
    /// [`task`](FitConfigBuilder::task) was given, that task's defaults applied to every setting
    /// not given (text classification: AdamW at 5e-5, ...), then every check `graft fit` makes
    /// before it opens anything (ranges, combinations, the model's name, the task's own rules).
    /// The data itself is opened (and pretrained weights fetched) by the fit
    /// ([`crate::run::fit`]).
    pub fn build(self) -> Result<FitConfig> {
        if self
            .flags
            .data
            .as_deref()
            .is_none_or(|d| d.trim().is_empty())
        {
            return Err(Error::invalid(
                "no dataset: give one with .data(SPEC) (e.g. folder:DIR, cifar10:DIR, csv:FILE, \
                 seg:DIR)",
            ));
        }
        let cfg = resolve_settings(None, &self.flags)?.cfg;
        struct Check<'a>(&'a FitConfig);
        impl TaskFn for Check<'_> {
            type Output = ();
            fn call<T: Task>(self) -> Result<()> {
                check::<T>(self.0)
            }
        }
        with_task(&cfg.task, Check(&cfg))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{FitConfig, Strategy};
    use crate::optim::OptimizerKind;

    #[test]
    fn typed_settings_build_a_checked_config() {
        let b = FitConfig::builder()
            .data("folder:/somewhere")
            .model("resnet_tiny")
            .strategy(Strategy::Partial(2))
            .optimizer(OptimizerKind::Sgd)
            .lr(0.01)
            .epochs(2)
            .image_size(32)
            .out("runs/x");
        assert!(b.given().contains(&"optimizer") && !b.given().contains(&"momentum"));
        let cfg = b.build().unwrap();
        assert_eq!(cfg.task, "image-classification");
        assert_eq!(cfg.strategy, Strategy::Partial(2));
        assert_eq!((cfg.epochs, cfg.lr, cfg.image_size), (2, 0.01, Some(32)));
        assert_eq!(cfg.out, Some(PathBuf::from("runs/x")));
        // What was not given keeps graft's defaults.
        assert_eq!(cfg.batch_size, FitConfig::default().batch_size);
    }

    #[test]
    fn build_checks_like_graft_fit() {
        let err = FitConfig::builder().epochs(1).build().unwrap_err();
        assert!(err.to_string().contains(".data("), "{err}");
        let err = FitConfig::builder()
            .data("folder:/x")
            .lr(-1.0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("--lr must be positive"), "{err}");
        let err = FitConfig::builder()
            .data("folder:/x")
            .model("no-such-model")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no-such-model"), "{err}");
        // The task comes from the data: a csv file is text, whose checks want a model folder.
        let err = FitConfig::builder().data("csv:/x.csv").build().unwrap_err();
        assert!(err.to_string().contains("text classification"), "{err}");
    }
}
