//! graft's own CPU kernels, where burn's `flex` backend leaves speed on the table.
//!
//! Today: dense convolution (`conv.rs`: im2col over several images at once + one large GEMM per
//! chunk, NCHW; `channels_last.rs` / `channels_last_train.rs`: NHWC, grouped by valid kernel
//! taps so that padding is never multiplied), depthwise convolution (`depthwise.rs`), max-pool
//! (`pool.rs`), BatchNorm (`batch_norm.rs`), ReLU/ReLU6, each with its backward, and the fused
//! SGD step (`optim.rs`), plugged into burn as backend extensions (`backend.rs`) so that they
//! work with autodiff like any burn op. Layers call [`conv2d`], [`max_pool2d`], [`relu6`], ...,
//! which pick graft's kernel on the `flex` device and burn's op everywhere else (other backends,
//! grouped convolutions that are not depthwise). Networks convert their input to channels-last
//! once ([`to_channels_last`]) and every kernel keeps the layout it is given.
//!
//! The switch back to stock burn, for comparisons and bug hunts, is the `kernels` setting (or
//! `GRAFT_KERNELS=burn`, or [`set_enabled`]`(false)`); `train_layout = "nchw"` (or
//! `GRAFT_TRAIN_LAYOUT=nchw`) keeps training in row-major NCHW (graft's NCHW kernels) instead of
//! channels-last, to compare the two (`settings.rs`).

/// Defines `$name`, which runs the `#[inline(always)]` function `$body` compiled a second time
/// with AVX-512 (or AVX2+FMA) when the CPU has it, so that LLVM vectorises its loops with wide
/// registers; the default build targets baseline x86-64.
macro_rules! wide_simd {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod backend;
pub mod batch_norm;
pub mod channels_last;
pub mod channels_last_train;
pub mod conv;
pub mod depthwise;
pub mod layout;
pub mod optim;
mod pointwise;
pub mod pool;
mod settings;
pub mod transpose;

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Tensor, module};

pub use backend::{
    GraftActivation, GraftAdd, GraftConv, GraftLayout, GraftNorm, GraftOptim, GraftPool,
};
pub use optim::SgdStep;
pub use settings::{
    KernelChoice, TrainLayout, configure, enabled, set_enabled, train_channels_last,
};

/// The activation a convolution can apply to its output in the same pass (inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
}

impl Activation {
    /// The activation of one value; NaN stays NaN, as in PyTorch.
    #[inline(always)]
    pub fn of(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => clamp(v, f32::INFINITY),
            Activation::Relu6 => clamp(v, 6.0),
        }
    }

    /// Applies the activation in place; NaN stays NaN, as in PyTorch.
    #[inline]
    pub fn apply(self, v: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => v.iter_mut().for_each(|v| *v = clamp(*v, f32::INFINITY)),
            Activation::Relu6 => v.iter_mut().for_each(|v| *v = clamp(*v, 6.0)),
        }
    }
}

/// `min(max(v, 0), hi)`, NaN kept (like PyTorch's): written with comparisons, which the
/// compiler turns into vector blends (`f32::clamp` is not vectorised).
#[inline(always)]
#[allow(clippy::manual_clamp)] // on purpose: see above
pub(crate) fn clamp(v: f32, hi: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// `n` zeros, written by all threads: `vec![0.0; n]` zeroes on one core (a `memset` when the
/// allocator reuses memory), which left the other idle for ~7% of a training step.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.iter_mut().for_each(|x| _ = x.write(0.0)));
    // SAFETY: every element of the first `n` was written above.
    unsafe { v.set_len(n) };
    v
}

/// `n` floats, each written once by `fill` (in parallel, `chunk` elements per task): for outputs
/// that an element-wise kernel writes entirely, so that they are not zeroed first (a pass over
/// every activation that [`zeros`] would cost).
///
/// # Safety
/// `fill(first, dst)` must initialise every element of `dst` (the chunk starting at element
/// `first` of the result).
pub(crate) unsafe fn par_fill(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, dst)| fill(i * chunk.max(1), dst));
    // SAFETY: the caller's `fill` initialised every chunk, and the chunks cover 0..n.
    unsafe { v.set_len(n) };
    v
}

/// Initialised floats viewed as possibly-uninitialised ones: for an initialised buffer handed to
/// a kernel that writes into fresh memory (every element, with finished values).
///
/// # Safety
/// Only initialised values may be written through the view (never `MaybeUninit::uninit()`).
pub(crate) unsafe fn as_uninit(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: same size and alignment; the caller writes only initialised values.
    unsafe { &mut *(s as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

/// The first `n` floats of a scratch buffer reused across the classes or chunks of one call:
/// grown (and zeroed) only when too small, so each call zeroes it at most once.
pub(crate) fn scratch(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        *buf = zeros(n);
    }
    &mut buf[..n]
}

fn is_flex<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(
        x.device().as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// The contract burn's conv2d checks before running (a model bug, never user input: weight
/// files are shape-checked when loaded).
fn check_channels(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) {
    let [_, c_in, _, _] = x.dims();
    let [_, per_group, _, _] = weight.dims();
    assert_eq!(
        c_in,
        per_group * options.groups,
        "conv2d: input has {c_in} channels, the weight expects {per_group} × {} groups",
        options.groups
    );
}

/// `burn::tensor::module::conv2d` with graft's kernels for dense and depthwise convolutions on
/// `flex`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    check_channels(&x, &weight, &options);
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

/// `act` applied to a tensor ([`relu`], [`relu6`] or nothing).
pub fn activate<const D: usize>(y: Tensor<D>, act: Activation) -> Tensor<D> {
    match act {
        Activation::Identity => y,
        Activation::Relu => relu(y),
        Activation::Relu6 => relu6(y),
    }
}

/// [`conv2d`] with a bias, followed by `act`: one kernel and one pass over the output on `flex`
/// (see `channels_last.rs`), a convolution then the activation elsewhere.
pub fn conv2d_act(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
    act: Activation,
) -> Tensor<4> {
    if !enabled() || !is_flex(&x) {
        return activate(module::conv2d(x, weight, Some(bias), options), act);
    }
    check_channels(&x, &weight, &options);
    let out = <Dispatch as GraftConv>::graft_conv2d_bias_act(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
        act,
    );
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

/// `a + b` (same shapes) for residual connections; on `flex` with graft's kernels the result
/// keeps the inputs' memory order (burn's add would turn channels-last back into row-major).
pub fn add<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if !enabled() || !is_flex(&a) {
        return a + b;
    }
    Tensor::from_dispatch(<Dispatch as GraftAdd>::graft_add(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// What [`batch_norm_train`] returns: the normalised input and the batch statistics it used
/// (mean and biased variance per channel, for the running averages).
pub struct TrainNorm {
    pub output: Tensor<4>,
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// `burn::tensor::module::batch_norm_train` with graft's kernels on `flex` (two passes over the
/// activations instead of burn's axis swaps and broadcast ops; see `batch_norm.rs`).
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> TrainNorm {
    if !enabled() || !is_flex(&x) {
        let out = module::batch_norm_train(x, gamma, beta, epsilon);
        return TrainNorm {
            output: out.output,
            mean: out.mean,
            variance: out.variance,
        };
    }
    let channels = x.dims()[1];
    let stats: Tensor<2> = Tensor::from_dispatch(<Dispatch as GraftNorm>::graft_batch_stats(
        x.clone().into_dispatch(),
    ));
    let output = <Dispatch as GraftNorm>::graft_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.clone().into_dispatch(),
        epsilon,
    );
    TrainNorm {
        output: Tensor::from_dispatch(output),
        mean: stats.clone().narrow(0, 0, 1).reshape([channels]),
        variance: stats.narrow(0, 1, 1).reshape([channels]),
    }
}

/// ReLU (`max(x, 0)`), one pass with graft's kernel on `flex`.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !enabled() || !is_flex(&x) {
        return burn::tensor::activation::relu(x);
    }
    Tensor::from_dispatch(<Dispatch as GraftActivation>::graft_relu(x.into_dispatch()))
}

/// The same tensor with its elements stored channels-last (NHWC), on `flex` with graft's kernels
/// (its backward step hands the gradient back row-major); unchanged anywhere else. graft's
/// convolution, pooling, normalisation and activation kernels keep the order they are given, so
/// a network fed a channels-last input runs channels-last throughout: no layout changes inside
/// the depthwise kernels, one GEMM per pointwise convolution (see `channels_last.rs`). Every
/// network calls it on its input (see [`train_channels_last`]).
pub fn to_channels_last(x: Tensor<4>) -> Tensor<4> {
    if !enabled() || !is_flex(&x) {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as GraftLayout>::graft_channels_last(
        x.into_dispatch(),
    ))
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

/// One `torch.optim.SGD` step for a flat parameter `p` with gradient `g` and momentum buffer
/// `buf` (None on the first step): the new parameter and, with momentum, the new buffer. One
/// fused parallel pass on `flex` with graft's kernels (see `optim.rs`); `None` elsewhere, where
/// the caller runs the update as tensor ops.
pub fn sgd_step(
    p: &Tensor<1>,
    g: &Tensor<1>,
    buf: Option<&Tensor<1>>,
    step: SgdStep,
) -> Option<(Tensor<1>, Option<Tensor<1>>)> {
    if !enabled() || !is_flex(p) || p.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let n = p.dims()[0];
    let has_buf = buf.is_some();
    let out: Tensor<2> = Tensor::from_dispatch(<Dispatch as GraftOptim>::graft_sgd_step(
        p.clone().into_dispatch(),
        g.clone().into_dispatch(),
        buf.unwrap_or(g).clone().into_dispatch(),
        has_buf,
        step,
    ));
    let new_p = out.clone().narrow(0, 0, 1).reshape([n]);
    let new_buf = (step.momentum != 0.0).then(|| out.narrow(0, 1, 1).reshape([n]));
    Some((new_p, new_buf))
}

/// Whether a tensor is a 4-D `flex` tensor stored HWIO (see [`layout::is_hwio`]): the order in
/// which channels-last training produces weight gradients, and keeps the weights it updates.
pub fn is_hwio<const D: usize>(t: &Tensor<D>) -> bool {
    D == 4
        && t.clone()
            .try_into_primitive::<burn::backend::Flex>()
            .is_ok_and(|p| layout::is_hwio(&p))
}

/// A tensor's elements as a flat vector, in HWIO order (`hwio`, for 4-D tensors: a view when
/// the tensor is stored so, a reorder otherwise) or in logical order.
pub fn flatten<const D: usize>(t: Tensor<D>, hwio: bool) -> Tensor<1> {
    let n = t.shape().num_elements();
    if hwio && D == 4 {
        let t: Tensor<4> = Tensor::from_dispatch(t.into_dispatch());
        return t.permute([2, 3, 1, 0]).reshape([n]);
    }
    t.reshape([n])
}

/// The inverse of [`flatten`]: a tensor of logical shape `shape`, stored HWIO when `hwio`.
pub fn unflatten<const D: usize>(flat: Tensor<1>, shape: [usize; D], hwio: bool) -> Tensor<D> {
    if hwio && D == 4 {
        let [o, i, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        let t = flat.reshape([h, w, i, o]).permute([3, 2, 0, 1]);
        return Tensor::from_dispatch(t.into_dispatch());
    }
    flat.reshape(shape)
}
