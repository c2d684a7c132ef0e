//! Small conversions between burn tensors and plain vectors, in one place.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// A float tensor's values, row-major, as `f32` (converting from any float dtype).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // The conversion only fails for non-numeric data, which a float tensor never holds.
    t.into_data().try_into_vec_as::<f32>().unwrap_or_default()
}

/// An integer tensor's values as `i64`.
pub fn to_vec_int<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().try_into_vec_as::<i64>().unwrap_or_default()
}

/// A float tensor from row-major values.
pub fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Class labels as an integer tensor `(n,)`.
pub fn labels(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// The `device` setting: where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend with graft's kernels.
    Cpu,
    /// burn's CUDA backend (graft built with `--features cuda`).
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid(format!(
                "unknown device `{other}` (cpu or cuda)"
            ))),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

crate::text_setting!(DeviceKind);

impl DeviceKind {
    /// The compute device (an error when graft was built without its backend).
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err(Error::invalid(
                "--device cuda needs graft built with `--features cuda`",
            )),
        }
    }
}
