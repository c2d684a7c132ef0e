//! ReLU and ReLU6 (`GraftActivation`) in one pass each, and their backward steps.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::DType;
use rayon::prelude::*;

use super::shared::{ELEMENTWISE_CHUNK, nhwc_values, owned_values_mut};
use crate::kernels::activation::clamp;
use crate::kernels::layout::{
    channels_last_tensor, channels_last_values, dense_values_mut, flex_tensor, is_channels_last,
    values,
};

/// ReLU and ReLU6 in one pass each (burn's `clamp` is two masked fills, and two more in its
/// backward), in place on buffers nobody else holds.
#[backend_extension(Flex, Autodiff)]
pub trait GraftActivation: Backend {
    /// `max(x, 0)` element-wise; NaN stays NaN.
    fn graft_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `min(max(x, 0), 6)` element-wise; NaN stays NaN.
    fn graft_relu6(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

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
                match owned_values_mut(&mut d_out) {
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

pub(super) fn autodiff_clamp<C: CheckpointStrategy, const SIX: bool>(
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
                crate::kernels::buffers::par_fill(src.len(), ELEMENTWISE_CHUNK, |first, y| {
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
