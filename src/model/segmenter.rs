//! A backbone with a segmentation decoder and a per-pixel head: the model of the segmentation
//! task, smp's `FPN(encoder)` or `Unet(encoder)` built on graft's zoo.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::backbone::Backbone;
use super::fpn::Fpn;
use super::layers::{self, Conv2d, ConvSpec, Padding};
use super::registry::{Arch, Preset};
use super::unet::Unet;
use crate::error::{Error, Result};

/// Which decoder a segmenter has (the `decoder` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderKind {
    /// smp's FPN: a feature pyramid at strides 4 to 32, merged at 1/4 and upsampled ×4.
    #[default]
    Fpn,
    /// smp's U-Net: upsampling blocks with skip connections down to stride 2, full-resolution
    /// output.
    Unet,
}

impl std::str::FromStr for DecoderKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fpn" => Ok(Self::Fpn),
            "unet" | "u-net" => Ok(Self::Unet),
            other => Err(Error::invalid(format!(
                "unknown decoder `{other}` (known: fpn, unet)"
            ))),
        }
    }
}

impl std::fmt::Display for DecoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fpn => "fpn",
            Self::Unet => "unet",
        })
    }
}

crate::text_setting!(DecoderKind);

/// A segmenter's decoder.
// One value per model: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Decoder {
    /// smp's FPN decoder.
    Fpn(Fpn),
    /// smp's U-Net decoder.
    Unet(Unet),
}

/// The key of the head in checkpoints (smp's `segmentation_head.0`).
pub const SEGMENTATION_HEAD: &str = "segmentation_head.0";

/// The strides FPN reads, finest first (U-Net reads stride 2 too).
const STRIDES: [usize; 5] = [2, 4, 8, 16, 32];

/// The input sides must be multiples of this (the coarsest map is 1/32 of the input, and the
/// pyramid doubles its way back up).
pub const SIZE_MULTIPLE: usize = 32;

/// Backbone → decoder → convolution to `classes` per pixel (smp's `segmentation_head`: FPN's
/// 1×1 then bilinear ×4 with aligned corners; U-Net's 3×3 at full resolution).
#[derive(Module, Debug)]
pub struct Segmenter {
    /// The encoder: a zoo backbone whose stage maps the decoder reads.
    pub backbone: Backbone,
    /// The decoder: the chosen stage maps → one map at the head's resolution.
    pub decoder: Decoder,
    /// The decoder's output channels → one logit per class and pixel.
    pub head: Conv2d,
    /// The backbone stages the decoder reads (indices into [`Arch::feature_info`]).
    #[module(skip)]
    pub stages: Vec<usize>,
}

/// The stages a decoder reads: for strides 2, 4, 8, 16 and 32, the last stage at that stride
/// (timm's `features_only` choice), leaving out a final 1×1 `head` convolution (smp's encoders
/// stop at the last block). With their channels.
pub fn decoder_stages(arch: Arch) -> ([usize; 5], [usize; 5]) {
    let info = arch.feature_info();
    let mut stages = [0; 5];
    let mut channels = [0; 5];
    for (k, stride) in STRIDES.into_iter().enumerate() {
        let i = info
            .iter()
            .rposition(|f| f.reduction == stride && f.name != "head")
            .expect("every zoo backbone has stages at strides 2 to 32");
        stages[k] = i;
        channels[k] = info[i].channels;
    }
    (stages, channels)
}

impl Segmenter {
    /// A randomly initialised model of `preset`'s backbone with `decoder` and `classes`
    /// outputs per pixel.
    pub fn new(preset: &Preset, decoder: DecoderKind, classes: usize, device: &Device) -> Self {
        let backbone = Backbone::new(preset.arch, device);
        Self::with_backbone(backbone, preset.arch, decoder, classes, device)
    }

    /// A decoder and a head (fresh) on `backbone` (pretrained or not).
    pub fn with_backbone(
        backbone: Backbone,
        arch: Arch,
        kind: DecoderKind,
        classes: usize,
        device: &Device,
    ) -> Self {
        let (stages, channels) = decoder_stages(arch);
        let (decoder, stages, mut head) = match kind {
            DecoderKind::Fpn => {
                let fpn = Fpn::new([channels[1], channels[2], channels[3], channels[4]], device);
                let head = ConvSpec::new(fpn.out_channels(), classes, 1, 1, Padding::Fixed(0));
                (Decoder::Fpn(fpn), stages[1..].to_vec(), head)
            }
            DecoderKind::Unet => {
                let unet = Unet::new(channels, device);
                let head = ConvSpec::new(unet.out_channels(), classes, 3, 1, Padding::Fixed(1));
                (Decoder::Unet(unet), stages.to_vec(), head)
            }
        };
        head.bias = true;
        Self {
            backbone,
            decoder,
            head: head.init(device),
            stages,
        }
    }

    /// Which decoder this is.
    pub fn decoder_kind(&self) -> DecoderKind {
        match self.decoder {
            Decoder::Fpn(_) => DecoderKind::Fpn,
            Decoder::Unet(_) => DecoderKind::Unet,
        }
    }

    /// `(n, 3, h, w) -> (n, classes, h, w)` logits; `h` and `w` multiples of [`SIZE_MULTIPLE`].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let maps = self.backbone.feature_maps(x, &self.stages);
        match &self.decoder {
            Decoder::Fpn(fpn) => {
                let logits = self.head.forward(fpn.forward(maps));
                layers::resize_bilinear_aligned(logits, [h, w])
            }
            Decoder::Unet(unet) => self.head.forward(unet.forward(maps, [h, w])),
        }
    }

    /// Classes predicted per pixel.
    pub fn num_classes(&self) -> usize {
        self.head.weight.dims()[0]
    }

    /// Sets the momentum of every BatchNorm's running statistics (PyTorch convention).
    pub fn set_bn_momentum(mut self, momentum: f64) -> Self {
        self.for_each_conv_bn(&mut |_, bn| bn.momentum = momentum);
        self
    }

    /// Every convolution followed by a BatchNorm: the backbone's, and U-Net's decoder's.
    fn for_each_conv_bn(
        &mut self,
        f: &mut dyn FnMut(&mut layers::Conv2d, &mut layers::BatchNorm2d),
    ) {
        self.backbone.for_each_conv_bn(f);
        if let Decoder::Unet(u) = &mut self.decoder {
            u.for_each_conv_bn(f);
        }
    }
}

impl Segmenter {
    /// An inference copy with every BatchNorm folded into its convolution (same outputs, see
    /// [`layers::fold_batch_norm`]); never train or save the result.
    pub fn folded_for_inference(&self) -> Self {
        let mut m = self.valid();
        m.for_each_conv_bn(&mut layers::fold_batch_norm);
        m
    }
}
