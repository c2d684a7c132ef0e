//! The layout-keeping residual add (`GraftAdd`) and its backward step.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::DType;
use rayon::prelude::*;

use super::shared::ELEMENTWISE_CHUNK;
use crate::kernels::layout::dense_values_mut;

/// `a + b` for residual connections. burn's add writes a row-major result whatever its inputs'
/// order, which would end a channels-last run at the first residual block; this one keeps it.
#[backend_extension(Flex, Autodiff)]
pub trait GraftAdd: Backend {
    /// `a + b` for two tensors of one shape, in `a`'s memory order (channels-last stays so).
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
