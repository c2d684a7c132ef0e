//! Training-mode BatchNorm (`GraftNorm`) with `batch_norm.rs`'s kernels, and its backward
//! step.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};

use super::shared::nhwc_values;
use crate::kernels::batch_norm::{
    NormGeometry, batch_stats, batch_stats_nhwc, inv_std, normalize, normalize_backward,
    normalize_backward_nhwc, normalize_nhwc,
};
use crate::kernels::layout::{
    channels_last_tensor, channels_last_values, flex_tensor, is_channels_last, values,
};

/// Training-mode batch normalisation with graft's kernels (`batch_norm.rs`): batch statistics
/// as one untracked `[2, channels]` tensor (mean, biased variance), then the normalisation,
/// whose backward step treats those statistics as functions of the input (the full BatchNorm
/// gradient). Two methods because the extension macro routes one output tensor per method.
#[backend_extension(Flex, Autodiff)]
pub trait GraftNorm: Backend {
    /// Per-channel statistics of `x` `[N, C, H, W]`: `[2, C]`, row 0 the mean, row 1 the biased
    /// variance (not tracked by autodiff).
    fn graft_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta` per channel with `stats` from
    /// [`graft_batch_stats`](GraftNorm::graft_batch_stats); its gradient includes the
    /// statistics' dependence on `x`.
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
