//! graft: transfer learning in Rust.
//!
//! The crate reads as the pipeline it runs, each layer using only the ones above it in this list
//! (`tests/modules.rs` fails on an import circle):
//!
//! - foundations: [`error`], [`files`] (safe reads, atomic writes), [`tensor`], [`choice`]
//!   (typed settings as text), [`progress`] (progress on a terminal and in logs);
//! - [`kernels`] (graft's CPU ops), [`weights`] (safe readers for .pth/.safetensors);
//! - [`model`] (layers, backbones with their stages, heads, the zoo);
//! - [`data`] (datasets, splits, transforms, the loader);
//! - [`loss`], [`metrics`], [`optim`] (PyTorch-exact losses, metrics, update rules);
//! - [`config`] (every setting, defined once);
//! - [`render`] (HTML and SVG building blocks);
//! - [`explain`] (Grad-CAM-family maps on the backbones' stages, their faithfulness, overlays);
//! - [`train`] (the task seam and everything generic over it: run folder, epoch loop,
//!   checkpoints, resume, early stopping);
//! - [`task`] (the tasks — image and text classification — and their registry);
//! - [`run`] (what the commands run: fit, eval, cv, compare, for any task);
//! - [`report`] (the HTML reports of runs, comparisons and cross-validations:
//!   [`report::write_report`] (re)writes the one of any such folder);
//! - [`predict`] (a trained model on new inputs, for any task: [`predict::Predictor`]);
//! - [`fuzz`] (every parser of untrusted bytes behind one function, for fuzzing).
//!
//! The `graft` binary is a thin CLI over this library.
//!
//! # Use graft as a library
//!
//! Settings in code ([`config::FitConfig::builder`]: one typed method per setting of
//! `graft fit`), a fit with a callback after every epoch ([`train::FitOptions::on_epoch`],
//! which may stop the run), the report ([`report::write_report`]) and predictions of the
//! trained run ([`predict::Predictor`]); `examples/fit_and_predict.rs` runs all of it on
//! generated images.
//!
//! ```no_run
//! use graft::config::{FitConfig, Strategy};
//! use graft::predict::Predictor;
//! use graft::tensor::DeviceKind;
//! use graft::train::{Control, FitOptions};
//!
//! graft::tune_allocator(); // glibc's malloc tuned for tensors, before other threads start
//! let cfg = FitConfig::builder()
//!     .data("folder:shapes") // shapes/CLASS/*.png, or shapes/{train,test}/CLASS/*.png
//!     .model("resnet18")
//!     .weights("imagenet") // torchvision's ImageNet weights, downloaded once and checked
//!     .strategy(Strategy::FineTune)
//!     .epochs(5)
//!     .out("runs/shapes")
//!     .build()?; // the task's defaults applied, every setting checked
//! let opts = FitOptions::default().on_epoch(|m| {
//!     println!("epoch {}: val loss {:?}", m.epoch, m.get("val_loss"));
//!     if m.get("val_accuracy") >= Some(0.99) { Control::Stop } else { Control::Continue }
//! });
//! let summary = graft::run::fit(&cfg, &opts)?;
//! println!("test accuracy {:?}", summary.score("test_accuracy"));
//! let report = graft::report::write_report(&summary.run_dir)?;
//! let predictor = Predictor::from_run(&summary.run_dir, DeviceKind::Cpu)?;
//! for p in predictor.predict_images(&["new.png"], 3)? {
//!     println!("{}: {} ({:.1}%)", p.path.display(), p.top[0].label, p.top[0].probability * 100.0);
//! }
//! # let _ = report;
//! # Ok::<(), graft::Error>(())
//! ```

#![warn(missing_docs)]

mod allocator;
pub mod choice;
pub mod config;
pub mod data;
pub mod error;
pub mod explain;
pub mod files;
pub mod fuzz;
pub mod kernels;
pub mod linear_model;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod predict;
pub mod progress;
pub mod render;
pub mod report;
pub mod run;
pub mod task;
pub mod tensor;
pub mod train;
pub mod transferability;
pub mod weights;

pub use allocator::tune_allocator;
pub use error::{Error, Result};
