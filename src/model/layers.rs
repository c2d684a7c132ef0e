//! The building blocks every backbone is made of, with PyTorch's parameter names and semantics.
//!
//! Field names equal the checkpoint keys (`weight`, `bias`, `running_mean`, `running_var`), so a
//! module path such as `layer1.0.conv1.weight` is the torchvision key. Shapes:
//! `Conv2d: (n, c_in, h, w) -> (n, c_out, h', w')`, `BatchNorm2d: (n, c, h, w) -> same`,
//! `Linear: (n, in) -> (n, out)` with the weight stored `(out, in)` as in PyTorch.

use burn::module::{Flag, Module, Param, RunningState};
use burn::tensor::module::batch_norm;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor};

use crate::kernels;

pub use crate::kernels::Activation;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same number of zeros on every side (PyTorch's `padding=p`).
    Fixed(usize),
    /// TensorFlow's "SAME": output = ceil(input / stride), the odd pixel of padding goes at the
    /// end (bottom/right). The EfficientNet-Lite weights were trained with it.
    TfSame,
}

/// A 2-D convolution (`torch.nn.Conv2d`, square kernel, dilation 1).
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[c_out, c_in / groups, k, k]` (OIHW, PyTorch's layout).
    pub weight: Param<Tensor<4>>,
    /// `[c_out]`, when the convolution has a bias.
    pub bias: Option<Param<Tensor<1>>>,
    /// The same stride along the height and the width.
    #[module(skip)]
    pub stride: usize,
    /// How the input is zero-padded.
    #[module(skip)]
    pub padding: Padding,
    /// Channel groups: 1 is a dense convolution, `c_in` a depthwise one.
    #[module(skip)]
    pub groups: usize,
}

/// Everything needed to build a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// The side of the square kernel.
    pub kernel: usize,
    /// The same stride along the height and the width.
    pub stride: usize,
    /// How the input is zero-padded.
    pub padding: Padding,
    /// Channel groups (1: dense; `c_in`: depthwise).
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// A dense convolution without bias (the usual case before a BatchNorm).
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride,
            padding,
            groups: 1,
            bias: false,
        }
    }

    /// A depthwise convolution (one filter per channel).
    pub fn depthwise(channels: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        Self {
            groups: channels,
            ..Self::new(channels, channels, kernel, stride, padding)
        }
    }

    /// Builds the layer with torchvision's ResNet init (Kaiming normal, fan_out, ReLU gain).
    pub fn init(self, device: &Device) -> Conv2d {
        let fan_out = self.c_out / self.groups * self.kernel * self.kernel;
        let std = (2.0 / fan_out as f64).sqrt();
        let shape = [
            self.c_out,
            self.c_in / self.groups,
            self.kernel,
            self.kernel,
        ];
        let weight = Tensor::random(shape, Distribution::Normal(0.0, std), device);
        Conv2d {
            weight: Param::from_tensor(weight),
            bias: self
                .bias
                .then(|| Param::from_tensor(Tensor::zeros([self.c_out], device))),
            stride: self.stride,
            padding: self.padding,
            groups: self.groups,
        }
    }
}

impl Conv2d {
    /// `(n, c_in, h, w) -> (n, c_out, h', w')`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = self.options(&x);
        crate::kernels::conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }

    fn options(&self, x: &Tensor<4>) -> ConvOptions<2> {
        let [_, _, h, w] = x.dims();
        let k = self.weight.dims()[2];
        let padding = match self.padding {
            Padding::Fixed(p) => [(p, p), (p, p)],
            Padding::TfSame => [tf_same(h, k, self.stride), tf_same(w, k, self.stride)],
        };
        ConvOptions::new_with_padding([self.stride; 2], padding, [1, 1], self.groups)
    }
}

/// `act(bn(conv(x)))`, the unit every backbone is built from. With the BatchNorm folded into
/// the convolution (a frozen inference copy), convolution, bias and activation run as one
/// kernel, in one pass over the output.
pub fn conv_bn_act(conv: &Conv2d, bn: &BatchNorm2d, x: Tensor<4>, act: Activation) -> Tensor<4> {
    if let (true, Some(bias)) = (bn.folded, &conv.bias) {
        let options = conv.options(&x);
        return crate::kernels::conv2d_act(x, conv.weight.val(), bias.val(), options, act);
    }
    crate::kernels::activate(bn.forward(conv.forward(x)), act)
}

/// TensorFlow "SAME" padding (before, after) for one spatial axis.
pub fn tf_same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// `torch.nn.BatchNorm2d`: normalises each channel with the batch statistics while training and
/// with the running statistics otherwise.
///
/// Two details match PyTorch rather than burn's own `BatchNorm`: the running variance is updated
/// with the *unbiased* batch variance, and the parameters are named `weight`/`bias`.
/// `training` is a burn [`Flag`]: `Module::freeze()` (the `--bn frozen` policy) turns it off, so a
/// frozen layer uses and keeps its pretrained statistics even on a training device.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// The per-channel scale `γ`, `[C]` (initially 1).
    pub weight: Param<Tensor<1>>,
    /// The per-channel shift `β`, `[C]` (initially 0).
    pub bias: Param<Tensor<1>>,
    /// The running mean per channel, used outside training.
    pub running_mean: RunningState<Tensor<1>>,
    /// The running (unbiased) variance per channel, used outside training.
    pub running_var: RunningState<Tensor<1>>,
    /// On: batch statistics, and the running ones updated; off (frozen): the running
    /// statistics, unchanged.
    pub training: Param<Flag>,
    /// Added to the variance before its square root (PyTorch's default 1e-5).
    #[module(skip)]
    pub eps: f64,
    /// PyTorch's `momentum`: `running = (1 − momentum) · running + momentum · batch`.
    #[module(skip)]
    pub momentum: f64,
    /// Set by [`fold_batch_norm`]: the preceding convolution already applies this layer, so
    /// `forward` is the identity. Only ever set on a throwaway inference copy.
    #[module(skip)]
    pub folded: bool,
}

impl BatchNorm2d {
    /// Weight 1, bias 0, running mean 0 and variance 1, as PyTorch initialises it.
    pub fn new(channels: usize, eps: f64, momentum: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            training: Param::from_bool(true),
            eps,
            momentum,
            folded: false,
        }
    }

    /// `(n, c, h, w) -> (n, c, h, w)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.folded {
            return x;
        }
        let device = x.device();
        if !(device.is_autodiff() && self.training.is_enabled()) {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return batch_norm(x, self.weight.val(), self.bias.val(), mean, var, self.eps);
        }
        let [n, _, h, w] = x.dims();
        let count = (n * h * w) as f64;
        let out = crate::kernels::batch_norm_train(x, self.weight.val(), self.bias.val(), self.eps);
        // PyTorch: running_var uses the unbiased estimate var * n / (n - 1).
        let unbiased = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let m = self.momentum;
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let mean = mean.mul_scalar(1.0 - m) + out.mean.detach().mul_scalar(m);
        let var = var.mul_scalar(1.0 - m) + out.variance.detach().mul_scalar(m * unbiased);
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        out.output
    }
}

/// Folds an inference-mode BatchNorm into the convolution before it:
/// `W' = W * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)` per output
/// channel, and marks the BatchNorm as folded (identity). One pass over the activations less per
/// layer; for frozen backbones only (the folded pair cannot be trained or saved as two layers).
pub fn fold_batch_norm(conv: &mut Conv2d, bn: &mut BatchNorm2d) {
    let c = conv.weight.dims()[0];
    let device = conv.weight.device();
    let var = bn.running_var.value().to_device(&device);
    let mean = bn.running_mean.value().to_device(&device);
    let scale = bn.weight.val() / var.add_scalar(bn.eps).sqrt();
    let weight = conv.weight.val() * scale.clone().reshape([c, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([c], &device),
    };
    let bias = (bias - mean) * scale + bn.bias.val();
    // Dense weights are stored HWIO (same logical shape, kh·kw·c_in × c_out in memory): the
    // channels-last kernels read that as it is, where OIHW would be repacked on every call.
    let weight = if conv.groups == 1 {
        let hwio = weight.permute([2, 3, 1, 0]).into_data();
        Tensor::<4>::from_data(hwio, &device).permute([3, 2, 0, 1])
    } else {
        weight
    };
    conv.weight = Param::from_tensor(weight).set_require_grad(false);
    conv.bias = Some(Param::from_tensor(bias).set_require_grad(false));
    bn.folded = true;
}

/// `torch.nn.Linear`: `y = x W^T + b`, weight stored `(out, in)`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    /// PyTorch's default init: weight and bias uniform in ±1/sqrt(in).
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let dist = Distribution::Uniform(-bound, bound);
        Self {
            weight: Param::from_tensor(Tensor::random([d_out, d_in], dist, device)),
            bias: Param::from_tensor(Tensor::random([d_out], dist, device)),
        }
    }

    /// `(n, in) -> (n, out)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        kernels::linear(x, self.weight.val(), self.bias.val())
    }

    /// Number of outputs.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Linear {
    /// `(b, s, in) -> (b, s, out)`: the same layer applied to every token of a sequence.
    pub fn forward_tokens(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let y = self.forward(x.reshape([b * s, d]));
        let out = y.dims()[1];
        y.reshape([b, s, out])
    }
}

/// `torch.nn.LayerNorm` over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`
/// with the biased variance.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// The per-feature scale, of the last dimension's size.
    pub weight: Param<Tensor<1>>,
    /// The per-feature shift, of the last dimension's size.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance before its square root.
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Weight 1, bias 0, as PyTorch initialises it.
    pub fn new(dim: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
            eps,
        }
    }

    /// Normalises `x` over its last dimension; any shape.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// `torch.nn.Embedding`: a `(count, dim)` table looked up by index.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[count, dim]`: row `i` is index `i`'s vector.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// PyTorch's default init: N(0, 1) (BERT re-initialises with N(0, 0.02): `new_scaled`).
    pub fn new(count: usize, dim: usize, std: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::random(
                [count, dim],
                Distribution::Normal(0.0, std),
                device,
            )),
        }
    }

    /// `(b, s)` indices -> `(b, s, dim)`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

/// Inverted dropout (`torch.nn.Dropout`): active only while its module trains (an autodiff
/// device and `training` on), when it zeroes each element with probability `prob` and scales
/// the rest by `1 / (1 - prob)`.
#[derive(Module, Debug)]
pub struct Dropout {
    /// Off (a frozen module): dropout is the identity even on a training device.
    pub training: Param<Flag>,
    /// The probability that an element is zeroed, in `[0, 1)`.
    #[module(skip)]
    pub prob: f64,
}

impl Dropout {
    /// A dropout of probability `prob`, training on.
    pub fn new(prob: f64) -> Self {
        Self {
            training: Param::from_bool(true),
            prob,
        }
    }

    /// Whether [`Dropout::forward`] drops anything on `device` (training, on an autodiff
    /// device, with a positive probability).
    pub fn is_active(&self, device: &Device) -> bool {
        self.prob > 0.0 && device.is_autodiff() && self.training.is_enabled()
    }

    /// `x` with dropout applied when [active](Dropout::is_active), else `x` unchanged.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !self.is_active(&x.device()) {
            return x;
        }
        kernels::dropout(x, self.prob)
    }
}

/// `min(max(x, 0), 6)`: the activation EfficientNet-Lite uses.
pub fn relu6(x: Tensor<4>) -> Tensor<4> {
    crate::kernels::relu6(x)
}

/// `torch.nn.GroupNorm`: the channels split into `groups` groups, each normalised over its
/// channels and pixels with the biased variance, then a per-channel affine.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// The per-channel scale, `[C]`.
    pub weight: Param<Tensor<1>>,
    /// The per-channel shift, `[C]`.
    pub bias: Param<Tensor<1>>,
    /// The number of groups; divides the channel count.
    #[module(skip)]
    pub groups: usize,
    /// Added to the variance before its square root (1e-5).
    #[module(skip)]
    pub eps: f64,
}

impl GroupNorm {
    /// Weight 1, bias 0, eps 1e-5, as PyTorch initialises it.
    pub fn new(groups: usize, channels: usize, device: &Device) -> Self {
        debug_assert!(
            channels.is_multiple_of(groups),
            "GroupNorm: {channels} % {groups} != 0"
        );
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            groups,
            eps: 1e-5,
        }
    }

    /// `[N, C, H, W]` → the same shape, normalised per image and group.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let g = self.groups;
        let grouped = x.reshape([n, g, c / g * h * w]);
        let mean = grouped.clone().mean_dim(2);
        let centred = grouped - mean;
        let var = centred.clone().square().mean_dim(2);
        let normed = (centred / (var + self.eps).sqrt()).reshape([n, c, h, w]);
        normed * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// `torch.nn.Dropout2d`: while its module trains (as [`Dropout`]), zeroes whole channels of a
/// `(n, c, h, w)` map with probability `prob` and scales the rest by `1 / (1 - prob)`.
#[derive(Module, Debug)]
pub struct Dropout2d {
    /// Off (a frozen module): the identity even on a training device.
    pub training: Param<Flag>,
    /// The probability that a channel is zeroed, in `[0, 1)`.
    #[module(skip)]
    pub prob: f64,
}

impl Dropout2d {
    /// A channel dropout of probability `prob`, training on.
    pub fn new(prob: f64) -> Self {
        Self {
            training: Param::from_bool(true),
            prob,
        }
    }

    /// `[N, C, H, W]` with whole channels dropped while active, else unchanged.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        if !(self.prob > 0.0 && device.is_autodiff() && self.training.is_enabled()) {
            return x;
        }
        let [n, c, _, _] = x.dims();
        let keep = 1.0 - self.prob;
        let mask = Tensor::<4>::random([n, c, 1, 1], Distribution::Bernoulli(keep), &device);
        x * (mask / keep)
    }
}

/// Nearest-neighbour ×2 upsampling (`F.interpolate(scale_factor=2, mode="nearest")`): each
/// pixel repeated into a 2×2 block, by a broadcast (cheap, and exact in both directions).
pub fn upsample_nearest2(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// Bilinear resize with aligned corners (`F.interpolate(mode="bilinear", align_corners=True)`,
/// `nn.UpsamplingBilinear2d`) to `[h, w]`.
pub fn resize_bilinear_aligned(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    burn::tensor::module::interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(true)
            .with_output_size(size),
    )
}
