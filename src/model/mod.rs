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

mod backbone;
pub mod bert;
mod classifier;
pub mod efficientnet_lite;
pub mod fpn;
pub mod layers;
pub mod params;
pub mod registry;
pub mod resnet;
pub mod segmenter;
mod stages;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;

pub use backbone::Backbone;
pub use classifier::{Classifier, with_model_hint, zoo_model_fitting};
pub use efficientnet_lite::{EfficientNetLite, EfficientNetSpec};
pub use layers::Linear;
pub use registry::{Arch, Preset, ZOO, preset};
pub use resnet::{ResNet, ResNetSpec};
pub use segmenter::Segmenter;
pub use stages::{FeatureInfo, KeyRename};
