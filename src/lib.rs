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
//! - [`report`] (the HTML reports of runs, comparisons and cross-validations);
//! - [`fuzz`] (every parser of untrusted bytes behind one function, for fuzzing).
//!
//! The `graft` binary is a thin CLI over this library.

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
pub mod progress;
pub mod render;
pub mod report;
pub mod run;
pub mod task;
pub mod tensor;
pub mod train;
pub mod transferability;
pub mod weights;

pub use error::{Error, Result};
