//! graft's kernels (convolutions, max-pool, ReLU6) plugged into burn through its backend-extension
//! mechanism.
//!
//! `#[backend_extension]` generates the routing: a `Tensor` on the `flex` device reaches the
//! `Flex` implementation below, a tensor on an autodiff `flex` device reaches the
//! `Autodiff<Flex, C>` one, which records a backward step computed by the same kernels. The tensor
//! data is borrowed as plain `f32` slices (copied only when a view is not contiguous).

use std::borrow::Cow;
use std::sync::Arc;

use rayon::prelude::*;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

use super::batch_norm::{
    NormGeometry, batch_stats, batch_stats_nhwc, inv_std, normalize, normalize_backward,
    normalize_backward_nhwc, normalize_nhwc,
};
use super::channels_last;
use super::channels_last_train::{
    self as cl_train, Wanted, bias_gradient, nhwc_to_nchw, oihw_to_hwio,
};
use super::conv::{
    ConvGeometry, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
    conv2d_backward_weight_from, conv2d_forward, conv2d_forward_for_training,
};
use super::depthwise::{depthwise_backward, depthwise_backward_nhwc, depthwise_forward};
use super::layout::{
    channels_last_tensor, channels_last_values, dense_values_mut, flex_tensor, hwio_values,
    is_channels_last, is_hwio, values,
};
use super::optim::{SgdStep, sgd_step};
use super::pool::{PoolGeometry, max_pool2d_backward, max_pool2d_forward};
use super::{Activation, clamp};

/// A dense (groups = 1) or depthwise 2-D convolution with graft's CPU kernels. (Two methods
/// because the extension macro of burn 0.22 does not route `Option<FloatTensor>` arguments.)
#[backend_extension(Flex, Autodiff)]
pub trait GraftConv: Backend {
    fn graft_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    fn graft_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// Convolution, bias and activation; in one pass over the output where the kernels allow
    /// (channels-last inference).
    fn graft_conv2d_bias_act(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        act: Activation,
    ) -> FloatTensor<Self>;
}

/// Whether the kernels apply: f32 data, and a dense (groups = 1) or depthwise (one filter per
/// channel) convolution. Anything else goes to burn's own convolution.
fn supported(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && (options.groups == 1 || is_depthwise(x, weight, options))
}

fn is_depthwise(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let (c_in, ws) = (x.shape()[1], weight.shape());
    options.groups > 1 && options.groups == c_in && ws[0] == c_in && ws[1] == 1
}

fn geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> ConvGeometry {
    let xs = x.shape();
    let ws = weight.shape();
    ConvGeometry {
        batch: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: ws[0],
        kh: ws[2],
        kw: ws[3],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    }
}

/// The OIHW weight's one tap `tap` as a `(c_out, c_in)` pointwise weight.
fn tap_weight(g: &ConvGeometry, weight: &[f32], tap: usize) -> Vec<f32> {
    weight.chunks(g.kh * g.kw).map(|taps| taps[tap]).collect()
}

/// A dense weight as the HWIO matrix the channels-last kernels read: as stored when it is
/// (frozen backbones), else reordered from a trainable OIHW parameter (once per step; a few
/// MiB, small next to the convolution).
fn hwio_weight(weight: &FlexTensor) -> Cow<'_, [f32]> {
    if is_hwio(weight) {
        return Cow::Borrowed(hwio_values(weight));
    }
    let s = weight.shape();
    Cow::Owned(oihw_to_hwio(&values(weight), s[0], s[1], s[2] * s[3]))
}

fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
    act: Activation,
) -> FlexTensor {
    let g = geometry(x, weight, options);
    let (oh, ow) = g.out_hw();
    let bias = bias.map(values);
    // Channels-last in, channels-last out.
    if is_channels_last(x) {
        let xs = channels_last_values(x);
        let out = if is_depthwise(x, weight, options) {
            channels_last::depthwise_forward(&g, xs, &values(weight), bias.as_deref(), act)
        } else {
            channels_last::conv2d_forward(&g, xs, &hwio_weight(weight), bias.as_deref(), act)
        };
        return channels_last_tensor(out, [g.batch, g.c_out, oh, ow]);
    }
    // A convolution whose only live tap is one (3×3 on a 1×1 plane) runs as that tap's 1×1
    // convolution. (The channels-last kernels skip padding taps by themselves.)
    let single = (!is_depthwise(x, weight, options))
        .then(|| g.single_live_tap())
        .flatten();
    if let Some((g1, tap)) = single {
        let w1 = tap_weight(&g, &values(weight), tap);
        let out = conv2d_forward(&g1, &values(x), &w1, bias.as_deref());
        return row_major_activated(out, act, vec![g.batch, g.c_out, oh, ow]);
    }
    let out = if is_depthwise(x, weight, options) {
        depthwise_forward(&g, &values(x), &values(weight), bias.as_deref())
    } else {
        conv2d_forward(&g, &values(x), &values(weight), bias.as_deref())
    };
    row_major_activated(out, act, vec![g.batch, g.c_out, oh, ow])
}

/// A row-major convolution output, `act` applied in place (the NCHW kernels do not fuse it).
fn row_major_activated(mut out: Vec<f32>, act: Activation, shape: Vec<usize>) -> FlexTensor {
    if act != Activation::Identity {
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .for_each(|v| act.apply(v));
    }
    flex_tensor(out, shape)
}

impl GraftConv for Flex {
    fn graft_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        if !supported(&x, &weight, &options) {
            return Flex::conv2d(x, weight, None, options);
        }
        forward(&x, &weight, None, &options, Activation::Identity)
    }

    fn graft_conv2d_bias(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if !supported(&x, &weight, &options) {
            return Flex::conv2d(x, weight, Some(bias), options);
        }
        forward(&x, &weight, Some(&bias), &options, Activation::Identity)
    }

    fn graft_conv2d_bias_act(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
        act: Activation,
    ) -> FlexTensor {
        if !supported(&x, &weight, &options) {
            let out = Flex::conv2d(x, weight, Some(bias), options);
            return match act {
                Activation::Identity => out,
                Activation::Relu => Flex::graft_relu(out),
                Activation::Relu6 => Flex::graft_relu6(out),
            };
        }
        forward(&x, &weight, Some(&bias), &options, act)
    }
}

/// The backward step of one convolution: gradients for whichever of input, weight and bias
/// require them, from the checkpointed input and weight.
#[derive(Debug)]
struct ConvBackward;

/// What a tracked convolution's forward keeps for its backward step.
#[derive(Debug, Clone)]
enum Kept {
    Nothing,
    /// NCHW: the transposed column matrix (when the batch fit one chunk).
    Columns(Arc<Vec<f32>>),
    /// Channels-last: the weight as the HWIO matrix both gradients read.
    HwioWeight(Arc<Vec<f32>>),
}

/// (input, weight, options, what the forward kept)
type ConvState = (NodeId, NodeId, ConvOptions<2>, Kept);

/// A gradient's elements in NHWC order, whichever order burn handed it over in.
fn nhwc_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    if is_channels_last(t) {
        return Cow::Borrowed(channels_last_values(t));
    }
    let s = t.shape();
    Cow::Owned(channels_last::nchw_to_nhwc(
        &values(t),
        s[0],
        s[1],
        s[2] * s[3],
    ))
}

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let (x_state, weight_state, options, kept_columns) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let weight: FlexTensor = checkpointer.retrieve_node_output(weight_state);
        let g = geometry(&x, &weight, &options);
        if is_channels_last(&x) {
            let d_out = nhwc_values(&d_out);
            let xs = channels_last_values(&x);
            let (dx, dw) = if is_depthwise(&x, &weight, &options) {
                // Both gradients in one pass, no layout changes.
                let (dx, dw) = depthwise_backward_nhwc(&g, xs, &values(&weight), &d_out);
                (Some(dx), Some(flex_tensor(dw, weight.shape().to_vec())))
            } else {
                let w = match &kept_columns {
                    Kept::HwioWeight(w) => Cow::Borrowed(&w[..]),
                    _ => hwio_weight(&weight),
                };
                let wanted = Wanted {
                    input: node_x.is_some(),
                    weight: node_weight.is_some(),
                };
                let (dx, dw) = cl_train::conv2d_backward(&g, xs, &w, &d_out, wanted);
                // The weight gradient is registered as computed, HWIO: the optimizer updates
                // the weight in that order and keeps it so (see `train::optim`), so neither is
                // reordered per step.
                let hwio = |dw| flex_tensor(dw, vec![g.kh, g.kw, g.c_in, g.c_out]);
                (dx, dw.map(|dw| hwio(dw).permute(&[3, 2, 0, 1])))
            };
            if let (Some(node), Some(dx)) = (node_x, dx) {
                let s = x.shape();
                grads.register::<Flex>(node.id, channels_last_tensor(dx, [s[0], s[1], s[2], s[3]]));
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                grads.register::<Flex>(node.id, dw);
            }
            if let Some(node) = node_bias {
                let db = bias_gradient(&d_out, g.c_out);
                grads.register::<Flex>(node.id, flex_tensor(db, vec![g.c_out]));
            }
            return;
        }
        let d_out = values(&d_out);
        if is_depthwise(&x, &weight, &options) {
            // one pass gives both gradients
            let (dx, dw) = depthwise_backward(&g, &values(&x), &values(&weight), &d_out);
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, flex_tensor(dx, x.shape().to_vec()));
            }
            if let Some(node) = node_weight {
                grads.register::<Flex>(node.id, flex_tensor(dw, weight.shape().to_vec()));
            }
        } else if let Some((g1, tap)) = g.single_live_tap() {
            // Forward ran as one tap's 1×1 convolution: so do the gradients; the other taps
            // only ever multiplied padding, their weight gradient is zero.
            if let Some(node) = node_x {
                let w1 = tap_weight(&g, &values(&weight), tap);
                let dx = conv2d_backward_input(&g1, &w1, &d_out);
                grads.register::<Flex>(node.id, flex_tensor(dx, x.shape().to_vec()));
            }
            if let Some(node) = node_weight {
                let dw1 = conv2d_backward_weight(&g1, &values(&x), &d_out);
                let mut dw = vec![0.0f32; g.c_out * g.c_in * g.kh * g.kw];
                for (taps, v) in dw.chunks_mut(g.kh * g.kw).zip(dw1) {
                    taps[tap] = v;
                }
                grads.register::<Flex>(node.id, flex_tensor(dw, weight.shape().to_vec()));
            }
        } else {
            if let Some(node) = node_x {
                let dx = conv2d_backward_input(&g, &values(&weight), &d_out);
                grads.register::<Flex>(node.id, flex_tensor(dx, x.shape().to_vec()));
            }
            if let Some(node) = node_weight {
                let kept = match &kept_columns {
                    Kept::Columns(c) => Some(&c[..]),
                    _ => None,
                };
                let dw = conv2d_backward_weight_from(&g, &values(&x), &d_out, kept);
                grads.register::<Flex>(node.id, flex_tensor(dw, weight.shape().to_vec()));
            }
        }
        if let Some(node) = node_bias {
            let db = conv2d_backward_bias(&g, &d_out);
            grads.register::<Flex>(node.id, flex_tensor(db, vec![g.c_out]));
        }
    }
}

/// Same routine as [`ConvBackward`] for a convolution without bias.
#[derive(Debug)]
struct ConvNoBiasBackward;

impl Backward<Flex, 2> for ConvNoBiasBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        ConvBackward.backward(
            Ops {
                parents: [node_x, node_weight, None],
                node: ops.node,
                state: ops.state,
            },
            grads,
            checkpointer,
        );
    }
}

impl<C: CheckpointStrategy> GraftConv for Autodiff<Flex, C> {
    fn graft_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, None, options)
    }

    fn graft_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, Some(bias), options)
    }

    fn graft_conv2d_bias_act(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        act: Activation,
    ) -> FloatTensor<Self> {
        let out = autodiff_conv2d::<C>(x, weight, Some(bias), options);
        match act {
            Activation::Identity => out,
            Activation::Relu => autodiff_clamp::<C, false>(out),
            Activation::Relu6 => autodiff_clamp::<C, true>(out),
        }
    }
}

/// The tracked convolution: graft's forward now, [`ConvBackward`] when gradients are asked for.
fn autodiff_conv2d<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: Option<FloatTensor<Autodiff<Flex, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<Flex, C>> {
    if !supported(x.primitive(), weight.primitive(), &options) {
        return <Autodiff<Flex, C> as ModuleOps<Autodiff<Flex, C>>>::conv2d(
            x, weight, bias, options,
        );
    }
    let run = |bias: Option<&FlexTensor>| {
        forward(
            x.primitive(),
            weight.primitive(),
            bias,
            &options,
            Activation::Identity,
        )
    };
    // With gradients to come, a dense convolution keeps what its backward step would redo: the
    // HWIO weight (channels-last) or the column matrix (NCHW).
    let run_tracked = |bias: Option<&FlexTensor>| -> (FlexTensor, Kept) {
        let (x, weight) = (x.primitive(), weight.primitive());
        let g = geometry(x, weight, &options);
        let channels_last = is_channels_last(x);
        if is_depthwise(x, weight, &options) || (!channels_last && g.single_live_tap().is_some()) {
            return (run(bias), Kept::Nothing);
        }
        let bias = bias.map(values);
        let (oh, ow) = g.out_hw();
        if channels_last {
            let w = hwio_weight(weight);
            let out = channels_last::conv2d_forward(
                &g,
                channels_last_values(x),
                &w,
                bias.as_deref(),
                Activation::Identity,
            );
            let out = channels_last_tensor(out, [g.batch, g.c_out, oh, ow]);
            // A weight stored HWIO is read again from the checkpointed weight; one that had to
            // be reordered (the first step) is kept reordered.
            let kept = match w {
                Cow::Borrowed(_) => Kept::Nothing,
                Cow::Owned(w) => Kept::HwioWeight(Arc::new(w)),
            };
            return (out, kept);
        }
        let (out, kept) =
            conv2d_forward_for_training(&g, &values(x), &values(weight), bias.as_deref());
        let kept = kept.map_or(Kept::Nothing, |c| Kept::Columns(Arc::new(c)));
        (flex_tensor(out, vec![g.batch, g.c_out, oh, ow]), kept)
    };
    match bias {
        Some(bias) => match ConvBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (out, kept) = run_tracked(Some(bias.primitive()));
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                prep.finish((x_state, weight_state, options.clone(), kept), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(Some(bias.primitive()))),
        },
        None => match ConvNoBiasBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (out, kept) = run_tracked(None);
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                prep.finish((x_state, weight_state, options.clone(), kept), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(None)),
        },
    }
}

/// 2-D max pooling with graft's CPU kernel: no argmax bookkeeping in inference, a flat argmax
/// per output while training.
#[backend_extension(Flex, Autodiff)]
pub trait GraftPool: Backend {
    fn graft_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
}

fn pool_geometry(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> PoolGeometry {
    let s = x.shape();
    PoolGeometry {
        planes: s[0] * s[1],
        h: s[2],
        w: s[3],
        kernel,
        stride,
        padding,
    }
}

impl GraftPool for Flex {
    fn graft_max_pool2d(
        x: FlexTensor,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return Flex::max_pool2d(x, kernel, stride, padding, [1, 1], false);
        }
        let g = pool_geometry(&x, kernel, stride, padding);
        let (oh, ow) = g.out_hw();
        let s = x.shape();
        if is_channels_last(&x) {
            let out = channels_last::max_pool2d_forward(&g, s[1], channels_last_values(&x));
            return channels_last_tensor(out, [s[0], s[1], oh, ow]);
        }
        let out = max_pool2d_forward(&g, &values(&x), None);
        flex_tensor(out, vec![s[0], s[1], oh, ow])
    }
}

/// Routes the output gradient back to the inputs the maxima came from.
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// (geometry, argmax, input shape, whether the input was channels-last)
    type State = (PoolGeometry, Arc<Vec<u32>>, Vec<usize>, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let (g, argmax, s, channels_last) = ops.state;
        if let Some(node) = node_x {
            let dx = if channels_last {
                let dx = cl_train::max_pool2d_backward(&g, s[1], &argmax, &nhwc_values(&d_out));
                channels_last_tensor(dx, [s[0], s[1], s[2], s[3]])
            } else {
                flex_tensor(max_pool2d_backward(&g, &argmax, &values(&d_out)), s)
            };
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> GraftPool for Autodiff<Flex, C> {
    fn graft_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        if x.primitive().dtype() != DType::F32 {
            return <Self as ModuleOps<Self>>::max_pool2d(
                x,
                kernel,
                stride,
                padding,
                [1, 1],
                false,
            );
        }
        let g = pool_geometry(x.primitive(), kernel, stride, padding);
        let (oh, ow) = g.out_hw();
        let s = x.primitive().shape().to_vec();
        let out_shape = vec![s[0], s[1], oh, ow];
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                if is_channels_last(x.primitive()) {
                    let x = channels_last_values(x.primitive());
                    let (out, argmax) = cl_train::max_pool2d_forward_argmax(&g, s[1], x);
                    let out = channels_last_tensor(out, [s[0], s[1], oh, ow]);
                    return prep.finish((g, Arc::new(argmax), s, true), out);
                }
                let mut argmax = vec![0u32; g.planes * oh * ow];
                let out = max_pool2d_forward(&g, &values(x.primitive()), Some(&mut argmax));
                prep.finish((g, Arc::new(argmax), s, false), flex_tensor(out, out_shape))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::graft_max_pool2d(
                x.primitive().clone(),
                kernel,
                stride,
                padding,
            )),
        }
    }
}

/// ReLU and ReLU6 in one pass each (burn's `clamp` is two masked fills, and two more in its
/// backward), in place on buffers nobody else holds.
#[backend_extension(Flex, Autodiff)]
pub trait GraftActivation: Backend {
    fn graft_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn graft_relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Elements per parallel task of the element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 15;

/// The upper bound of the activation: ReLU6's 6, or none for ReLU.
const fn upper(six: bool) -> f32 {
    if six { 6.0 } else { f32::INFINITY }
}

fn clamp_in_place(x: &mut [f32], hi: f32) {
    x.par_chunks_mut(ELEMENTWISE_CHUNK)
        .for_each(|o| o.iter_mut().for_each(|v| *v = clamp(*v, hi)));
}

/// The activation of a tensor in the same memory order (row-major or channels-last), in place
/// when the tensor holds its buffer alone.
fn clamp_flex(mut x: FlexTensor, six: bool) -> FlexTensor {
    if let Some(v) = dense_values_mut(&mut x) {
        clamp_in_place(v, upper(six));
        return x;
    }
    let mut out = values(&x).into_owned();
    clamp_in_place(&mut out, upper(six));
    flex_tensor(out, x.shape().to_vec())
}

fn clamp_fallback<B: FloatTensorOps<B> + Backend>(x: FloatTensor<B>, six: bool) -> FloatTensor<B> {
    let x = B::float_clamp_min(x, 0.0.into());
    if six {
        B::float_clamp_max(x, 6.0.into())
    } else {
        x
    }
}

impl GraftActivation for Flex {
    fn graft_relu(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return clamp_fallback::<Flex>(x, false);
        }
        clamp_flex(x, false)
    }

    fn graft_relu6(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return clamp_fallback::<Flex>(x, true);
        }
        clamp_flex(x, true)
    }
}

/// The output gradient of a row-major tensor, mutable, when this node holds it alone.
fn owned_row_major_mut(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let n = t.layout().num_elements();
    if t.dtype() != DType::F32 || t.layout().contiguous_offsets() != Some((0, n)) {
        return None;
    }
    t.try_storage_mut::<f32>().filter(|s| s.len() == n)
}

/// The gradient passes where `0 < x` (ReLU, PyTorch's `threshold_backward`) or `0 < x < 6`
/// (ReLU6, `hardtanh_backward`).
#[derive(Debug)]
struct ClampBackward<const SIX: bool>;

impl<const SIX: bool> Backward<Flex, 1> for ClampBackward<SIX> {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let mut d_out = grads.consume::<Flex>(&ops.node);
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state);
        if let Some(node) = node_x {
            // A select rather than a conditional store, so that it vectorises.
            let pass = |d: &mut [f32], x: &[f32]| {
                for (d, x) in d.iter_mut().zip(x) {
                    let open = *x > 0.0 && (!SIX || *x < 6.0);
                    *d = if open { *d } else { 0.0 };
                }
            };
            let mask = |d: &mut [f32], x: &[f32]| {
                d.par_chunks_mut(ELEMENTWISE_CHUNK)
                    .zip(x.par_chunks(ELEMENTWISE_CHUNK))
                    .for_each(|(d, x)| pass(d, x));
            };
            let dx = if is_channels_last(&x) {
                // Mask in the input's order: the gradient in place when it is channels-last
                // and this node's alone, else an NHWC copy of it.
                let x_values = channels_last_values(&x);
                if is_channels_last(&d_out)
                    && let Some(d) = dense_values_mut(&mut d_out)
                {
                    mask(d, x_values);
                    d_out
                } else {
                    let mut dx = nhwc_values(&d_out).into_owned();
                    mask(&mut dx, x_values);
                    let s = x.shape();
                    channels_last_tensor(dx, [s[0], s[1], s[2], s[3]])
                }
            } else {
                let x_values = values(&x);
                // The output gradient is usually this node's alone: mask it in place.
                match owned_row_major_mut(&mut d_out) {
                    Some(d) => {
                        mask(d, &x_values);
                        d_out
                    }
                    None => {
                        let mut dx = values(&d_out).into_owned();
                        mask(&mut dx, &x_values);
                        flex_tensor(dx, x.shape().to_vec())
                    }
                }
            };
            grads.register::<Flex>(node.id, dx);
        }
    }
}

fn autodiff_clamp<C: CheckpointStrategy, const SIX: bool>(
    x: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    if x.primitive().dtype() != DType::F32 {
        return clamp_fallback::<Autodiff<Flex, C>>(x, SIX);
    }
    // A new buffer in the input's memory order (the input is kept for the backward step),
    // copied and clamped in one parallel pass.
    let out = || {
        let x = x.primitive();
        let clamped = |src: &[f32]| -> Vec<f32> {
            // SAFETY: every element of each chunk is written from the same range of `src`.
            unsafe {
                super::par_fill(src.len(), ELEMENTWISE_CHUNK, |first, y| {
                    let src = &src[first..][..y.len()];
                    y.iter_mut()
                        .zip(src)
                        .for_each(|(y, s)| _ = y.write(clamp(*s, upper(SIX))));
                })
            }
        };
        let s = x.shape();
        if is_channels_last(x) {
            channels_last_tensor(clamped(channels_last_values(x)), [s[0], s[1], s[2], s[3]])
        } else {
            flex_tensor(clamped(&values(x)), s.to_vec())
        }
    };
    match ClampBackward::<SIX>
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let y = out();
            let state = prep.checkpoint(&x);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(out()),
    }
}

impl<C: CheckpointStrategy> GraftActivation for Autodiff<Flex, C> {
    fn graft_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff_clamp::<C, false>(x)
    }

    fn graft_relu6(x: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff_clamp::<C, true>(x)
    }
}

/// The memory order of activations: [`graft_channels_last`](GraftLayout::graft_channels_last)
/// returns the same logical NCHW tensor with its elements stored NHWC (see `layout.rs`), which
/// graft's kernels then keep from layer to layer.
#[backend_extension(Flex, Autodiff)]
pub trait GraftLayout: Backend {
    fn graft_channels_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GraftLayout for Flex {
    fn graft_channels_last(x: FlexTensor) -> FlexTensor {
        let s = x.shape();
        if x.dtype() != DType::F32 || s.num_dims() != 4 || is_channels_last(&x) {
            return x;
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let nhwc = channels_last::nchw_to_nhwc(&values(&x), n, c, h * w);
        channels_last_tensor(nhwc, [n, c, h, w])
    }
}

/// The gradient of a layout change: the same values, back in row-major order.
#[derive(Debug)]
struct ToChannelsLastBackward;

impl Backward<Flex, 1> for ToChannelsLastBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let s = d_out.shape().to_vec();
            let dx = if is_channels_last(&d_out) {
                let v = channels_last_values(&d_out);
                flex_tensor(nhwc_to_nchw(v, s[0], s[1], s[2] * s[3]), s)
            } else {
                d_out
            };
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> GraftLayout for Autodiff<Flex, C> {
    fn graft_channels_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = Flex::graft_channels_last(x.primitive().clone());
        ToChannelsLastBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateless(out)
    }
}

/// `a + b` for residual connections. burn's add writes a row-major result whatever its inputs'
/// order, which would end a channels-last run at the first residual block; this one keeps it.
#[backend_extension(Flex, Autodiff)]
pub trait GraftAdd: Backend {
    fn graft_add(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GraftAdd for Flex {
    fn graft_add(mut a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let same_order = a.shape() == b.shape()
            && a.layout().strides() == b.layout().strides()
            && b.layout().start_offset() == 0
            && b.dtype() == DType::F32
            && b.bytes().len() == a.layout().num_elements() * 4;
        if same_order && let Some(dst) = dense_values_mut(&mut a) {
            dst.par_chunks_mut(ELEMENTWISE_CHUNK)
                .zip(b.storage::<f32>().par_chunks(ELEMENTWISE_CHUNK))
                .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
            return a;
        }
        Flex::float_add(a, b)
    }
}

/// The gradient of `a + b` (same shapes): the output gradient, to both.
#[derive(Debug)]
struct AddBackward;

impl Backward<Flex, 2> for AddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        match (node_a, node_b) {
            (Some(a), Some(b)) => {
                grads.register::<Flex>(a.id, d_out.clone());
                grads.register::<Flex>(b.id, d_out);
            }
            (Some(node), None) | (None, Some(node)) => grads.register::<Flex>(node.id, d_out),
            (None, None) => {}
        }
    }
}

impl<C: CheckpointStrategy> GraftAdd for Autodiff<Flex, C> {
    /// Layout-keeping like the `Flex` version, so that channels-last training stays so across
    /// residual connections.
    fn graft_add(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        if a.primitive().shape() != b.primitive().shape() {
            return <Self as FloatTensorOps<Self>>::float_add(a, b);
        }
        let out = Flex::graft_add(a.primitive().clone(), b.primitive().clone());
        AddBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateless(out)
    }
}

/// Training-mode batch normalisation with graft's kernels (`batch_norm.rs`): batch statistics
/// as one untracked `[2, channels]` tensor (mean, biased variance), then the normalisation,
/// whose backward step treats those statistics as functions of the input (the full BatchNorm
/// gradient). Two methods because the extension macro routes one output tensor per method.
#[backend_extension(Flex, Autodiff)]
pub trait GraftNorm: Backend {
    fn graft_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    fn graft_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

fn norm_geometry(x: &FlexTensor) -> NormGeometry {
    let s = x.shape();
    NormGeometry {
        batch: s[0],
        channels: s[1],
        plane: s.num_elements() / (s[0] * s[1]).max(1),
    }
}

fn stats_values(x: &FlexTensor) -> FlexTensor {
    let g = norm_geometry(x);
    let (mut mean, var) = if is_channels_last(x) {
        batch_stats_nhwc(g.channels, channels_last_values(x))
    } else {
        batch_stats(&g, &values(x))
    };
    mean.extend(var);
    flex_tensor(mean, vec![2, g.channels])
}

/// (mean, inv_std) from a `[2, channels]` statistics tensor.
fn mean_inv_std(stats: &FlexTensor, epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    let stats = values(stats);
    let (mean, var) = stats.split_at(stats.len() / 2);
    (mean.to_vec(), inv_std(var, epsilon))
}

/// The normalisation in the input's memory order.
fn normalized(
    x: &FlexTensor,
    mean: &[f32],
    inv: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> FlexTensor {
    let s = x.shape();
    if is_channels_last(x) {
        let y = normalize_nhwc(channels_last_values(x), mean, inv, gamma, beta);
        return channels_last_tensor(y, [s[0], s[1], s[2], s[3]]);
    }
    let y = normalize(&norm_geometry(x), &values(x), mean, inv, gamma, beta);
    flex_tensor(y, s.to_vec())
}

impl GraftNorm for Flex {
    fn graft_batch_stats(x: FlexTensor) -> FlexTensor {
        stats_values(&x)
    }

    fn graft_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let (mean, inv) = mean_inv_std(&stats, epsilon);
        normalized(&x, &mean, &inv, &values(&gamma), &values(&beta))
    }
}

/// The BatchNorm backward step: input, gamma and beta gradients from the checkpointed input and
/// the statistics the forward used.
#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    /// (input, mean, inv_std, gamma)
    type State = (NodeId, Vec<f32>, Vec<f32>, Vec<f32>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x_state, mean, inv, gamma) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let g = norm_geometry(&x);
        let s = x.shape();
        let (dx, dgamma, dbeta) = if is_channels_last(&x) {
            let x = channels_last_values(&x);
            let (dx, dgamma, dbeta) =
                normalize_backward_nhwc(x, &mean, &inv, &gamma, &nhwc_values(&dy));
            let dx = channels_last_tensor(dx, [s[0], s[1], s[2], s[3]]);
            (dx, dgamma, dbeta)
        } else {
            let (dx, dgamma, dbeta) =
                normalize_backward(&g, &values(&x), &mean, &inv, &gamma, &values(&dy));
            (flex_tensor(dx, s.to_vec()), dgamma, dbeta)
        };
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, vec![g.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, vec![g.channels]));
        }
    }
}

impl<C: CheckpointStrategy> GraftNorm for Autodiff<Flex, C> {
    fn graft_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // Statistics carry no gradient of their own: the normalisation's backward accounts for
        // them (and the running averages are updated from detached copies).
        <Self as AutodiffBackend>::from_inner(stats_values(x.primitive()))
    }

    fn graft_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (mean, inv) = mean_inv_std(stats.primitive(), epsilon);
        let gamma_values = values(gamma.primitive()).into_owned();
        let out = || {
            let beta = values(beta.primitive());
            normalized(x.primitive(), &mean, &inv, &gamma_values, &beta)
        };
        match NormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let y = out();
                let x_state = prep.checkpoint(&x);
                prep.finish(
                    (x_state, mean.clone(), inv.clone(), gamma_values.clone()),
                    y,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(out()),
        }
    }
}

/// The fused SGD step of `optim.rs` (optimizers run on the inner, untracked tensors).
#[backend_extension(Flex, Autodiff)]
pub trait GraftOptim: Backend {
    /// `[2, n]` (the new parameter, the new momentum buffer), or `[1, n]` without momentum.
    /// `buf` is read only when `has_buf` (pass any tensor, e.g. `g`, otherwise).
    fn graft_sgd_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        has_buf: bool,
        step: SgdStep,
    ) -> FloatTensor<Self>;
}

impl GraftOptim for Flex {
    fn graft_sgd_step(
        p: FlexTensor,
        g: FlexTensor,
        buf: FlexTensor,
        has_buf: bool,
        step: SgdStep,
    ) -> FlexTensor {
        let buf = has_buf.then(|| values(&buf));
        let out = sgd_step(&values(&p), &values(&g), buf.as_deref(), step);
        let n = p.shape().num_elements();
        flex_tensor(out, vec![if step.momentum != 0.0 { 2 } else { 1 }, n])
    }
}

impl<C: CheckpointStrategy> GraftOptim for Autodiff<Flex, C> {
    fn graft_sgd_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        has_buf: bool,
        step: SgdStep,
    ) -> FloatTensor<Self> {
        let out = Flex::graft_sgd_step(
            p.primitive().clone(),
            g.primitive().clone(),
            buf.primitive().clone(),
            has_buf,
            step,
        );
        <Self as AutodiffBackend>::from_inner(out)
    }
}
