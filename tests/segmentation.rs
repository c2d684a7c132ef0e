//! Semantic segmentation: the FPN model against smp's (goldens from `tools/seg_model_goldens.py`)
//! and the task end to end on small generated scenes.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use common::scenes::{SIDE, scene, write_scenes};
use common::*;
use graft::model::params::{Strictness, count_params, load_into, named_tensors};
use graft::model::segmenter::{Decoder, DecoderKind, SEGMENTATION_HEAD};
use graft::model::unet::resize_nearest;
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
fn det_segmenter(kind: DecoderKind, classes: usize, device: &Device) -> Segmenter {
    let model = Segmenter::new(preset("resnet18").unwrap(), kind, classes, device);
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

/// smp 0.6.0's `FPN(resnet18, classes=3)` and `Unet(resnet18, classes=3)`: the same tensors
/// under the same names, the same parameter count, the same logits (and the BatchNorm-folded
/// inference copy's), within the golden's f32 tolerance.
#[test]
fn decoders_match_smp() {
    let g = golden("seg_models.json");
    let device = test_device();
    for (kind, name) in [
        (DecoderKind::Fpn, "fpn_resnet18"),
        (DecoderKind::Unet, "unet_resnet18"),
    ] {
        let model = det_segmenter(kind, 3, &device);
        let mut ours: Vec<(String, Vec<usize>)> = named_tensors(&model, SEGMENTATION_HEAD)
            .into_iter()
            .map(|(k, s, _)| (smp_key(&k), s))
            .collect();
        let mut theirs: Vec<(String, Vec<usize>)> = g["models"][name]["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_str().unwrap().to_string(), usizes(&e[1])))
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}: tensors differ from smp's state_dict");
        assert_eq!(
            count_params(&model).0 as u64,
            g["models"][name]["params"].as_u64().unwrap(),
            "{name}"
        );
        let prefix = format!("{}_", name.split('_').next().unwrap());
        for case in g["cases"].as_array().unwrap() {
            let case_name = case["name"].as_str().unwrap();
            if !case_name.starts_with(&prefix) {
                continue;
            }
            let shape = usizes(&case["input_shape"]);
            let x = det_input(
                case["input_name"].as_str().unwrap(),
                [shape[0], shape[1], shape[2], shape[3]],
                case["input_scale"].as_f64().unwrap(),
                &device,
            );
            // The folded copy differs from the trained one by f32 rounding only, which U-Net's
            // decoder amplifies with these weights: it gets twice the tolerance.
            for (label, m, factor) in [
                ("trained", model.clone(), 1.0),
                ("folded", model.folded_for_inference(), 2.0),
            ] {
                let out = m.forward(x.clone());
                assert_eq!(
                    out.dims().to_vec(),
                    usizes(&case["output_shape"]),
                    "{case_name}"
                );
                let err = rel_err(&values(out), &floats(&case["logits"]));
                let tol = case["tolerance"].as_f64().unwrap() * device_tolerance_factor() * factor;
                eprintln!("{case_name} ({label}): rel err {err:.2e} (tolerance {tol:.1e})");
                assert!(err <= tol, "{case_name} ({label}): rel err {err} > {tol}");
            }
        }
    }
}

/// An input whose sides are not multiples of 32: U-Net resizes to each skip's exact size
/// (2×2 → 3×4 → 5×7 → 10×14 → 20×28) and ends at the input's size; its folded copy agrees.
#[test]
fn unet_handles_sizes_not_multiple_of_32() {
    let device = test_device();
    let model = det_segmenter(DecoderKind::Unet, 3, &device);
    let Decoder::Unet(unet) = &model.decoder else {
        panic!("a U-Net")
    };
    let x = det_input("unet_odd", [1, 3, 40, 56], 1.0, &device);
    let maps = model.backbone.feature_maps(x, &model.stages);
    let sizes: Vec<[usize; 4]> = maps.iter().map(|m| m.dims()).collect();
    assert_eq!(
        sizes,
        [
            [1, 64, 20, 28],
            [1, 64, 10, 14],
            [1, 128, 5, 7],
            [1, 256, 3, 4],
            [1, 512, 2, 2]
        ]
    );
    let out = unet.forward(maps.clone(), [40, 56]);
    assert_eq!(out.dims(), [1, 16, 40, 56]);
    let folded = unet.folded_for_inference().forward(maps, [40, 56]);
    let err = rel_err(&values(folded), &values(out));
    assert!(err <= 1e-4, "folded decoder: rel err {err}");
}

/// `F.interpolate(x, size, mode="nearest")`'s picks, from PyTorch 2.x.
#[test]
fn nearest_resize_picks_pytorchs_pixels() {
    let device = test_device();
    let ramp = |h: usize, w: usize| {
        let v: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        Tensor::<4>::from_data(TensorData::new(v, [1, 1, h, w]), &device)
    };
    let picks = |x: Tensor<4>, size: [usize; 2]| -> Vec<usize> {
        values(resize_nearest(x, size))
            .into_iter()
            .map(|v| v as usize)
            .collect()
    };
    // Rows 1×n → 1×m: the source column of each output column.
    assert_eq!(picks(ramp(1, 3), [1, 5]), [0, 0, 1, 1, 2]);
    assert_eq!(picks(ramp(1, 2), [1, 5]), [0, 0, 0, 1, 1]);
    assert_eq!(picks(ramp(1, 5), [1, 3]), [0, 1, 3]);
    assert_eq!(picks(ramp(1, 4), [1, 7]), [0, 0, 1, 1, 2, 2, 3]);
    // Columns, and both axes at once (2×2 → 3×4, 3×4 → 5×7 as in a 40×56 input).
    assert_eq!(picks(ramp(3, 1), [5, 1]), [0, 0, 1, 1, 2]);
    assert_eq!(
        picks(ramp(2, 2), [3, 4]),
        [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3]
    );
    let rows = [0, 0, 1, 1, 2];
    let cols = [0, 0, 1, 1, 2, 2, 3];
    let want: Vec<usize> = rows
        .iter()
        .flat_map(|r| cols.iter().map(move |c| r * 4 + c))
        .collect();
    assert_eq!(picks(ramp(3, 4), [5, 7]), want);
    // Exact doubling (the broadcast path) and the same size.
    assert_eq!(picks(ramp(1, 2), [2, 4]), [0, 0, 1, 1, 0, 0, 1, 1]);
    assert_eq!(picks(ramp(2, 3), [2, 3]), [0, 1, 2, 3, 4, 5]);
    // Doubling one axis only goes through the general path, and agrees with the broadcast.
    let x = ramp(3, 5);
    let a = picks(resize_nearest(x.clone(), [6, 5]), [6, 10]);
    let b = picks(x, [6, 10]);
    assert_eq!(a, b);
}

// ---------------------------------------------------------------- the task, end to end

use std::path::{Path, PathBuf};
use std::process::Command;

fn graft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graft"))
}

struct Scenes {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Scenes {
    fn new() -> Scenes {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write_scenes(&root.join("scenes"), 48, 16);
        write_weights(&root.join("tiny.safetensors"));
        Scenes { _tmp: tmp, root }
    }

    fn data(&self) -> String {
        format!("seg:{}", self.root.join("scenes").display())
    }

    fn fit(&self, run: &str, extra: &[&str]) -> std::process::Output {
        graft()
            .args([
                "fit",
                "--json",
                "--quiet",
                "--model",
                "resnet_tiny",
                "--data",
            ])
            .arg(self.data())
            .arg("--weights")
            .arg(self.root.join("tiny.safetensors"))
            .arg("--out")
            .arg(self.root.join(run))
            .args(["--batch-size", "8", "--lr", "0.003", "--seed", "1"])
            .args(extra)
            .output()
            .unwrap()
    }
}

/// Test mIoU of predicting background everywhere, the floor a model must beat.
fn all_background_miou(eval: &serde_json::Value) -> f64 {
    let confusion: Vec<Vec<f64>> = eval["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let total: f64 = confusion.iter().flatten().sum();
    let background: f64 = confusion[0].iter().sum();
    (background / total) / confusion.len() as f64
}

#[test]
fn every_strategy_beats_chance_and_eval_reports_the_metrics() {
    let s = Scenes::new();
    for strategy in ["frozen", "fine-tune", "partial:2", "scratch"] {
        let run = format!("run-{strategy}").replace(':', "-");
        let out = s.fit(&run, &["--strategy", strategy, "--epochs", "6"]);
        let j = json_line(&out);
        let eval: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(s.root.join(&run).join("eval.json")).unwrap(),
        )
        .unwrap();
        let floor = all_background_miou(&eval);
        let miou = eval["miou"].as_f64().unwrap();
        eprintln!("{strategy}: test mIoU {miou:.3} (all-background {floor:.3}), {j}");
        assert!(
            miou > floor + 0.1,
            "{strategy}: mIoU {miou} vs floor {floor}"
        );
        assert_eq!(j["test_miou"].as_f64().unwrap(), miou, "{strategy}");
    }
    // `graft eval --run R --json`: the documented fields, consistent with each other.
    let out = graft()
        .args(["eval", "--json", "--run"])
        .arg(s.root.join("run-fine-tune"))
        .output()
        .unwrap();
    let j = json_line(&out);
    let per_class: Vec<f64> = j["iou_per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_class.len(), 3);
    let mean = per_class.iter().sum::<f64>() / 3.0;
    assert!((j["miou"].as_f64().unwrap() - mean).abs() < 1e-12, "{j}");
    for key in ["pixel_accuracy", "dice"] {
        let v = j[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    // The report has the task's cards and the per-class section.
    let report = std::fs::read_to_string(s.root.join("run-fine-tune/report.html")).unwrap();
    assert!(report.contains("test mIoU") && report.contains("id=\"per-class-iou\""));
}

/// Metrics lines without their timings.
fn metrics_without_time(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.retain(|k, _| !k.contains("seconds") && !k.contains("time"));
            v
        })
        .collect()
}

/// Two epochs, stopped, resumed to four (U-Net, whose decoder has BatchNorms, and FPN, whose
/// dropout draws random masks): the same numbers as four epochs in one go.
#[test]
fn resumed_run_equals_the_uninterrupted_one() {
    let s = Scenes::new();
    for decoder in ["unet", "fpn"] {
        let whole = format!("whole-{decoder}");
        let parts = format!("parts-{decoder}");
        let args = [
            "--decoder",
            decoder,
            "--limit-train",
            "24",
            "--limit-test",
            "8",
        ];
        let all = [&args[..], &["--epochs", "4"]].concat();
        json_line(&s.fit(&whole, &all));
        let first = [&args[..], &["--epochs", "2"]].concat();
        json_line(&s.fit(&parts, &first));
        let out = graft()
            .args(["fit", "--json", "--quiet", "--epochs", "4", "--resume"])
            .arg(s.root.join(&parts))
            .output()
            .unwrap();
        let j = json_line(&out);
        assert_eq!(j["epochs"], 4, "{decoder}");
        assert_eq!(
            metrics_without_time(&s.root.join(&whole)),
            metrics_without_time(&s.root.join(&parts)),
            "{decoder}: resumed metrics differ"
        );
        let eval = |run: &str| std::fs::read_to_string(s.root.join(run).join("eval.json")).unwrap();
        assert_eq!(
            eval(&whole),
            eval(&parts),
            "{decoder}: resumed test evaluation differs"
        );
    }
}

/// What is wrong with a dataset is said before training, naming the file and the fix.
#[test]
fn malformed_masks_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        write_scenes(&dir, 4, 2);
        dir
    };
    let fit_error = |dir: &Path, extra: &[&str]| -> String {
        let out = graft()
            .args([
                "fit",
                "--quiet",
                "--model",
                "resnet_tiny",
                "--epochs",
                "1",
                "--data",
            ])
            .arg(format!("seg:{}", dir.display()))
            .arg("--out")
            .arg(tmp.path().join("run"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "must fail: {}", dir.display());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let masks = |dir: &Path| dir.join("train/masks");

    // A mask missing.
    let d = fresh("missing");
    std::fs::remove_file(masks(&d).join("0002.png")).unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("0002.png") && err.contains("has no mask"),
        "{err}"
    );

    // A mask of another size than its image.
    let d = fresh("size");
    image::GrayImage::new(16, 16)
        .save(masks(&d).join("0001.png"))
        .unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("0001.png") && err.contains("16x16") && err.contains("32x32"),
        "{err}"
    );

    // A class index beyond classes.txt (3 names: 0..2).
    let d = fresh("class");
    let mut m = image::GrayImage::new(SIDE, SIDE);
    m.put_pixel(5, 7, image::Luma([9]));
    m.save(masks(&d).join("0003.png")).unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("0003.png") && err.contains("(5, 7)") && err.contains("class 9"),
        "{err}"
    );

    // A colour-coded mask (RGB), the usual mistake.
    let d = fresh("rgb");
    image::RgbImage::new(SIDE, SIDE)
        .save(masks(&d).join("0000.png"))
        .unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("0000.png") && err.contains("8-bit gray"),
        "{err}"
    );

    // A mask that is not a PNG at all, and one without its image.
    let d = fresh("garbage");
    std::fs::write(masks(&d).join("0000.png"), b"not a png").unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("0000.png") && err.contains("not a readable PNG mask"),
        "{err}"
    );
    let d = fresh("orphan");
    image::GrayImage::new(SIDE, SIDE)
        .save(masks(&d).join("extra.png"))
        .unwrap();
    let err = fit_error(&d, &[]);
    assert!(
        err.contains("extra.png") && err.contains("has no image"),
        "{err}"
    );

    // Settings that do not apply to segmentation say what does.
    let d = fresh("settings");
    let err = fit_error(&d, &["--image-size", "40"]);
    assert!(
        err.contains("multiple of 32") && err.contains("try 64"),
        "{err}"
    );
    let err = fit_error(&d, &["--strategy", "linear-probe"]);
    assert!(err.contains("frozen"), "{err}");
    let err = fit_error(&d, &["--strategy", "frozen"]);
    assert!(err.contains("--weights"), "{err}");
    let err = fit_error(&d, &["--loss", "mse"]);
    assert!(err.contains("dice"), "{err}");
}

/// A palette PNG (as VOC's SegmentationClass files are) whose indices are `values`; the palette
/// maps index 15 (person) to VOC's colour (192, 128, 128), which must not be what is read.
fn write_palette_mask(path: &Path, values: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIDE, SIDE);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    let mut palette = vec![0u8; 256 * 3];
    palette[15 * 3..15 * 3 + 3].copy_from_slice(&[192, 128, 128]);
    palette[255 * 3..].copy_from_slice(&[224, 224, 192]);
    enc.set_palette(palette);
    enc.write_header()
        .unwrap()
        .write_image_data(values)
        .unwrap();
}

#[test]
fn voc_layout_reads_palette_indices() {
    use graft::task::segmentation::data::{SegDataset, read_mask};
    let tmp = tempfile::tempdir().unwrap();
    let voc = tmp.path().join("VOC2012");
    for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(voc.join(d)).unwrap();
    }
    let mut lists = (String::new(), String::new());
    for i in 0..6 {
        let (rgb, mask) = scene(i);
        let name = format!("2007_{i:06}");
        image::RgbImage::from_raw(SIDE, SIDE, rgb)
            .unwrap()
            .save(voc.join("JPEGImages").join(format!("{name}.jpg")))
            .unwrap();
        // Squares are people (15), discs' borders 255 (ignored), as VOC marks object borders.
        let values: Vec<u8> = mask.iter().map(|&c| [0, 15, 255][c as usize]).collect();
        write_palette_mask(
            &voc.join("SegmentationClass").join(format!("{name}.png")),
            &values,
        );
        let list = if i < 4 { &mut lists.0 } else { &mut lists.1 };
        list.push_str(&format!("{name}\n"));
    }
    std::fs::write(voc.join("ImageSets/Segmentation/train.txt"), &lists.0).unwrap();
    std::fs::write(voc.join("ImageSets/Segmentation/val.txt"), &lists.1).unwrap();
    let spec = format!("voc:{}", voc.display());
    let ds = SegDataset::open(&spec).unwrap();
    assert_eq!(ds.class_names.len(), 21);
    assert_eq!(ds.class_names[15], "person");
    assert_eq!((ds.train.len(), ds.test.len()), (4, 2));
    let m = read_mask(&ds.train[0].mask).unwrap();
    let (_, truth) = scene(0);
    let want: Vec<u8> = truth.iter().map(|&c| [0, 15, 255][c as usize]).collect();
    assert_eq!(m.values, want, "palette indices, not colours");
    // A list naming an image that is not there is an error naming the list and the file.
    std::fs::write(
        voc.join("ImageSets/Segmentation/val.txt"),
        "2007_000004\nnope\n",
    )
    .unwrap();
    let err = SegDataset::open(&spec).unwrap_err().to_string();
    assert!(
        err.contains("val.txt") && err.contains("line 2") && err.contains("nope.jpg"),
        "{err}"
    );
}
