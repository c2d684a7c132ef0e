//! The FPN decoder of segmentation_models_pytorch (smp 0.6.0, `decoders/fpn`), over four encoder
//! maps at strides 4, 8, 16 and 32 (`c2..c5`):
//!
//! - top-down pyramid: `p5 = conv1×1(c5)`; `pᵢ = nearest×2(pᵢ₊₁) + conv1×1(cᵢ)` (256 channels);
//! - one segmentation block per level: (conv3×3 without bias → GroupNorm(32) → ReLU → bilinear
//!   ×2 with aligned corners) repeated until the level is at stride 4 (`p2`'s block: one conv, no
//!   upsampling), 128 channels;
//! - the four blocks summed (`merge_policy="add"`), then `Dropout2d(0.2)` while training.
//!
//! Module and field names follow smp's `state_dict` (`decoder.p4.skip_conv.weight`,
//! `decoder.seg_blocks.0.block.0.block.1.weight`), so a smp checkpoint's decoder loads by key.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::layers::{
    Conv2d, ConvSpec, Dropout2d, GroupNorm, Padding, resize_bilinear_aligned, upsample_nearest2,
};
use super::stages::KeyRename;

/// smp's `Conv3x3GNReLU` holds its layers in an `nn.Sequential` named `block`.
pub(crate) const KEY_RENAMES: &[KeyRename] = &[
    KeyRename {
        container: "ConvGnRelu",
        field: "conv",
        key: "block.0",
    },
    KeyRename {
        container: "ConvGnRelu",
        field: "norm",
        key: "block.1",
    },
];

/// Channels of the pyramid levels P2–P5 (smp's `decoder_pyramid_channels` default).
pub const PYRAMID_CHANNELS: usize = 256;
/// Channels of the decoder's output map (smp's `decoder_segmentation_channels` default).
pub const SEGMENTATION_CHANNELS: usize = 128;
const GROUPS: usize = 32;
const DROPOUT: f64 = 0.2;

/// conv3×3 (no bias) → GroupNorm → ReLU, then ×2 bilinear (aligned corners) if `upsample`.
#[derive(Module, Debug)]
pub struct ConvGnRelu {
    /// 3×3 convolution, padding 1, no bias.
    pub conv: Conv2d,
    /// GroupNorm with 32 groups, followed by ReLU.
    pub norm: GroupNorm,
    /// Whether the output is upsampled ×2 (bilinear, aligned corners); not a parameter.
    #[module(skip)]
    pub upsample: bool,
}

impl ConvGnRelu {
    fn new(c_in: usize, c_out: usize, upsample: bool, device: &Device) -> Self {
        Self {
            conv: ConvSpec::new(c_in, c_out, 3, 1, Padding::Fixed(1)).init(device),
            norm: GroupNorm::new(GROUPS, c_out, device),
            upsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = burn::tensor::activation::relu(self.norm.forward(self.conv.forward(x)));
        if self.upsample {
            let [_, _, h, w] = x.dims();
            resize_bilinear_aligned(x, [2 * h, 2 * w])
        } else {
            x
        }
    }
}

/// One pyramid level's head: `n` upsampling convolutions (one plain convolution when `n` is 0).
#[derive(Module, Debug)]
pub struct SegmentationBlock {
    /// The convolutions, applied in order: `n` that each upsample ×2, or one that does not
    /// when `n` is 0.
    pub block: Vec<ConvGnRelu>,
}

impl SegmentationBlock {
    fn new(c_in: usize, c_out: usize, upsamples: usize, device: &Device) -> Self {
        let mut block = vec![ConvGnRelu::new(c_in, c_out, upsamples > 0, device)];
        for _ in 1..upsamples {
            block.push(ConvGnRelu::new(c_out, c_out, true, device));
        }
        Self { block }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.block.iter().fold(x, |x, b| b.forward(x))
    }
}

/// A top-down step: the coarser level upsampled plus the lateral 1×1 projection of a skip.
#[derive(Module, Debug)]
pub struct FpnBlock {
    /// The lateral 1×1 projection of the encoder map to the pyramid's channels (with bias).
    pub skip_conv: Conv2d,
}

impl FpnBlock {
    fn new(skip_channels: usize, pyramid: usize, device: &Device) -> Self {
        let mut spec = ConvSpec::new(skip_channels, pyramid, 1, 1, Padding::Fixed(0));
        spec.bias = true;
        Self {
            skip_conv: spec.init(device),
        }
    }

    fn forward(&self, coarser: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
        upsample_nearest2(coarser) + self.skip_conv.forward(skip)
    }
}

/// The FPN decoder: encoder maps `[c2, c3, c4, c5]` → `(n, 128, h/4, w/4)`.
#[derive(Module, Debug)]
pub struct Fpn {
    /// 1×1 projection of `c5` (stride 32) to the pyramid's channels: P5.
    pub p5: Conv2d,
    /// P5 upsampled plus the projection of `c4`: P4 (stride 16).
    pub p4: FpnBlock,
    /// P4 upsampled plus the projection of `c3`: P3 (stride 8).
    pub p3: FpnBlock,
    /// P3 upsampled plus the projection of `c2`: P2 (stride 4).
    pub p2: FpnBlock,
    /// One head per level (P5, P4, P3, P2, upsampled 3, 2, 1 and 0 times), each bringing
    /// it to stride 4 and `SEGMENTATION_CHANNELS`; their outputs are summed.
    pub seg_blocks: Vec<SegmentationBlock>,
    /// Channel dropout (p = 0.2) on the merged map, as smp's FPN.
    pub dropout: Dropout2d,
}

impl Fpn {
    /// A decoder for encoder maps of `channels` `[c2, c3, c4, c5]` (strides 4 to 32).
    pub fn new(channels: [usize; 4], device: &Device) -> Self {
        let (pyr, seg) = (PYRAMID_CHANNELS, SEGMENTATION_CHANNELS);
        let mut p5 = ConvSpec::new(channels[3], pyr, 1, 1, Padding::Fixed(0));
        p5.bias = true;
        Self {
            p5: p5.init(device),
            p4: FpnBlock::new(channels[2], pyr, device),
            p3: FpnBlock::new(channels[1], pyr, device),
            p2: FpnBlock::new(channels[0], pyr, device),
            seg_blocks: [3, 2, 1, 0]
                .into_iter()
                .map(|n| SegmentationBlock::new(pyr, seg, n, device))
                .collect(),
            dropout: Dropout2d::new(DROPOUT),
        }
    }

    /// Channels of the output map.
    pub fn out_channels(&self) -> usize {
        SEGMENTATION_CHANNELS
    }

    /// `maps` = `[c2, c3, c4, c5]`.
    pub fn forward(&self, maps: Vec<Tensor<4>>) -> Tensor<4> {
        let [c2, c3, c4, c5]: [Tensor<4>; 4] = maps
            .try_into()
            .unwrap_or_else(|m: Vec<_>| panic!("FPN needs 4 encoder maps, got {}", m.len()));
        let p5 = self.p5.forward(c5);
        let p4 = self.p4.forward(p5.clone(), c4);
        let p3 = self.p3.forward(p4.clone(), c3);
        let p2 = self.p2.forward(p3.clone(), c2);
        let merged = self
            .seg_blocks
            .iter()
            .zip([p5, p4, p3, p2])
            .map(|(block, p)| block.forward(p))
            .reduce(|a, b| a + b)
            .expect("four levels");
        self.dropout.forward(merged)
    }
}
