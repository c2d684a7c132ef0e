//! ResNet-18/34/50 (torchvision's v1.5 layout): `(n, 3, h, w) -> (n, features)`.
//!
//! Module paths equal torchvision's state-dict keys (`conv1.weight`, `layer2.0.bn1.running_mean`),
//! except `downsample.{conv,bn}`, which [`KEY_RENAMES`] maps to torchvision's `downsample.{0,1}`.
//! `width` scales every channel count (64 = torchvision); tests build narrow nets with the same code.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::kernels::{add, relu, to_channels_last};

use super::layers::Activation::{Identity, Relu};
use super::layers::{BatchNorm2d, Conv2d, ConvSpec, Padding, conv_bn_act};
use super::stages::{FeatureInfo, KeyRename};

/// torchvision keeps the skip path's convolution and BatchNorm in an `nn.Sequential`
/// (`downsample.0`, `downsample.1`); graft names the fields.
pub const KEY_RENAMES: &[KeyRename] = &[
    KeyRename {
        container: "Downsample",
        field: "conv",
        key: "0",
    },
    KeyRename {
        container: "Downsample",
        field: "bn",
        key: "1",
    },
];

/// The stages in order: the stem (`conv1`, `bn1`) and the four residual stages.
const STAGES: [&str; 5] = ["conv1", "layer1", "layer2", "layer3", "layer4"];

/// Which residual block a variant stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 (ResNet-50 and deeper), expansion 4.
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A ResNet variant as data: blocks per stage, block kind, base width.
#[derive(Debug, Clone, Copy)]
pub struct ResNetSpec {
    /// Residual blocks in each of the four stages (`[2, 2, 2, 2]` for ResNet-18).
    pub blocks: [usize; 4],
    /// Basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) blocks.
    pub kind: BlockKind,
    /// Channels of the stem and first stage (64 in torchvision).
    pub width: usize,
}

impl ResNetSpec {
    /// Width of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        self.width * 8 * self.kind.expansion()
    }

    /// The stage (0 = stem) that checkpoint key `key` belongs to, and the number of stages
    /// (`partial:K` trains the last K).
    pub fn stage_of(&self, key: &str) -> (usize, usize) {
        let stage = STAGES[1..]
            .iter()
            .position(|s| key.starts_with(&format!("{s}.")))
            .map_or(0, |i| i + 1);
        (stage, STAGES.len())
    }

    /// Each stage's output: the stem after its ReLU (stride 2, before the max-pool, as timm's
    /// `act1`), then `layer1`..`layer4` (strides 4 to 32).
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let e = self.kind.expansion();
        let mut info = vec![FeatureInfo {
            name: STAGES[0],
            channels: self.width,
            reduction: 2,
        }];
        for (i, name) in STAGES[1..].iter().enumerate() {
            info.push(FeatureInfo {
                name,
                channels: self.width * (1 << i) * e,
                reduction: 4 << i,
            });
        }
        info
    }
}

/// The 1×1 projection on the skip path when the shape changes (`downsample.0`, `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1×1 convolution to the block's output channels, with its stride (`downsample.0`).
    pub conv: Conv2d,
    /// BatchNorm after it (`downsample.1`).
    pub bn: BatchNorm2d,
}

/// One residual block; `conv3`/`bn3` exist only in bottleneck blocks.
#[derive(Module, Debug)]
pub struct Block {
    /// Basic: 3×3 with the block's stride; bottleneck: 1×1 reduction to `planes`.
    pub conv1: Conv2d,
    /// BatchNorm after `conv1`, followed by ReLU.
    pub bn1: BatchNorm2d,
    /// 3×3; carries the stride in bottleneck blocks (torchvision's ResNet v1.5).
    pub conv2: Conv2d,
    /// BatchNorm after `conv2` (ReLU follows in bottleneck blocks only).
    pub bn2: BatchNorm2d,
    /// Bottleneck only: 1×1 expansion to `4 * planes`.
    pub conv3: Option<Conv2d>,
    /// Bottleneck only: BatchNorm after `conv3`.
    pub bn3: Option<BatchNorm2d>,
    /// The skip path's projection, when the stride or the channel count changes.
    pub downsample: Option<Downsample>,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

fn bn(c: usize, device: &Device) -> BatchNorm2d {
    BatchNorm2d::new(c, BN_EPS, BN_MOMENTUM, device)
}

impl Block {
    fn new(kind: BlockKind, c_in: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let c_out = planes * kind.expansion();
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: ConvSpec::new(c_in, c_out, 1, stride, Padding::Fixed(0)).init(device),
            bn: bn(c_out, device),
        });
        match kind {
            BlockKind::Basic => Self {
                conv1: ConvSpec::new(c_in, planes, 3, stride, Padding::Fixed(1)).init(device),
                bn1: bn(planes, device),
                conv2: ConvSpec::new(planes, planes, 3, 1, Padding::Fixed(1)).init(device),
                bn2: bn(planes, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => Self {
                conv1: ConvSpec::new(c_in, planes, 1, 1, Padding::Fixed(0)).init(device),
                bn1: bn(planes, device),
                conv2: ConvSpec::new(planes, planes, 3, stride, Padding::Fixed(1)).init(device),
                bn2: bn(planes, device),
                conv3: Some(ConvSpec::new(planes, c_out, 1, 1, Padding::Fixed(0)).init(device)),
                bn3: Some(bn(c_out, device)),
                downsample,
            },
        }
    }

    fn for_each_conv_bn(&mut self, f: &mut dyn FnMut(&mut Conv2d, &mut BatchNorm2d)) {
        f(&mut self.conv1, &mut self.bn1);
        f(&mut self.conv2, &mut self.bn2);
        if let (Some(conv3), Some(bn3)) = (&mut self.conv3, &mut self.bn3) {
            f(conv3, bn3);
        }
        if let Some(d) = &mut self.downsample {
            f(&mut d.conv, &mut d.bn);
        }
    }

    /// `(n, c_in, h, w) -> (n, c_out, h / stride, w / stride)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => conv_bn_act(&d.conv, &d.bn, x.clone(), Identity),
            None => x.clone(),
        };
        let mut h = conv_bn_act(&self.conv1, &self.bn1, x, Relu);
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            // Bottleneck: 1×1, 3×3, 1×1.
            h = conv_bn_act(&self.conv2, &self.bn2, h, Relu);
            h = conv_bn_act(conv3, bn3, h, Identity);
        } else {
            h = conv_bn_act(&self.conv2, &self.bn2, h, Identity);
        }
        relu(add(h, identity))
    }
}

/// The headless network: stem, four stages, global average pool.
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7×7 stride-2 stem convolution from the RGB input.
    pub conv1: Conv2d,
    /// BatchNorm after the stem, followed by ReLU and a 3×3 stride-2 max pool.
    pub bn1: BatchNorm2d,
    /// Stage 1: stride 4, `width` planes.
    pub layer1: Vec<Block>,
    /// Stage 2: stride 8, `2 * width` planes.
    pub layer2: Vec<Block>,
    /// Stage 3: stride 16, `4 * width` planes.
    pub layer3: Vec<Block>,
    /// Stage 4: stride 32, `8 * width` planes.
    pub layer4: Vec<Block>,
}

impl ResNet {
    /// Random init as torchvision does it (Kaiming-normal convolutions, BN weight 1 / bias 0).
    pub fn new(spec: ResNetSpec, device: &Device) -> Self {
        let w = spec.width;
        let mut c_in = w;
        let mut stage = |planes: usize, count: usize, stride: usize| -> Vec<Block> {
            (0..count)
                .map(|i| {
                    let s = if i == 0 { stride } else { 1 };
                    let block = Block::new(spec.kind, c_in, planes, s, device);
                    c_in = planes * spec.kind.expansion();
                    block
                })
                .collect()
        };
        let layer1 = stage(w, spec.blocks[0], 1);
        let layer2 = stage(w * 2, spec.blocks[1], 2);
        let layer3 = stage(w * 4, spec.blocks[2], 2);
        let layer4 = stage(w * 8, spec.blocks[3], 2);
        Self {
            conv1: ConvSpec::new(3, w, 7, 2, Padding::Fixed(3)).init(device),
            bn1: bn(w, device),
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// Calls `f` on every convolution with the BatchNorm that follows it.
    pub fn for_each_conv_bn(&mut self, f: &mut dyn FnMut(&mut Conv2d, &mut BatchNorm2d)) {
        f(&mut self.conv1, &mut self.bn1);
        for block in self
            .layer1
            .iter_mut()
            .chain(&mut self.layer2)
            .chain(&mut self.layer3)
            .chain(&mut self.layer4)
        {
            block.for_each_conv_bn(f);
        }
    }

    /// Runs the network on `(n, 3, h, w)`, handing each stage's output to `tap` (stage index,
    /// map; see [`ResNetSpec::feature_info`]), which returns the map the network goes on
    /// with, and returns the last stage's map.
    pub fn forward_stages(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        // Channels-last throughout, training included: graft's kernels keep the layout, and in
        // NHWC the convolutions skip padding taps (see `kernels::channels_last`).
        let x = if crate::kernels::train_channels_last() || self.bn1.folded {
            to_channels_last(x)
        } else {
            x
        };
        let x = tap(0, conv_bn_act(&self.conv1, &self.bn1, x, Relu));
        let mut x = crate::kernels::max_pool2d(x, [3, 3], [2, 2], [1, 1]);
        for (i, stage) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .enumerate()
        {
            for block in stage {
                x = block.forward(x);
            }
            x = tap(i + 1, x);
        }
        x
    }
}
