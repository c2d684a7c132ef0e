//! Attention's two fused ops (`GraftAttention`): the probabilities from the query and key
//! projections, and the context from the probabilities and the value projection, with their
//! backward steps (see `kernels/attention.rs`).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};

use crate::kernels::attention::{
    Heads, attention, attention_context, attention_context_backward, attention_probs,
    attention_probs_backward,
};
use crate::kernels::layout::{flex_tensor, values};

/// Multi-head attention on `(batch, seq, hidden)` projections (f32 tensors; `ops.rs` routes
/// others to burn's ops).
#[backend_extension(Flex, Autodiff)]
pub trait GraftAttention: Backend {
    /// `softmax(Q Kᵀ / sqrt(d) + bias)`, `(b, heads, s, s)`; `bias` `(b, s)` masks keys and is
    /// a constant (no gradient flows to it).
    fn graft_attention_probs(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
    /// `P V` with the heads side by side again, `(b, s, hidden)`.
    fn graft_attention_context(
        p: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
    /// Both at once, `(b, s, hidden)`, the probabilities never materialised (when no gradient
    /// needs them).
    fn graft_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
}

/// The sizes of a `(b, s, hidden)` projection split into `heads`.
fn heads_of(x: &FlexTensor, heads: usize) -> Heads {
    let s = x.shape();
    Heads {
        batch: s[0],
        seq: s[1],
        heads,
        dim: s[2] / heads.max(1),
    }
}

impl GraftAttention for Flex {
    fn graft_attention_probs(
        q: FlexTensor,
        k: FlexTensor,
        bias: FlexTensor,
        heads: usize,
    ) -> FlexTensor {
        let g = heads_of(&q, heads);
        let p = attention_probs(&values(&q), &values(&k), &values(&bias), g);
        flex_tensor(p, vec![g.batch, g.heads, g.seq, g.seq])
    }

    fn graft_attention_context(p: FlexTensor, v: FlexTensor, heads: usize) -> FlexTensor {
        let g = heads_of(&v, heads);
        let out = attention_context(&values(&p), &values(&v), g);
        flex_tensor(out, v.shape().to_vec())
    }

    fn graft_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        heads: usize,
    ) -> FlexTensor {
        let g = heads_of(&v, heads);
        let out = attention(&values(&q), &values(&k), &values(&v), &values(&bias), g);
        flex_tensor(out, v.shape().to_vec())
    }
}

#[derive(Debug)]
struct ProbsBackward;

impl Backward<Flex, 2> for ProbsBackward {
    /// The query and key projections, the probabilities (the output), the sizes.
    type State = (NodeId, NodeId, FlexTensor, Heads);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k] = ops.parents;
        let dp = grads.consume::<Flex>(&ops.node);
        let (q_state, k_state, p, g) = ops.state;
        let q: FlexTensor = checkpointer.retrieve_node_output(q_state);
        let k: FlexTensor = checkpointer.retrieve_node_output(k_state);
        let (dq, dk) =
            attention_probs_backward(&values(&q), &values(&k), &values(&p), &values(&dp), g);
        if let Some(node) = node_q {
            grads.register::<Flex>(node.id, flex_tensor(dq, q.shape().to_vec()));
        }
        if let Some(node) = node_k {
            grads.register::<Flex>(node.id, flex_tensor(dk, k.shape().to_vec()));
        }
    }
}

#[derive(Debug)]
struct ContextBackward;

impl Backward<Flex, 2> for ContextBackward {
    /// The probabilities, the value projection, the sizes.
    type State = (NodeId, NodeId, Heads);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_p, node_v] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node);
        let (p_state, v_state, g) = ops.state;
        let p: FlexTensor = checkpointer.retrieve_node_output(p_state);
        let v: FlexTensor = checkpointer.retrieve_node_output(v_state);
        let (dp, dv) = attention_context_backward(&values(&p), &values(&v), &values(&d_out), g);
        if let Some(node) = node_p {
            grads.register::<Flex>(node.id, flex_tensor(dp, p.shape().to_vec()));
        }
        if let Some(node) = node_v {
            grads.register::<Flex>(node.id, flex_tensor(dv, v.shape().to_vec()));
        }
    }
}

impl<C: CheckpointStrategy> GraftAttention for Autodiff<Flex, C> {
    fn graft_attention_probs(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let g = heads_of(q.primitive(), heads);
        let p = Flex::graft_attention_probs(
            q.primitive().clone(),
            k.primitive().clone(),
            bias.primitive().clone(),
            heads,
        );
        match ProbsBackward
            .prepare::<C>([q.node(), k.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let q_state = prep.checkpoint(&q);
                let k_state = prep.checkpoint(&k);
                prep.finish((q_state, k_state, p.clone(), g), p)
            }
            OpsKind::UnTracked(prep) => prep.finish(p),
        }
    }

    fn graft_attention_context(
        p: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let g = heads_of(v.primitive(), heads);
        let out =
            Flex::graft_attention_context(p.primitive().clone(), v.primitive().clone(), heads);
        match ContextBackward
            .prepare::<C>([p.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let p_state = prep.checkpoint(&p);
                let v_state = prep.checkpoint(&v);
                prep.finish((p_state, v_state, g), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    /// Fused when none of `q`, `k`, `v` needs a gradient; otherwise the two tracked ops (the
    /// backward pass needs the probabilities).
    fn graft_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        if !(q.is_tracked() || k.is_tracked() || v.is_tracked()) {
            let out = Flex::graft_attention(
                q.primitive().clone(),
                k.primitive().clone(),
                v.primitive().clone(),
                bias.primitive().clone(),
                heads,
            );
            return <Self as AutodiffBackend>::from_inner(out);
        }
        let p = Self::graft_attention_probs(q, k, bias, heads);
        Self::graft_attention_context(p, v, heads)
    }
}
