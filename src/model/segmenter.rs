//! A backbone with a segmentation decoder and a per-pixel head: the model of the segmentation
//! task, smp's `FPN(encoder)` built on graft's zoo.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::backbone::Backbone;
use super::fpn::Fpn;
use super::layers::{self, Conv2d, ConvSpec, Padding};
use super::registry::{Arch, Preset};

/// The key of the head in checkpoints (smp's `segmentation_head.0`).
pub const SEGMENTATION_HEAD: &str = "segmentation_head.0";

/// The strides a decoder reads, finest first.
const STRIDES: [usize; 4] = [4, 8, 16, 32];

/// The input sides must be multiples of this (the coarsest map is 1/32 of the input, and the
/// pyramid doubles its way back up).
pub const SIZE_MULTIPLE: usize = 32;

/// Backbone → FPN decoder → 1×1 convolution to `classes` → bilinear (aligned corners) back to the
/// input size.
#[derive(Module, Debug)]
pub struct Segmenter {
    pub backbone: Backbone,
    pub decoder: Fpn,
    pub head: Conv2d,
    /// The backbone stages the decoder reads (indices into [`Arch::feature_info`]).
    #[module(skip)]
    pub stages: Vec<usize>,
}

/// The stages a decoder reads: for strides 4, 8, 16 and 32, the last stage at that stride
/// (timm's `features_only` choice), leaving out a final 1×1 `head` convolution (smp's encoders
/// stop at the last block). With their channels.
pub fn decoder_stages(arch: Arch) -> ([usize; 4], [usize; 4]) {
    let info = arch.feature_info();
    let mut stages = [0; 4];
    let mut channels = [0; 4];
    for (k, stride) in STRIDES.into_iter().enumerate() {
        let i = info
            .iter()
            .rposition(|f| f.reduction == stride && f.name != "head")
            .expect("every zoo backbone has stages at strides 4 to 32");
        stages[k] = i;
        channels[k] = info[i].channels;
    }
    (stages, channels)
}

impl Segmenter {
    /// A randomly initialised model of `preset`'s backbone with `classes` outputs per pixel.
    pub fn new(preset: &Preset, classes: usize, device: &Device) -> Self {
        Self::with_backbone(
            Backbone::new(preset.arch, device),
            preset.arch,
            classes,
            device,
        )
    }

    /// A decoder and a head (fresh) on `backbone` (pretrained or not).
    pub fn with_backbone(backbone: Backbone, arch: Arch, classes: usize, device: &Device) -> Self {
        let (stages, channels) = decoder_stages(arch);
        let decoder = Fpn::new(channels, device);
        let mut head = ConvSpec::new(decoder.out_channels(), classes, 1, 1, Padding::Fixed(0));
        head.bias = true;
        Self {
            backbone,
            decoder,
            head: head.init(device),
            stages: stages.to_vec(),
        }
    }

    /// `(n, 3, h, w) -> (n, classes, h, w)` logits; `h` and `w` multiples of [`SIZE_MULTIPLE`].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let maps = self.backbone.feature_maps(x, &self.stages);
        let logits = self.head.forward(self.decoder.forward(maps));
        layers::resize_bilinear_aligned(logits, [h, w])
    }

    /// Classes predicted per pixel.
    pub fn num_classes(&self) -> usize {
        self.head.weight.dims()[0]
    }

    /// Sets the momentum of every backbone BatchNorm's running statistics (PyTorch convention).
    pub fn set_bn_momentum(mut self, momentum: f64) -> Self {
        self.backbone
            .for_each_conv_bn(&mut |_, bn| bn.momentum = momentum);
        self
    }
}

impl Segmenter {
    /// An inference copy with every backbone BatchNorm folded into its convolution (same
    /// outputs, see [`layers::fold_batch_norm`]); never train or save the result.
    pub fn folded_for_inference(&self) -> Self {
        let mut m = self.valid();
        m.backbone.for_each_conv_bn(&mut layers::fold_batch_norm);
        m
    }
}
