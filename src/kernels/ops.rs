//! What layers call: each op runs graft's kernel on the `flex` device (through the backend
//! extensions in `backend/`) and burn's own op everywhere else — other backends, grouped
//! convolutions that are not depthwise, or with the `kernels = "burn"` setting.

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Distribution, Tensor, module};

use super::activation::Activation;
use super::backend::{
    GraftActivation, GraftAdd, GraftAttention, GraftConv, GraftDropout, GraftGelu, GraftLayerNorm,
    GraftLayout, GraftLinear, GraftNorm, GraftOptim, GraftPool,
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

/// Whether graft's f32 kernels take this tensor (the transformer ops have no other dtype).
fn takes_f32<const D: usize>(x: &Tensor<D>) -> bool {
    enabled() && x.dtype() == DType::F32 && is_flex(x)
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
    /// The normalised, scaled and shifted input, `[N, C, H, W]`.
    pub output: Tensor<4>,
    /// The batch mean per channel, `[C]`.
    pub mean: Tensor<1>,
    /// The biased (divided by `N * H * W`) batch variance per channel, `[C]`.
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
/// network calls it on its input (see
/// [`train_channels_last`](crate::kernels::train_channels_last)).
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

/// GELU, exact (erf) form, as PyTorch's `nn.GELU()` and BERT's `"gelu"`: one vectorised pass on
/// `flex`, with the exact derivative in the backward step (burn's backward is the tanh
/// approximation's).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !takes_f32(&x) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as GraftGelu>::graft_gelu(x.into_dispatch()))
}

/// `torch.nn.functional.layer_norm` over the last dimension with weight and bias: one pass per
/// row on `flex` forward and backward.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if !takes_f32(&x) {
        return module::layer_norm(x, gamma, Some(beta), eps);
    }
    Tensor::from_dispatch(<Dispatch as GraftLayerNorm>::graft_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    ))
}

/// `x Wᵀ + b` for `x` (m, in), `W` (out, in), `b` (out): `torch.nn.functional.linear`, one GEMM
/// reading `W` transposed in place on `flex` (forward and both matrix gradients).
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    if !takes_f32(&x) {
        return x.matmul(weight.transpose()) + bias.unsqueeze::<2>();
    }
    Tensor::from_dispatch(<Dispatch as GraftLinear>::graft_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The attention probabilities of multi-head attention: `softmax(Q Kᵀ / sqrt(d) + bias)` for
/// `q`, `k` `(b, s, hidden)` split into `heads` heads of `d` columns, `bias` `(b, s)` added to
/// every score of a key (a large negative number masks padding). `(b, heads, s, s)`. On `flex`
/// one fused op reading the heads in place; elsewhere burn's ops on split heads.
pub fn attention_probs(q: Tensor<3>, k: Tensor<3>, bias: Tensor<2>, heads: usize) -> Tensor<4> {
    if !takes_f32(&q) {
        let [b, s, h] = q.dims();
        let d = h / heads;
        let split = |t: Tensor<3>| t.reshape([b, s, heads, d]).swap_dims(1, 2);
        let scores = split(q)
            .matmul(split(k).swap_dims(2, 3))
            .div_scalar((d as f64).sqrt())
            + bias.reshape([b, 1, 1, s]);
        return burn::tensor::activation::softmax(scores, 3);
    }
    Tensor::from_dispatch(<Dispatch as GraftAttention>::graft_attention_probs(
        q.into_dispatch(),
        k.into_dispatch(),
        bias.into_dispatch(),
        heads,
    ))
}

/// The context of multi-head attention: `P V` per head, heads side by side again: `p`
/// `(b, heads, s, s)`, `v` `(b, s, hidden)` → `(b, s, hidden)`.
pub fn attention_context(p: Tensor<4>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    if !takes_f32(&v) {
        let [b, s, h] = v.dims();
        let v = v.reshape([b, s, heads, h / heads]).swap_dims(1, 2);
        return p.matmul(v).swap_dims(1, 2).reshape([b, s, h]);
    }
    Tensor::from_dispatch(<Dispatch as GraftAttention>::graft_attention_context(
        p.into_dispatch(),
        v.into_dispatch(),
        heads,
    ))
}

/// `softmax(Q Kᵀ / sqrt(d) + bias) V`: [`attention_probs`] then [`attention_context`] in one
/// op. On `flex`, when no gradient flows through it (inference), fused per head without
/// writing the `(b, heads, s, s)` probabilities; otherwise the two ops.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    bias: Tensor<2>,
    heads: usize,
) -> Tensor<3> {
    if !takes_f32(&v) {
        return attention_context(attention_probs(q, k, bias, heads), v, heads);
    }
    Tensor::from_dispatch(<Dispatch as GraftAttention>::graft_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        heads,
    ))
}

/// Inverted dropout, always applied (the caller decides when a layer trains): each element
/// zeroed with probability `prob`, the rest scaled by `1 / (1 - prob)`. The randomness comes from
/// the device's random stream (seeded per epoch by the trainer, so a resumed run draws the same
/// masks): on `flex`, one 48-bit seed per call drives a counter-based mask computed in parallel;
/// elsewhere, burn's Bernoulli tensor.
pub fn dropout<const D: usize>(x: Tensor<D>, prob: f64) -> Tensor<D> {
    let keep = 1.0 - prob;
    if !takes_f32(&x) {
        let mask = Tensor::<D>::random(x.shape(), Distribution::Bernoulli(keep), &x.device());
        return x * mask.mul_scalar(1.0 / keep);
    }
    // Two uniform floats carry 24 random bits each.
    let draws = Tensor::<1>::random([2], Distribution::Uniform(0.0, 1.0), &x.device())
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 draws");
    let bits = |u: f32| ((u as f64 * (1u64 << 24) as f64) as u64) & 0xff_ffff;
    let seed = (bits(draws[0]) << 24) | bits(draws[1]);
    Tensor::from_dispatch(<Dispatch as GraftDropout>::graft_dropout(
        x.into_dispatch(),
        prob,
        seed,
    ))
}
