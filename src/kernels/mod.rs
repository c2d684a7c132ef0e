//! graft's own CPU kernels, where burn's `flex` backend leaves speed on the table.
//!
//! Today: dense convolution (`conv.rs`: im2col over several images at once + one large GEMM per
//! chunk, NCHW; `channels_last.rs` / `channels_last_train.rs`: NHWC, grouped by valid kernel
//! taps so that padding is never multiplied), depthwise convolution (`depthwise.rs`), max-pool
//! (`pool.rs`), BatchNorm (`batch_norm.rs`), ReLU/ReLU6, the transformer encoder's GELU
//! (`gelu.rs`), LayerNorm (`layer_norm.rs`) and dense layer
//! (`linear.rs`), multi-head attention (`attention.rs`, its softmax in `softmax.rs`), dropout
//! (`dropout.rs`), each with its backward, and the fused SGD step (`optim.rs`), plugged into burn as backend extensions (`backend/`, one file per op)
//! so that they work with autodiff like any burn op. Layers call [`conv2d`], [`max_pool2d`],
//! [`relu6`], ... (`ops.rs`), which pick graft's kernel on the `flex` device and burn's op
//! everywhere else (other backends, grouped convolutions that are not depthwise). Networks
//! convert their input to channels-last once ([`to_channels_last`]) and every kernel keeps the
//! layout it is given. `activation.rs`, `math.rs` (a vectorisable `exp` and `erf`) and `buffers.rs` hold what the
//! kernels share.
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
        // The generated functions mirror `$body`'s signature, however long it is.
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
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

mod activation;
mod attention;
mod backend;
pub mod batch_norm;
mod buffers;
pub mod channels_last;
pub mod channels_last_train;
pub mod conv;
pub mod depthwise;
mod dropout;
mod gelu;
mod layer_norm;
pub mod layout;
pub(crate) mod linear;
pub(crate) mod math;
mod ops;
pub mod optim;
mod pointwise;
pub mod pool;
mod settings;
mod softmax;
pub mod transpose;

pub use activation::Activation;
pub use backend::{
    GraftActivation, GraftAdd, GraftAttention, GraftConv, GraftDropout, GraftGelu, GraftLayerNorm,
    GraftLayout, GraftLinear, GraftNorm, GraftOptim, GraftPool,
};
pub use ops::{
    TrainNorm, activate, add, attention, attention_context, attention_probs, batch_norm_train,
    conv2d, conv2d_act, dropout, flatten, gelu, is_hwio, layer_norm, linear, max_pool2d, relu,
    relu6, sgd_step, to_channels_last, unflatten,
};
pub use optim::SgdStep;
pub use settings::{
    KernelChoice, TrainLayout, configure, enabled, set_enabled, train_channels_last,
};
