//! What several ops' backend glue shares.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::DType;

use crate::kernels::channels_last;
use crate::kernels::layout::{channels_last_values, is_channels_last, values};

/// Elements per parallel task of the element-wise kernels.
pub(super) const ELEMENTWISE_CHUNK: usize = 1 << 15;

/// A gradient's elements in NHWC order, whichever order burn handed it over in.
pub(super) fn nhwc_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    if is_channels_last(t) {
        return Cow::Borrowed(channels_last_values(t));
    }
    let s = t.shape();
    Cow::Owned(channels_last::nchw_to_nhwc(
        &values(t),
        s[0],
        s[1],
        s[2] * s[3],
    ))
}

/// A row-major tensor's elements, mutable, when this node holds its buffer alone (an output
/// gradient usually is): for backward steps that compute the input gradient in place.
pub(super) fn owned_values_mut(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let n = t.layout().num_elements();
    if t.dtype() != DType::F32 || t.layout().contiguous_offsets() != Some((0, n)) {
        return None;
    }
    t.try_storage_mut::<f32>().filter(|s| s.len() == n)
}
