//! A backbone with a linear classification head: the model of the classification tasks.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::backbone::Backbone;
use super::layers::{self, Linear};
use super::registry::Preset;

/// A backbone with a linear classification head.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The feature extractor, pooled to one vector per image.
    pub backbone: Backbone,
    /// `features → num_classes` logits.
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
        self.backbone.for_each_conv_bn(f)
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.head.d_out()
    }
}

/// The zoo model whose tensors are all in `map` with the same shapes (the head's width apart),
/// and the width of the file's head. The width is read, never used to build anything: a file
/// may claim any.
pub fn zoo_model_fitting(map: &crate::weights::TensorMap) -> Option<(&'static str, usize)> {
    let device = Device::flex();
    for p in super::registry::ZOO {
        let head = format!("{}.", p.head_name);
        let Some(classes) = map
            .get(&format!("{head}weight"))
            .and_then(|t| t.shape.first().copied())
        else {
            continue;
        };
        // One output: the head's shapes are checked apart from its width.
        let model = Classifier::new(p, 1, &device);
        let fits = super::params::named_tensors(&model, p.head_name)
            .iter()
            .all(|(k, s, _)| {
                map.get(k).is_some_and(|t| {
                    if k.starts_with(&head) {
                        t.shape.len() == s.len() && t.shape[1..] == s[1..]
                    } else {
                        &t.shape == s
                    }
                })
            });
        if fits {
            return Some((p.name, classes));
        }
    }
    None
}

/// `error` (weights that do not load into `model_name`), or, when the file is another zoo
/// model's, the fix instead of a list of missing tensors: `this file holds `efficientnet_lite0`
/// weights, not `resnet18`'s: use --model efficientnet_lite0`.
pub fn with_model_hint(error: String, map: &crate::weights::TensorMap, model_name: &str) -> String {
    match zoo_model_fitting(map) {
        Some((name, _)) if name != model_name => {
            format!("this file holds `{name}` weights, not `{model_name}`'s: use --model {name}")
        }
        _ => error,
    }
}
