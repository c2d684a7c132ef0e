//! Dropout (`GraftDropout`) with a counter-based mask and its backward step, which recomputes
//! the mask from the seed instead of keeping it.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};

use super::shared::owned_values_mut;
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::layout::{flex_tensor, values};

/// `x ⊙ mask / (1 - prob)` with the mask drawn from `seed` (f32 tensors; `ops.rs` routes others
/// to burn).
#[backend_extension(Flex, Autodiff)]
pub trait GraftDropout: Backend {
    /// Zeroes each element with probability `prob` and scales the rest by `1 / (1 - prob)`;
    /// the same `seed` draws the same mask.
    fn graft_dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self>;
}

impl GraftDropout for Flex {
    fn graft_dropout(x: FlexTensor, prob: f64, seed: u64) -> FlexTensor {
        flex_tensor(dropout_forward(&values(&x), prob, seed), x.shape().to_vec())
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// The probability and the seed: all the mask is.
    type State = (f64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let mut d_out = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else { return };
        let (prob, seed) = ops.state;
        let dx = match owned_values_mut(&mut d_out) {
            Some(d) => {
                dropout_backward(d, prob, seed);
                d_out
            }
            None => {
                let mut d = values(&d_out).into_owned();
                dropout_backward(&mut d, prob, seed);
                flex_tensor(d, d_out.shape().to_vec())
            }
        };
        grads.register::<Flex>(node.id, dx);
    }
}

impl<C: CheckpointStrategy> GraftDropout for Autodiff<Flex, C> {
    fn graft_dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        let y = Flex::graft_dropout(x.primitive().clone(), prob, seed);
        match DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((prob, seed), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
