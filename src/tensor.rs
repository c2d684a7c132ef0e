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
///
/// graft's own kernels (convolutions, GEMMs, attention, the optimizer step) run on `cpu`; on
/// the GPU devices every op is burn's (see `kernels/ops.rs`, which checks the device per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend with graft's kernels.
    Cpu,
    /// burn's wgpu backend pinned to Vulkan (graft built with `--features vulkan`: SPIR-V
    /// shaders, or `--features wgpu`: WGSL): a GPU through its Vulkan driver, or Mesa's lavapipe.
    Vulkan,
    /// burn's wgpu backend on whichever graphics API the machine offers (Vulkan, Metal, DX12).
    Wgpu,
    /// burn's CUDA backend (graft built with `--features cuda`).
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "vulkan" => Ok(Self::Vulkan),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid(format!(
                "unknown device `{other}` (cpu, vulkan, wgpu or cuda)"
            ))),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Vulkan => "vulkan",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

crate::text_setting!(DeviceKind);

impl DeviceKind {
    /// The compute device: an error when graft was built without its backend, or when the
    /// machine has no such device (no Vulkan driver, say) — found here, once per process, not
    /// as a panic in the middle of the first operation.
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Vulkan | Self::Wgpu => gpu::wgpu_device(self),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => Err(Error::invalid(
                "--device cuda needs graft built with `--features cuda` (see the README's GPU section)",
            )),
        }
    }
}

#[cfg(feature = "wgpu")]
mod gpu {
    use std::sync::OnceLock;

    use burn::tensor::Device;
    use burn::tensor::wgpu::WgpuBackend;

    use super::DeviceKind;
    use crate::error::{Error, Result};

    /// The device, initialised once: burn's wgpu runtime refuses a second initialisation of
    /// the same adapter, and a process (a test binary, `cv`) asks for its device many times.
    pub fn wgpu_device(kind: DeviceKind) -> Result<Device> {
        static VULKAN: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
        static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
        let (cell, api) = match kind {
            DeviceKind::Vulkan => (&VULKAN, WgpuBackend::Vulkan),
            _ => (&WGPU, WgpuBackend::Auto),
        };
        cell.get_or_init(|| {
            Device::wgpu_options()
                .graphics_api(api)
                .init()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| {
            Error::invalid(format!(
                "--device {kind}: no usable device ({e}). A GPU needs its Vulkan driver and \
                 `libvulkan1`; on a machine without one, Mesa's lavapipe (Debian \
                 `mesa-vulkan-drivers`) runs the same code on the CPU"
            ))
        })
    }
}

#[cfg(not(feature = "wgpu"))]
mod gpu {
    use burn::tensor::Device;

    use super::DeviceKind;
    use crate::error::{Error, Result};

    pub fn wgpu_device(kind: DeviceKind) -> Result<Device> {
        Err(Error::invalid(format!(
            "--device {kind} needs graft built with `--features vulkan` or `--features wgpu` \
             (see the README's GPU section)"
        )))
    }
}
