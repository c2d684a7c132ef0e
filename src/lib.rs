//! graft: transfer learning in Rust.
//!
//! The crate reads as the pipeline it runs:
//! [`data`] (datasets, transforms, loader) → [`model`] (backbones, heads, registry) with
//! [`weights`] (safe readers for .pth/.safetensors) → [`train`] (losses, optimizers, fit loop) →
//! [`eval`] (metrics). The `graft` binary is a thin CLI over this library.

pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod report;
pub mod tensor;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
