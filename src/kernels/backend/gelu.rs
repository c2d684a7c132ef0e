//! GELU (`GraftGelu`, the exact erf form) and its backward step. burn's own backward is the
//! tanh approximation's derivative, which differs from PyTorch's by up to ~1e-3 per element.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};

use super::shared::owned_values_mut;
use crate::kernels::gelu::{gelu_backward, gelu_forward};
use crate::kernels::layout::{flex_tensor, values};

/// `x Φ(x)` element-wise (f32 tensors; `ops.rs` routes others to burn).
#[backend_extension(Flex, Autodiff)]
pub trait GraftGelu: Backend {
    /// The exact (erf) GELU, as `nn.GELU()`.
    fn graft_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GraftGelu for Flex {
    fn graft_gelu(x: FlexTensor) -> FlexTensor {
        flex_tensor(gelu_forward(&values(&x)), x.shape().to_vec())
    }
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
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
        let Some(node) = node_x else { return };
        let x_values = values(&x);
        let dx = match owned_values_mut(&mut d_out) {
            Some(d) => {
                gelu_backward(&x_values, d);
                d_out
            }
            None => {
                let mut d = values(&d_out).into_owned();
                gelu_backward(&x_values, &mut d);
                flex_tensor(d, x.shape().to_vec())
            }
        };
        grads.register::<Flex>(node.id, dx);
    }
}

impl<C: CheckpointStrategy> GraftGelu for Autodiff<Flex, C> {
    fn graft_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let y = Flex::graft_gelu(x.primitive().clone());
                let state = prep.checkpoint(&x);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::graft_gelu(x.primitive().clone())),
        }
    }
}
