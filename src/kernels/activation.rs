//! The activations a kernel can apply in the same pass as its main work.

/// The activation a convolution can apply to its output in the same pass (inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation: the output as computed.
    Identity,
    /// `max(x, 0)` (`nn.ReLU`).
    Relu,
    /// `min(max(x, 0), 6)` (`nn.ReLU6`, as in MobileNet and EfficientNet-Lite).
    Relu6,
}

impl Activation {
    /// The activation of one value; NaN stays NaN, as in PyTorch.
    #[inline(always)]
    pub fn of(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => clamp(v, f32::INFINITY),
            Activation::Relu6 => clamp(v, 6.0),
        }
    }

    /// Applies the activation in place; NaN stays NaN, as in PyTorch.
    #[inline]
    pub fn apply(self, v: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => v.iter_mut().for_each(|v| *v = clamp(*v, f32::INFINITY)),
            Activation::Relu6 => v.iter_mut().for_each(|v| *v = clamp(*v, 6.0)),
        }
    }
}

/// `min(max(v, 0), hi)`, NaN kept (like PyTorch's): written with comparisons, which the
/// compiler turns into vector blends (`f32::clamp` is not vectorised).
#[inline(always)]
#[allow(clippy::manual_clamp)] // on purpose: see above
pub(crate) fn clamp(v: f32, hi: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else if v > hi {
        hi
    } else {
        v
    }
}
