//! Max-pooling (`GraftPool`) with `pool.rs`'s kernels, and its backward step.

use burn::backend::TensorMetadata;
use burn::backend::ops::ModuleOps;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::DType;

use super::shared::nhwc_values;
use crate::kernels::channels_last;
use crate::kernels::channels_last_train::{self as cl_train};
use crate::kernels::layout::{
    channels_last_tensor, channels_last_values, flex_tensor, is_channels_last, values,
};
use crate::kernels::pool::{PoolGeometry, max_pool2d_backward, max_pool2d_forward};

/// 2-D max pooling with graft's CPU kernel: no argmax bookkeeping in inference, a flat argmax
/// per output while training.
#[backend_extension(Flex, Autodiff)]
pub trait GraftPool: Backend {
    /// `nn.MaxPool2d(kernel, stride, padding)` on `[N, C, H, W]` (padding counts as −∞,
    /// no dilation, floor mode).
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
