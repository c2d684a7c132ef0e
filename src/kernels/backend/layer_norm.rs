//! LayerNorm over the last dimension (`GraftLayerNorm`) and its backward step, which reuses the
//! forward's row statistics.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};

use crate::kernels::layer_norm::{RowStats, layer_norm_backward, layer_norm_forward};
use crate::kernels::layout::{flex_tensor, values};

/// `torch.nn.LayerNorm(dim)` with an affine weight and bias (f32 tensors; `ops.rs` routes others
/// to burn).
#[backend_extension(Flex, Autodiff)]
pub trait GraftLayerNorm: Backend {
    /// Normalises each row of `x` over its last dimension (biased variance, `eps` added to
    /// it), then `* gamma + beta` (both of the last dimension's size).
    fn graft_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
) -> (FlexTensor, RowStats) {
    let (y, stats) = layer_norm_forward(&values(x), &values(gamma), &values(beta), eps);
    (flex_tensor(y, x.shape().to_vec()), stats)
}

impl GraftLayerNorm for Flex {
    fn graft_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> FlexTensor {
        forward(&x, &gamma, &beta, eps).0
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// The input, the weight, and the forward's per-row mean and inverse deviation.
    type State = (NodeId, NodeId, Arc<RowStats>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let (x_state, gamma_state, stats) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let gamma: FlexTensor = checkpointer.retrieve_node_output(gamma_state);
        let (dx, dgamma, dbeta) =
            layer_norm_backward(&values(&x), &values(&gamma), &stats, &values(&d_out));
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, x.shape().to_vec()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, gamma.shape().to_vec()));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, gamma.shape().to_vec()));
        }
    }
}

impl<C: CheckpointStrategy> GraftLayerNorm for Autodiff<Flex, C> {
    fn graft_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let (y, stats) = forward(x.primitive(), gamma.primitive(), beta.primitive(), eps);
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                prep.finish((x_state, gamma_state, Arc::new(stats)), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
