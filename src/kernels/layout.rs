//! The memory order of a `flex` tensor's elements, as graft's kernels see it.
//!
//! A 4-D activation is *logically* NCHW everywhere in graft; physically its elements are either
//! row-major NCHW (burn's default) or channels-last: NHWC in memory, NCHW shape with strides
//! `[h·w·c, 1, w·c, c]` (PyTorch's `channels_last` memory format). graft's kernels keep the
//! order they are given; burn's own ops accept either, since they read strides.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};

/// The tensor's elements in row-major (NCHW) order, borrowed when they already are.
pub fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// A row-major tensor of `shape` holding `data`.
pub fn flex_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Whether the strides of a tensor of logical shape (n, c, h, w) put its elements in NHWC order
/// over exactly its own storage. Dimensions of size 1 have no meaningful stride and are
/// ignored, so a tensor with 1×1 planes (or one channel) is both NCHW and NHWC.
pub fn is_channels_last(t: &FlexTensor) -> bool {
    let shape = t.shape();
    if t.dtype() != DType::F32 || shape.num_dims() != 4 {
        return false;
    }
    let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let layout = t.layout();
    let want = [h * w * c, 1, w * c, c];
    layout.start_offset() == 0
        && t.bytes().len() == n * c * h * w * 4
        && [n, c, h, w]
            .iter()
            .zip(layout.strides())
            .zip(want)
            .all(|((&size, &stride), want)| size == 1 || stride == want as isize)
}

/// The NHWC elements of a channels-last tensor (see [`is_channels_last`]).
pub fn channels_last_values(t: &FlexTensor) -> &[f32] {
    debug_assert!(is_channels_last(t));
    t.storage::<f32>()
}

/// A channels-last tensor of logical shape `[n, c, h, w]` holding `data` in NHWC order.
pub fn channels_last_tensor(data: Vec<f32>, [n, c, h, w]: [usize; 4]) -> FlexTensor {
    flex_tensor(data, vec![n, h, w, c]).permute(&[0, 3, 1, 2])
}

/// The elements of a tensor whose layout covers its whole storage densely from offset 0 (row
/// major or channels-last), for element-wise ops, which do not care about the order: mutable in
/// place, after copying the storage first if another tensor shares it. `None` for views.
pub fn dense_values_mut(t: &mut FlexTensor) -> Option<&mut [f32]> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let n = t.layout().num_elements();
    let dense = t.layout().contiguous_offsets() == Some((0, n)) || is_channels_last(t);
    if !dense || t.bytes().len() != n * 4 {
        return None;
    }
    Some(t.storage_mut::<f32>())
}

/// Whether a convolution weight of logical shape (c_out, c_in, kh, kw) is stored HWIO
/// (`[kh, kw, c_in, c_out]` in memory, TensorFlow's order) from the start of its storage (which
/// may hold more after it: the fused optimizer step returns the weight and its momentum buffer in
/// one allocation). Frozen backbones store their dense weights this way (see
/// `model::layers::fold_batch_norm`), and channels-last training keeps its weights so: the
/// channels-last convolution reads them as a `(kh·kw·c_in) × c_out` matrix as they are (see
/// [`hwio_values`]).
pub fn is_hwio(t: &FlexTensor) -> bool {
    let shape = t.shape();
    if t.dtype() != DType::F32 || shape.num_dims() != 4 {
        return false;
    }
    let [o, i, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let want = [1, o, w * i * o, i * o];
    t.layout().start_offset() == 0
        && t.bytes().len() >= o * i * h * w * 4
        && [o, i, h, w]
            .iter()
            .zip(t.layout().strides())
            .zip(want)
            .all(|((&size, &stride), want)| size == 1 || stride == want as isize)
}

/// The `(kh·kw·c_in) × c_out` elements of an HWIO-stored weight (see [`is_hwio`]).
pub fn hwio_values(t: &FlexTensor) -> &[f32] {
    debug_assert!(is_hwio(t));
    &t.storage::<f32>()[..t.layout().num_elements()]
}
