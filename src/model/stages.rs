//! What every backbone family describes about itself: its stages' output maps
//! ([`FeatureInfo`], timm's `feature_info`) and the renames between its module paths and its
//! checkpoints' keys ([`KeyRename`]).

/// One stage's output map of a backbone (timm's `feature_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureInfo {
    /// The stage's name in the family's terms (`layer3`, `blocks`, `head`).
    pub name: &'static str,
    /// Channels of the map.
    pub channels: usize,
    /// Input size / map size.
    pub reduction: usize,
}

/// A module field whose checkpoint key differs from its name: inside a `container` struct, the
/// field `field` is written `key` (ResNet's `Downsample.conv` is torchvision's `downsample.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRename {
    /// The Rust struct holding the field (`Downsample`).
    pub container: &'static str,
    /// The field's name in that struct (`conv`).
    pub field: &'static str,
    /// The name the checkpoints use for it (`0`, giving `downsample.0`).
    pub key: &'static str,
}
