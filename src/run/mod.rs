//! What the commands run — `graft fit`, `eval`, `cv`, `compare` — each dispatched to the task a
//! run's settings name (`crate::task::with_task`). Above the task seam: these call the generic
//! driver (`crate::train::fit_on`) for whichever task.

mod builder;
pub mod compare;
pub mod cv;
pub mod rank;
mod settings;

pub use settings::{Resolved, resolve_settings, with_task_defaults};

use std::path::Path;

use crate::config::FitConfig;
use crate::error::Result;
use crate::task::{TaskFn, with_task};
use crate::tensor::DeviceKind;
use crate::train::{
    Evaluated, FitOptions, FitSummary, Task, check, fit_on, open, resolve_pretrained,
};

/// Runs `graft fit`: checks the settings, opens the task's data, fits.
pub fn fit(cfg: &FitConfig, opts: &FitOptions) -> Result<FitSummary> {
    struct Fit<'a>(&'a FitConfig, &'a FitOptions);
    impl TaskFn for Fit<'_> {
        type Output = FitSummary;
        fn call<T: Task>(self) -> Result<FitSummary> {
            // Mistyped settings and data are reported before any weights are downloaded.
            if T::IMAGENET_WEIGHTS {
                check::<T>(self.0)?;
            }
            let data = open::<T>(self.0)?;
            let cfg = &resolve_pretrained::<T>(self.0, self.1.quiet)?;
            check::<T>(cfg)?;
            fit_on::<T>(cfg, self.1, data)
        }
    }
    with_task(&cfg.task, Fit(cfg, opts))
}

/// Runs `graft eval`: a finished run on its test split, or on `data`'s test split.
pub fn evaluate(
    run_dir: &Path,
    data: Option<&str>,
    device: Option<DeviceKind>,
    quiet: bool,
) -> Result<Evaluated> {
    struct Eval<'a>(&'a Path, Option<&'a str>, Option<DeviceKind>, bool);
    impl TaskFn for Eval<'_> {
        type Output = Evaluated;
        fn call<T: Task>(self) -> Result<Evaluated> {
            T::evaluate_run(self.0, self.1, self.2, self.3)
        }
    }
    let cfg = crate::train::run_config(run_dir)?;
    with_task(&cfg.task, Eval(run_dir, data, device, quiet))
}
