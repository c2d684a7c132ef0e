//! Weight files: one [`load_weights`] that sniffs the format from the bytes and hands back every
//! tensor as f32, plus [`save_safetensors`] for writing graft's own checkpoints.
//!
//! Readers live in submodules: `safetensors` (via the `safetensors` crate), `pth` (PyTorch zip
//! and legacy containers) and `pickle` (the restricted unpickler `pth` uses). Nothing here ever
//! executes code from a file: pickles are interpreted against an allow-list, never run.

mod files;
pub mod hub;
mod pickle;
mod pth;
mod safetensors;
mod tensors;

pub use files::{
    load_pretrained, load_weights, parse_weights, safetensors_bytes, save_safetensors,
};
pub use tensors::{
    DType, Format, NamedTensors, RawTensor, TensorList, TensorMap, bf16_to_f32, f16_to_f32,
};
