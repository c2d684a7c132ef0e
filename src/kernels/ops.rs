//! What layers call: each op runs graft's kernel on the `flex` device (through the backend
//! extensions in `backend/`) and burn's own op everywhere else — other backends, grouped
//! convolutions that are not depthwise, or with the `kernels = "burn"` setting.

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Tensor, module};

use super::activation::Activation;
use super::backend::{
    GraftActivation, GraftAdd, GraftConv, GraftLayout, GraftNorm, GraftOptim, GraftPool,
};
use super::layout;
use super::optim::SgdStep;
use super::settings::enabled;

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
