//! graft's own CPU kernels, where burn's `flex` backend leaves speed on the table.
//!
//! Today: dense convolution (`conv.rs`: im2col over several images at once + one large GEMM per
//! chunk), depthwise convolution (`depthwise.rs`), max-pool (`pool.rs`) and ReLU6, each with its
//! backward, plugged into burn as backend extensions (`backend.rs`) so that they work with
//! autodiff like any burn op. Layers call [`conv2d`], [`max_pool2d`] and [`relu6`], which pick
//! graft's kernel on the `flex` device and burn's op everywhere else (other backends, grouped
//! convolutions that are not depthwise).
//!
//! The switch back to stock burn, for comparisons and bug hunts: `GRAFT_KERNELS=burn` in the
//! environment, or [`set_enabled`]`(false)`.

mod backend;
pub mod conv;
pub mod depthwise;
pub mod pool;
pub mod transpose;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Tensor, module};

pub use backend::{GraftActivation, GraftConv, GraftPool};

/// 0 = not decided yet (read `GRAFT_KERNELS` on first use), 1 = on, 2 = off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether graft's kernels are used where they apply.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = !matches!(std::env::var("GRAFT_KERNELS").as_deref(), Ok("burn"));
            set_enabled(on);
            on
        }
    }
}

/// Turns graft's kernels on or off for the whole process (off = burn's stock ops).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

fn is_flex<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(
        x.device().as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// `burn::tensor::module::conv2d` with graft's kernels for dense and depthwise convolutions on
/// `flex`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let [_, c_in, _, _] = x.dims();
    let [_, per_group, _, _] = weight.dims();
    // The same contract burn's conv2d checks before running (a model bug, never user input:
    // weight files are shape-checked when loaded).
    assert_eq!(
        c_in,
        per_group * options.groups,
        "conv2d: input has {c_in} channels, the weight expects {per_group} × {} groups",
        options.groups
    );
    // Which convolutions graft's kernels take is decided in one place, `backend::supported`; the
    // rest go back to burn's op from there.
    if !enabled() || !is_flex(&x) {
        return module::conv2d(x, weight, bias, options);
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    let out = match bias {
        Some(bias) => {
            <Dispatch as GraftConv>::graft_conv2d_bias(x, weight, bias.into_dispatch(), options)
        }
        None => <Dispatch as GraftConv>::graft_conv2d(x, weight, options),
    };
    Tensor::from_dispatch(out)
}

/// `burn::tensor::module::max_pool2d` (dilation 1, `ceil_mode` off) with graft's kernel on `flex`:
/// no argmax bookkeeping unless gradients are tracked.
pub fn max_pool2d(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<4> {
    if !enabled() || !is_flex(&x) {
        let options = MaxPoolOptions::new(kernel)
            .with_stride(stride)
            .with_padding(padding);
        return module::max_pool2d(x, options);
    }
    let out = <Dispatch as GraftPool>::graft_max_pool2d(x.into_dispatch(), kernel, stride, padding);
    Tensor::from_dispatch(out)
}

/// ReLU6 (`min(max(x, 0), 6)`), one pass with graft's kernel on `flex`.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !enabled() || !is_flex(&x) {
        return x.clamp(0.0, 6.0);
    }
    Tensor::from_dispatch(<Dispatch as GraftActivation>::graft_relu6(
        x.into_dispatch(),
    ))
}
