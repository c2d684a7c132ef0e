//! What the task seam promises the tasks to come: every backbone exposes its stages (timm's
//! `features_only`) consistently with its parameter groups, and each family's checkpoint-key
//! renames apply through the generic key paths.

use burn::tensor::{Device, Tensor};
use graft::model::params::named_tensors;
use graft::model::{Classifier, ZOO, preset};

mod common;

use common::{det_input, values};

/// The zoo's test-sized members (the full-size ones share their code).
const SMALL: &[&str] = &["resnet_tiny", "efficientnet_lite0_narrow"];

#[test]
fn every_backbone_exposes_its_stages() {
    let device = Device::flex();
    for name in SMALL {
        let p = preset(name).unwrap();
        let model = Classifier::new(p, 5, &device).folded_for_inference();
        let info = p.arch.feature_info();
        let size = 64;
        let x = det_input(name, [2, 3, size, size], 1.0, &device);
        let mut maps: Vec<(usize, [usize; 4])> = Vec::new();
        let last = model
            .backbone
            .forward_stages(x.clone(), &mut |i, m: Tensor<4>| {
                maps.push((i, m.dims()));
                m
            });
        assert_eq!(maps.len(), info.len(), "{name}: one map per stage");
        for ((i, dims), (k, stage)) in maps.iter().zip(info.iter().enumerate()) {
            assert_eq!(*i, k, "{name}: stages in order");
            let side = size.div_ceil(stage.reduction);
            assert_eq!(
                *dims,
                [2, stage.channels, side, side],
                "{name} stage {k} ({}): map shape vs feature_info",
                stage.name
            );
        }
        // The pooled features are the last stage's map, averaged: bit for bit.
        let pooled = values(last.mean_dims(&[2, 3]).flatten::<2>(1, 3));
        let features = values(model.forward_features(x.clone()));
        assert_eq!(
            pooled, features,
            "{name}: forward_features = pooled last stage"
        );
        assert_eq!(features.len(), 2 * p.arch.feature_dim());
        // A decoder asks for some stages by index.
        let picked = model.backbone.feature_maps(x, &[1, info.len() - 1]);
        assert_eq!(picked.len(), 2);
        assert_eq!(picked[0].dims()[1], info[1].channels);
        assert_eq!(picked[1].dims()[1], info[info.len() - 1].channels);
    }
}

#[test]
fn parameter_stages_match_the_feature_stages() {
    let device = Device::flex();
    for p in ZOO.iter().filter(|p| SMALL.contains(&p.name)) {
        let model = Classifier::new(p, 5, &device);
        let n_maps = p.arch.feature_info().len();
        let mut seen = vec![false; n_maps];
        for (key, _, _) in named_tensors(&model, p.head_name) {
            if key.starts_with(&format!("{}.", p.head_name)) {
                continue;
            }
            let (stage, n) = p.arch.stage_of(&key);
            assert_eq!(n, n_maps, "{}: stage_of counts the feature stages", p.name);
            assert!(stage < n, "{}: {key} in stage {stage} of {n}", p.name);
            seen[stage] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "{}: every stage has parameters (partial:K must be able to train it): {seen:?}",
            p.name
        );
    }
}

#[test]
fn family_key_renames_apply_to_checkpoint_keys() {
    let p = preset("resnet_tiny").unwrap();
    let model = Classifier::new(p, 5, &Device::flex());
    let keys: Vec<String> = named_tensors(&model, p.head_name)
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    for want in [
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "conv1.weight",
        "fc.bias",
    ] {
        assert!(keys.iter().any(|k| k == want), "missing {want}");
    }
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("downsample.conv") || k.contains("ResNet")),
        "module paths leaked into the keys"
    );
}
