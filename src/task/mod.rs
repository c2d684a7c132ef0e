//! The tasks graft fine-tunes for, and their registry.
//!
//! A task is a type implementing [`Task`] in its own folder here; the registry below is the
//! one place that names them all. Everything generic (`crate::train`, `crate::run`,
//! `crate::report`) reaches a task through [`with_task`], by the `task` setting.

pub mod classification;
pub mod image_classification;
pub mod segmentation;
pub mod text_classification;

use crate::error::{Error, Result};
use crate::train::Task;

/// Something to do with a task chosen at run time: `with_task(name, f)` calls `f.call::<T>()`
/// with the task registered under `name`.
pub trait TaskFn {
    /// What the call returns.
    type Output;
    /// Runs with `T`, the task chosen.
    fn call<T: Task>(self) -> Result<Self::Output>;
}

/// Defines [`with_task`] and [`TASKS`] from the list of task types.
macro_rules! registry {
    ($($task:ty),* $(,)?) => {
        /// Calls `f` with the task whose name is `name`.
        pub fn with_task<F: TaskFn>(name: &str, f: F) -> Result<F::Output> {
            $(
                if name == <$task as Task>::NAME {
                    return f.call::<$task>();
                }
            )*
            Err(Error::invalid(format!(
                "unknown task `{name}` (known: {})",
                TASKS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )))
        }

        /// Every task: (name, one-line summary).
        pub const TASKS: &[(&str, &str)] = &[$((<$task as Task>::NAME, <$task as Task>::SUMMARY)),*];

        /// The task `cfg` points to when it names none: the first that recognizes its data or
        /// weights, else the first registered.
        pub fn infer_task(cfg: &crate::config::FitConfig) -> &'static str {
            $(
                if <$task as Task>::recognizes(cfg) {
                    return <$task as Task>::NAME;
                }
            )*
            TASKS[0].0
        }
    };
}

// The registry: one entry per task.
registry!(
    image_classification::ImageClassification,
    text_classification::TextClassification,
    segmentation::Segmentation,
);

/// The test metric that sums up a run of task `name` (its first metric: `accuracy`).
pub fn headline_metric(name: &str) -> Result<&'static str> {
    struct Headline;
    impl TaskFn for Headline {
        type Output = &'static str;
        fn call<T: Task>(self) -> Result<&'static str> {
            Ok(T::METRICS.first().map_or("loss", |m| m.name))
        }
    }
    with_task(name, Headline)
}

/// The strategies of task `name` that measure the transfer gain (`compare --preset transfer`).
pub fn transfer_strategies(name: &str) -> Result<&'static [&'static str]> {
    struct Strategies;
    impl TaskFn for Strategies {
        type Output = &'static [&'static str];
        fn call<T: Task>(self) -> Result<Self::Output> {
            Ok(T::TRANSFER_STRATEGIES)
        }
    }
    with_task(name, Strategies)
}

/// The defaults of task `name` (see [`Task::defaults`]) for `cfg`.
pub fn task_defaults(
    name: &str,
    cfg: &crate::config::FitConfig,
) -> Result<Vec<(&'static str, String)>> {
    struct Defaults<'a>(&'a crate::config::FitConfig);
    impl TaskFn for Defaults<'_> {
        type Output = Vec<(&'static str, String)>;
        fn call<T: Task>(self) -> Result<Self::Output> {
            Ok(T::defaults(self.0))
        }
    }
    with_task(name, Defaults(cfg))
}
