//! The convolutions (`GraftConv`): dense and depthwise, plain or with bias and a fused
//! activation, on `flex` and tracked by autodiff (`conv.rs`, `depthwise.rs`, `channels_last*.rs`).

use burn::backend::TensorMetadata;
use burn::backend::ops::ModuleOps;
use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use super::activation::{GraftActivation, autodiff_clamp};
use super::shared::{ELEMENTWISE_CHUNK, nhwc_values};
use crate::kernels::activation::Activation;
use crate::kernels::channels_last;
use crate::kernels::channels_last_train::{self as cl_train, Wanted, bias_gradient, oihw_to_hwio};
use crate::kernels::conv::{
    ConvGeometry, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
    conv2d_backward_weight_from, conv2d_forward, conv2d_forward_for_training,
};
use crate::kernels::depthwise::{depthwise_backward, depthwise_backward_nhwc, depthwise_forward};
use crate::kernels::layout::{
    channels_last_tensor, channels_last_values, flex_tensor, hwio_values, is_channels_last,
    is_hwio, values,
};

/// A dense (groups = 1) or depthwise 2-D convolution with graft's CPU kernels. (Two methods
/// because the extension macro of burn 0.22 does not route `Option<FloatTensor>` arguments.)
#[backend_extension(Flex, Autodiff)]
pub trait GraftConv: Backend {
    /// `conv2d(x, weight)` without bias: `x` `[N, C_in, H, W]`, `weight`
    /// `[C_out, C_in / groups, kH, kW]`.
    fn graft_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// `conv2d(x, weight) + bias`, `bias` of shape `[C_out]`; shapes as
    /// [`graft_conv2d`](GraftConv::graft_conv2d).
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
