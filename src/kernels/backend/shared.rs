//! What several ops' backend glue shares.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;

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
