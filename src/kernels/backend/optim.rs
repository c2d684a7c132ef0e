//! The fused SGD step (`GraftOptim`) of `optim.rs`.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};

use crate::kernels::layout::{flex_tensor, values};
use crate::kernels::optim::{SgdStep, sgd_step};

/// The fused SGD step of `optim.rs` (optimizers run on the inner, untracked tensors).
#[backend_extension(Flex, Autodiff)]
pub trait GraftOptim: Backend {
    /// `[2, n]` (the new parameter, the new momentum buffer), or `[1, n]` without momentum.
    /// `buf` is read only when `has_buf` (pass any tensor, e.g. `g`, otherwise).
    fn graft_sgd_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        has_buf: bool,
        step: SgdStep,
    ) -> FloatTensor<Self>;
}

impl GraftOptim for Flex {
    fn graft_sgd_step(
        p: FlexTensor,
        g: FlexTensor,
        buf: FlexTensor,
        has_buf: bool,
        step: SgdStep,
    ) -> FlexTensor {
        let buf = has_buf.then(|| values(&buf));
        let out = sgd_step(&values(&p), &values(&g), buf.as_deref(), step);
        let n = p.shape().num_elements();
        flex_tensor(out, vec![if step.momentum != 0.0 { 2 } else { 1 }, n])
    }
}

impl<C: CheckpointStrategy> GraftOptim for Autodiff<Flex, C> {
    fn graft_sgd_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        has_buf: bool,
        step: SgdStep,
    ) -> FloatTensor<Self> {
        let out = Flex::graft_sgd_step(
            p.primitive().clone(),
            g.primitive().clone(),
            buf.primitive().clone(),
            has_buf,
            step,
        );
        <Self as AutodiffBackend>::from_inner(out)
    }
}
