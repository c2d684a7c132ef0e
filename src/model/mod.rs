//! Models: the backbone zoo, the classification head, and the registry that builds them by name.
//!
//! Every backbone answers the same questions (timm's contract): [`Backbone::forward_stages`]
//! (each stage's feature map, timm's `features_only`, for decoders and Grad-CAM),
//! [`Backbone::forward_features`] (`(n, 3, h, w) -> (n, feature_dim)`, pooled), and
//! [`Arch::feature_info`] / [`Arch::stage_of`] (the stages as data, and which stage a checkpoint
//! key belongs to: what `partial:K` trains). A [`Classifier`] adds a linear head:
//! [`Classifier::forward_head`], [`Classifier::forward`], [`Classifier::reset_classifier`].
//!
//! Each family's file owns what is particular to it: its layers, its stages and the renames
//! between its module paths and its checkpoints' keys ([`KeyRename`]).

pub mod efficientnet_lite;
pub mod layers;
pub mod params;
pub mod registry;
pub mod resnet;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use efficientnet_lite::{EfficientNetLite, EfficientNetSpec};
pub use layers::Linear;
pub use registry::{Arch, Preset, ZOO, preset};
pub use resnet::{ResNet, ResNetSpec};

/// One stage's output map of a backbone (timm's `feature_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureInfo {
    /// The stage's name in the family's terms (`layer3`, `blocks`, `head`).
    pub name: &'static str,
    pub channels: usize,
    /// Input size / map size.
    pub reduction: usize,
}

/// A module field whose checkpoint key differs from its name: inside a `container` struct, the
/// field `field` is written `key` (ResNet's `Downsample.conv` is torchvision's `downsample.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRename {
    pub container: &'static str,
    pub field: &'static str,
    pub key: &'static str,
}

/// Every family's renames, for [`params`]' key paths.
pub(crate) fn key_rename(container: &str, field: &str) -> Option<&'static str> {
    let container = container.strip_prefix("Struct:").unwrap_or(container);
    resnet::KEY_RENAMES
        .iter()
        .find(|r| r.container == container && r.field == field)
        .map(|r| r.key)
}

/// The feature extractor of one of the zoo's families.
// One value per model, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    ResNet(ResNet),
    EfficientNetLite(EfficientNetLite),
}

impl Backbone {
    /// A randomly initialised backbone of the given architecture.
    pub fn new(arch: Arch, device: &Device) -> Self {
        match arch {
            Arch::ResNet(spec) => Backbone::ResNet(ResNet::new(spec, device)),
            Arch::EfficientNet(spec) => {
                Backbone::EfficientNetLite(EfficientNetLite::new(spec, device))
            }
        }
    }

    /// Runs the backbone on `(n, 3, h, w)`, showing each stage's output map to `tap` (stage
    /// index and map, in the order of [`Arch::feature_info`]), and returns the last one.
    pub fn forward_stages(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, &Tensor<4>),
    ) -> Tensor<4> {
        match self {
            Backbone::ResNet(m) => m.forward_stages(x, tap),
            Backbone::EfficientNetLite(m) => m.forward_stages(x, tap),
        }
    }

    /// The output maps of the stages in `wanted` (indices into [`Arch::feature_info`]), in that
    /// order: what a decoder or Grad-CAM reads.
    pub fn feature_maps(&self, x: Tensor<4>, wanted: &[usize]) -> Vec<Tensor<4>> {
        let mut maps: Vec<(usize, Tensor<4>)> = Vec::new();
        self.forward_stages(x, &mut |i, map| {
            if wanted.contains(&i) {
                maps.push((i, map.clone()));
            }
        });
        wanted
            .iter()
            .filter_map(|w| maps.iter().find(|(i, _)| i == w).map(|(_, m)| m.clone()))
            .collect()
    }

    /// `(n, 3, h, w) -> (n, feature_dim)`: the last stage, average-pooled.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_stages(x, &mut |_, _| {})
            .mean_dims(&[2, 3])
            .flatten(1, 3)
    }
}

/// A backbone with a linear classification head.
#[derive(Module, Debug)]
pub struct Classifier {
    pub backbone: Backbone,
    pub head: Linear,
}

impl Classifier {
    /// A randomly initialised model of `preset`'s architecture with `num_classes` outputs.
    pub fn new(preset: &Preset, num_classes: usize, device: &Device) -> Self {
        Self {
            backbone: Backbone::new(preset.arch, device),
            head: Linear::new(preset.arch.feature_dim(), num_classes, device),
        }
    }

    /// `(n, 3, h, w) -> (n, feature_dim)`: pooled backbone features.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        self.backbone.forward_features(x)
    }

    /// `(n, feature_dim) -> (n, num_classes)`: logits from features.
    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    /// `(n, 3, h, w) -> (n, num_classes)`: logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(x))
    }

    /// Replaces the head with a freshly initialised one of `num_classes` outputs, keeping the
    /// backbone (the transfer-learning step).
    pub fn reset_classifier(mut self, num_classes: usize, device: &Device) -> Self {
        let d_in = self.head.weight.dims()[1];
        self.head = Linear::new(d_in, num_classes, device);
        self
    }

    /// Sets the momentum of every BatchNorm's running statistics (PyTorch convention:
    /// `running = (1 - m) running + m batch`).
    pub fn set_bn_momentum(mut self, momentum: f64) -> Self {
        // Every BatchNorm of the zoo follows a convolution.
        self.for_each_conv_bn(&mut |_, bn| bn.momentum = momentum);
        self
    }

    /// An inference copy with every BatchNorm folded into its convolution (see
    /// [`layers::fold_batch_norm`]): same outputs, fewer passes over the activations. For frozen
    /// backbones (feature extraction, `predict`); never train or save the result.
    pub fn folded_for_inference(&self) -> Self {
        let mut m = self.valid();
        m.for_each_conv_bn(&mut layers::fold_batch_norm);
        m
    }

    fn for_each_conv_bn(
        &mut self,
        f: &mut dyn FnMut(&mut layers::Conv2d, &mut layers::BatchNorm2d),
    ) {
        match &mut self.backbone {
            Backbone::ResNet(r) => r.for_each_conv_bn(f),
            Backbone::EfficientNetLite(e) => e.for_each_conv_bn(f),
        }
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.head.d_out()
    }
}
