//! The backbone of a model: one of the zoo's families behind one type.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::efficientnet_lite::EfficientNetLite;
use super::registry::Arch;
use super::resnet::{self, ResNet};

/// Every family's renames, for [`super::params`]' key paths.
pub(crate) fn key_rename(container: &str, field: &str) -> Option<&'static str> {
    let container = container.strip_prefix("Struct:").unwrap_or(container);
    [
        resnet::KEY_RENAMES,
        super::bert::KEY_RENAMES,
        super::fpn::KEY_RENAMES,
        super::unet::KEY_RENAMES,
    ]
    .into_iter()
    .flatten()
    .find(|r| r.container == container && r.field == field)
    .map(|r| r.key)
}

/// The feature extractor of one of the zoo's families.
// One value per model, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// A torchvision-style ResNet (`resnet18`, `resnet34`, `resnet50`, `resnet_tiny`).
    ResNet(ResNet),
    /// An EfficientNet-Lite (`efficientnet_lite0` to `efficientnet_lite2`, and a narrow Lite0).
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

    /// Runs the backbone on `(n, 3, h, w)`, handing each stage's output map to `tap` (stage
    /// index and map, in the order of [`Arch::feature_info`]), and returns the last one. `tap`
    /// returns the map the backbone goes on with: the map itself to observe, or a substitute
    /// (Grad-CAM continues from a detached copy that requires a gradient, so that the backward
    /// pass stops there and hands back d(logit)/d(map)).
    pub fn forward_stages(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
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
            map
        });
        wanted
            .iter()
            .filter_map(|w| maps.iter().find(|(i, _)| i == w).map(|(_, m)| m.clone()))
            .collect()
    }

    /// `(n, 3, h, w) -> (n, feature_dim)`: the last stage, average-pooled.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        Self::pool(self.forward_stages(x, &mut |_, map| map))
    }

    /// Calls `f` on every convolution followed by a BatchNorm (every BatchNorm of the zoo
    /// follows one): momentum changes, folding for inference.
    pub(crate) fn for_each_conv_bn(
        &mut self,
        f: &mut dyn FnMut(&mut super::layers::Conv2d, &mut super::layers::BatchNorm2d),
    ) {
        match self {
            Backbone::ResNet(r) => r.for_each_conv_bn(f),
            Backbone::EfficientNetLite(e) => e.for_each_conv_bn(f),
        }
    }

    /// The last stage's map `(n, c, h, w)` to features `(n, c)`: global average pooling.
    pub fn pool(last: Tensor<4>) -> Tensor<2> {
        last.mean_dims(&[2, 3]).flatten(1, 3)
    }
}
