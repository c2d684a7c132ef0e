//! The U-Net decoder of segmentation_models_pytorch (smp 0.6.0, `decoders/unet`, its defaults:
//! batch norm, no attention, no center block, nearest interpolation), over the five encoder maps
//! `[f1, f2, f3, f4, f5]` at strides 2, 4, 8, 16 and 32:
//!
//! - `x = f5` (the head; smp's `center` is the identity);
//! - five blocks, the skips `f4, f3, f2, f1` then none: `x = nearest(x, size)` to the skip's size
//!   (the input's size for the last block), `x = cat([x, skip], channels)`, then two
//!   (conv3×3 without bias → BatchNorm → ReLU), out channels [`DECODER_CHANNELS`].
//!
//! Module and field names follow smp's `state_dict` (`decoder.blocks.0.conv1.0.weight`,
//! `decoder.blocks.0.conv1.1.running_mean`), so a smp checkpoint's decoder loads by key.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::layers::{
    Activation, BatchNorm2d, Conv2d, ConvSpec, Padding, conv_bn_act, upsample_nearest2,
};
use super::stages::KeyRename;

/// smp's `Conv2dReLU` is an `nn.Sequential(conv, norm, relu)`.
pub(crate) const KEY_RENAMES: &[KeyRename] = &[
    KeyRename {
        container: "Conv2dRelu",
        field: "conv",
        key: "0",
    },
    KeyRename {
        container: "Conv2dRelu",
        field: "bn",
        key: "1",
    },
];

/// smp's default `decoder_channels`: the out channels of the five blocks.
pub const DECODER_CHANNELS: [usize; 5] = [256, 128, 64, 32, 16];

/// PyTorch's BatchNorm2d defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// conv3×3 (padding 1, no bias) → BatchNorm2d → ReLU (smp's `Conv2dReLU`).
#[derive(Module, Debug)]
pub struct Conv2dRelu {
    /// 3×3 convolution, padding 1, no bias.
    pub conv: Conv2d,
    /// BatchNorm after it, followed by ReLU.
    pub bn: BatchNorm2d,
}

impl Conv2dRelu {
    fn new(c_in: usize, c_out: usize, device: &Device) -> Self {
        Self {
            conv: ConvSpec::new(c_in, c_out, 3, 1, Padding::Fixed(1)).init(device),
            bn: BatchNorm2d::new(c_out, BN_EPS, BN_MOMENTUM, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bn_act(&self.conv, &self.bn, x, Activation::Relu)
    }
}

/// One decoder step: resize to the skip's size, concatenate the skip, two [`Conv2dRelu`].
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// On the upsampled input concatenated with the skip: `c_in + c_skip → c_out`.
    pub conv1: Conv2dRelu,
    /// `c_out → c_out`.
    pub conv2: Conv2dRelu,
}

impl DecoderBlock {
    fn new(c_in: usize, c_skip: usize, c_out: usize, device: &Device) -> Self {
        Self {
            conv1: Conv2dRelu::new(c_in + c_skip, c_out, device),
            conv2: Conv2dRelu::new(c_out, c_out, device),
        }
    }

    fn forward(&self, x: Tensor<4>, size: [usize; 2], skip: Option<Tensor<4>>) -> Tensor<4> {
        let x = resize_nearest(x, size);
        let x = match skip {
            Some(skip) => Tensor::cat(vec![x, skip], 1),
            None => x,
        };
        self.conv2.forward(self.conv1.forward(x))
    }
}

/// The U-Net decoder: encoder maps `[f1, f2, f3, f4, f5]` → `(n, 16, H, W)` at the input size.
#[derive(Module, Debug)]
pub struct Unet {
    /// Five blocks, coarsest first, with the skips `f4, f3, f2, f1` and none for the last;
    /// out channels [`DECODER_CHANNELS`].
    pub blocks: Vec<DecoderBlock>,
}

impl Unet {
    /// A decoder for encoder maps of `encoder_channels` `[f1, f2, f3, f4, f5]` (strides 2 to
    /// 32).
    pub fn new(encoder_channels: [usize; 5], device: &Device) -> Self {
        let [f1, f2, f3, f4, f5] = encoder_channels;
        let skips = [f4, f3, f2, f1, 0];
        let mut c_in = f5;
        let blocks = DECODER_CHANNELS
            .into_iter()
            .zip(skips)
            .map(|(c_out, c_skip)| {
                let block = DecoderBlock::new(c_in, c_skip, c_out, device);
                c_in = c_out;
                block
            })
            .collect();
        Self { blocks }
    }

    /// Channels of the output map.
    pub fn out_channels(&self) -> usize {
        DECODER_CHANNELS[DECODER_CHANNELS.len() - 1]
    }

    /// `maps` = `[f1, f2, f3, f4, f5]`; `input_size` = `[H, W]` of the image, the size of the
    /// output map.
    pub fn forward(&self, maps: Vec<Tensor<4>>, input_size: [usize; 2]) -> Tensor<4> {
        let [f1, f2, f3, f4, f5]: [Tensor<4>; 5] = maps
            .try_into()
            .unwrap_or_else(|m: Vec<_>| panic!("U-Net needs 5 encoder maps, got {}", m.len()));
        let size = |t: &Tensor<4>| {
            let [_, _, h, w] = t.dims();
            [h, w]
        };
        let targets = [size(&f4), size(&f3), size(&f2), size(&f1), input_size];
        let skips = [Some(f4), Some(f3), Some(f2), Some(f1), None];
        self.blocks
            .iter()
            .zip(targets.into_iter().zip(skips))
            .fold(f5, |x, (block, (target, skip))| {
                block.forward(x, target, skip)
            })
    }

    /// Calls `f` on every convolution with the BatchNorm that follows it: momentum changes,
    /// folding for inference.
    pub(crate) fn for_each_conv_bn(&mut self, f: &mut dyn FnMut(&mut Conv2d, &mut BatchNorm2d)) {
        for block in &mut self.blocks {
            for c in [&mut block.conv1, &mut block.conv2] {
                f(&mut c.conv, &mut c.bn);
            }
        }
    }

    /// Sets the momentum of every BatchNorm's running statistics (PyTorch convention).
    pub fn set_bn_momentum(mut self, momentum: f64) -> Self {
        self.for_each_conv_bn(&mut |_, bn| bn.momentum = momentum);
        self
    }

    /// An inference copy with every BatchNorm folded into its convolution (same outputs, see
    /// [`super::layers::fold_batch_norm`]); never train or save the result.
    pub fn folded_for_inference(&self) -> Self {
        let mut m = self.valid();
        m.for_each_conv_bn(&mut super::layers::fold_batch_norm);
        m
    }
}

/// Nearest-neighbour resize to `size` (`F.interpolate(x, size=size, mode="nearest")`), with
/// PyTorch's source index: the same index for an equal size, `dst / 2` for an exact double
/// (the cheap broadcast of [`upsample_nearest2`]), otherwise `min(floor(dst · scale), in - 1)`
/// with `scale = in / out` in f32, as PyTorch computes it (so sizes that do not divide evenly
/// pick the same pixels).
pub fn resize_nearest(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    if size == [2 * h, 2 * w] {
        return upsample_nearest2(x);
    }
    let x = resize_axis(x, 2, h, size[0]);
    resize_axis(x, 3, w, size[1])
}

/// [`resize_nearest`] along one spatial axis `dim` of length `len_in`.
fn resize_axis(x: Tensor<4>, dim: usize, len_in: usize, len_out: usize) -> Tensor<4> {
    if len_in == len_out {
        return x;
    }
    let index: Vec<i64> = (0..len_out)
        .map(|d| nearest_source_index(d, len_in, len_out) as i64)
        .collect();
    let device = x.device();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [len_out]), &device);
    x.select(dim, index)
}

/// PyTorch's `nearest_idx` (aten/src/ATen/native/UpSample.h) without a scale factor.
fn nearest_source_index(dst: usize, len_in: usize, len_out: usize) -> usize {
    if len_out == len_in {
        dst
    } else if len_out == 2 * len_in {
        dst >> 1
    } else {
        let scale = len_in as f32 / len_out as f32;
        ((dst as f32 * scale).floor() as usize).min(len_in - 1)
    }
}
