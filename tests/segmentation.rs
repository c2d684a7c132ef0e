//! Semantic segmentation: the FPN model against smp's (goldens from `tools/seg_model_goldens.py`)
//! and the task end to end on small generated scenes.

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use common::*;
use graft::model::params::{Strictness, load_into, named_tensors};
use graft::model::segmenter::SEGMENTATION_HEAD;
use graft::model::{Segmenter, preset};
use graft::weights::{DType, Format, RawTensor, TensorMap};

/// smp's key for one of graft's: the encoder's tensors are under `encoder.` there.
fn smp_key(key: &str) -> String {
    if key.starts_with("decoder.") || key.starts_with("segmentation_head.") {
        key.to_string()
    } else {
        format!("encoder.{key}")
    }
}

/// A segmenter with the deterministic tensors tools/goldens.py gives smp's model, by smp's keys.
fn det_segmenter(classes: usize, device: &Device) -> Segmenter {
    let model = Segmenter::new(preset("resnet18").unwrap(), classes, device);
    let tensors: BTreeMap<String, RawTensor> = named_tensors(&model, SEGMENTATION_HEAD)
        .into_iter()
        .map(|(key, shape, _)| {
            let data = det_tensor_for(&smp_key(&key), &shape);
            (
                key,
                RawTensor {
                    dtype: DType::F32,
                    shape,
                    data,
                },
            )
        })
        .collect();
    let map = TensorMap {
        tensors,
        format: Format::Safetensors,
    };
    load_into(model, &map, SEGMENTATION_HEAD, Strictness::Strict)
        .expect("deterministic weights fit")
        .0
}

#[test]
fn fpn_matches_smp() {
    let g = golden("seg_models.json");
    let device = test_device();
    let model = det_segmenter(3, &device);
    // Same tensors, same names, same shapes as smp's FPN(resnet18, classes=3).
    let ours: Vec<(String, Vec<usize>)> = named_tensors(&model, SEGMENTATION_HEAD)
        .into_iter()
        .map(|(k, s, _)| (smp_key(&k), s))
        .collect();
    let theirs: Vec<(String, Vec<usize>)> = g["models"]["fpn_resnet18"]["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_string(), usizes(&e[1])))
        .collect();
    let mut a = ours.clone();
    let mut b = theirs.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "graft's FPN tensors differ from smp's state_dict");
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if !name.starts_with("fpn_") {
            continue;
        }
        let shape = usizes(&case["input_shape"]);
        let x = det_input(
            case["input_name"].as_str().unwrap(),
            [shape[0], shape[1], shape[2], shape[3]],
            case["input_scale"].as_f64().unwrap(),
            &device,
        );
        for (label, m) in [
            ("trained", model.clone()),
            ("folded", model.folded_for_inference()),
        ] {
            let out = m.forward(x.clone());
            assert_eq!(out.dims().to_vec(), usizes(&case["output_shape"]), "{name}");
            let err = rel_err(&values(out), &floats(&case["logits"]));
            let tol = case["tolerance"].as_f64().unwrap() * device_tolerance_factor();
            eprintln!("{name} ({label}): rel err {err:.2e} (tolerance {tol:.1e})");
            assert!(err <= tol, "{name} ({label}): rel err {err} > {tol}");
        }
    }
}
