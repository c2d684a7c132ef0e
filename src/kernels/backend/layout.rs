//! The change to channels-last memory order (`GraftLayout`) and its backward step.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::DType;

use crate::kernels::channels_last;
use crate::kernels::channels_last_train::nhwc_to_nchw;
use crate::kernels::layout::{
    channels_last_tensor, channels_last_values, flex_tensor, is_channels_last, values,
};

/// The memory order of activations: [`graft_channels_last`](GraftLayout::graft_channels_last)
/// returns the same logical NCHW tensor with its elements stored NHWC (see `layout.rs`), which
/// graft's kernels then keep from layer to layer.
#[backend_extension(Flex, Autodiff)]
pub trait GraftLayout: Backend {
    /// The same `[N, C, H, W]` tensor with its elements stored NHWC.
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
