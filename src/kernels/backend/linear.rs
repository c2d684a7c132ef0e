//! `torch.nn.Linear` on rows (`GraftLinear`) and its backward step: one GEMM each for the
//! output and the two matrix gradients, the weight read transposed in place (no copies).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};

use crate::kernels::layout::{flex_tensor, values};
use crate::kernels::linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward,
};

/// `x Wᵀ + b` for `x` (m, k), `W` (n, k), `b` (n) (f32 tensors; `ops.rs` routes others to burn).
#[backend_extension(Flex, Autodiff)]
pub trait GraftLinear: Backend {
    /// `x Wᵀ + b`: `x` `[m, k]`, `weight` `[n, k]` (PyTorch's `nn.Linear` layout), `bias` `[n]`.
    fn graft_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// (m, k, n) of a linear layer's input and weight.
fn sizes(x: &FlexTensor, weight: &FlexTensor) -> (usize, usize, usize) {
    let (xs, ws) = (x.shape(), weight.shape());
    (xs[0], xs[1], ws[0])
}

impl GraftLinear for Flex {
    fn graft_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let (m, k, n) = sizes(&x, &weight);
        let y = linear_forward(&values(&x), &values(&weight), Some(&values(&bias)), m, k, n);
        flex_tensor(y, vec![m, n])
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state.0);
        let weight: FlexTensor = checkpointer.retrieve_node_output(ops.state.1);
        let (m, k, n) = sizes(&x, &weight);
        let dy = values(&d_out);
        if let Some(node) = node_x {
            let dx = linear_backward_input(&dy, &values(&weight), m, k, n);
            grads.register::<Flex>(node.id, flex_tensor(dx, vec![m, k]));
        }
        if let Some(node) = node_weight {
            let dw = linear_backward_weight(&dy, &values(&x), m, k, n);
            grads.register::<Flex>(node.id, flex_tensor(dw, vec![n, k]));
        }
        if let Some(node) = node_bias {
            grads.register::<Flex>(node.id, flex_tensor(linear_backward_bias(&dy, n), vec![n]));
        }
    }
}

impl<C: CheckpointStrategy> GraftLinear for Autodiff<Flex, C> {
    fn graft_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let y = Flex::graft_linear(
            x.primitive().clone(),
            weight.primitive().clone(),
            bias.primitive().clone(),
        );
        match LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                prep.finish((x_state, weight_state), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
