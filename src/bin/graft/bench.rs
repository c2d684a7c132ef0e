//! `graft bench`: the same cases, flags and JSON fields as `../shared/bench/pytorch_reference.py`,
//! so the two can run side by side and be compared by ratio (scripts/bench-vs-pytorch.sh).

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor};
use clap::Args;
use graft::config::{FitConfig, Strategy};
use graft::data::{Augment, Resize};
use graft::loss::{Loss, LossKind};
use graft::model::params::{Strictness, load_into};
use graft::model::{Classifier, preset};
use graft::optim::{Grads, Optimizer, OptimizerConfig, OptimizerKind};
use graft::task::image_classification::ImageClassification;
use graft::tensor::to_vec;
use graft::train::{FitOptions, fit_on};
use graft::weights::load_pretrained;
use serde_json::json;

mod seg;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// train-step | infer | linear-probe | fine-tune | loader (decode + augment only) |
    /// text-infer | text-step (a text model folder as --weights) | seg-step (one training step of
    /// a segmenter, FPN by default; tools/seg_reference_bench.py is its PyTorch reference)
    bench: String,
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// Weights file; `none` for random init [default: random for resnet18, the cached
    /// EfficientNet-Lite0 weights for efficientnet_lite0].
    #[arg(long)]
    weights: Option<String>,
    /// fashion-mnist | cifar10 (with --data-dir) | any graft dataset spec
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    #[arg(long)]
    data_dir: Option<String>,
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 0)]
    limit_train: usize,
    #[arg(long, default_value_t = 0)]
    limit_test: usize,
    /// Tokens per text (text-infer, text-step).
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Classes per pixel (seg-step).
    #[arg(long, default_value_t = 11)]
    classes: usize,
    /// The segmentation decoder (seg-step): fpn | unet.
    #[arg(long, default_value = "fpn")]
    decoder: graft::model::segmenter::DecoderKind,
    /// The segmentation loss (seg-step): ce | dice | ce+dice.
    #[arg(long, default_value = "ce+dice")]
    loss: graft::loss::LossChoice,
    /// seg-step: also time the model's parts alone, forward and backward (backbone, decoder,
    /// head with the upsampling, loss), as the reference's `--parts` does.
    #[arg(long)]
    parts: bool,
    /// seg-step (FPN): also time every operation of the decoder, head and loss alone, summed
    /// per kind (conv3x3, groupnorm, bilinear x2, ...), as the reference's `--ops` does.
    #[arg(long)]
    ops: bool,
    /// cpu | vulkan | wgpu | cuda (see the README's GPU section).
    #[arg(long, default_value = "cpu")]
    device: graft::tensor::DeviceKind,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(warm: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    median(
        (0..iters.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn default_weights(model: &str) -> String {
    if model == "efficientnet_lite0" {
        ".cache/assets/efficientnet-lite0-57934424.pth".into()
    } else {
        "none".into()
    }
}

fn model_for(a: &BenchArgs, device: &Device) -> Result<Classifier> {
    let p = preset(&a.model)?;
    let weights = a
        .weights
        .clone()
        .unwrap_or_else(|| default_weights(&a.model));
    let model = Classifier::new(p, 10, device);
    if weights == "none" {
        return Ok(model);
    }
    let map = load_pretrained(std::path::Path::new(&weights))?;
    Ok(load_into(model, &map, p.head_name, Strictness::SkipHead)?.0)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let device = a.device.device()?;
    device.seed(0);
    let threads = rayon::current_num_threads();
    match a.bench.as_str() {
        "train-step" => {
            let ad = device.clone().autodiff();
            let mut model = model_for(&a, &device)?.train();
            let mut opt = Optimizer::new(OptimizerConfig {
                kind: OptimizerKind::Sgd,
                momentum: 0.9,
                weight_decay: 5e-4,
                ..Default::default()
            });
            let loss = Loss {
                kind: LossKind::CrossEntropy {
                    label_smoothing: 0.0,
                },
                class_weights: None,
            };
            let s = a.image_size;
            let x =
                Tensor::<4>::random([a.batch_size, 3, s, s], Distribution::Normal(0.0, 1.0), &ad);
            let y = Tensor::<1, Int>::random([a.batch_size], Distribution::Uniform(0.0, 10.0), &ad);
            let t = timed(3, a.iters, || {
                let l = loss.forward(model.forward(x.clone()), y.clone());
                let mut g = Grads::default();
                g.accumulate(&model, &mut l.backward());
                model = opt.step(model.clone(), &g, &|_| 0.001);
                // Wait for the step to finish (backends may be asynchronous).
                let _ = to_vec(model.head.bias.val());
            });
            emit(
                json!({"bench": "train-step", "model": a.model, "image_size": s, "batch_size": a.batch_size,
                "ms_per_step": round(t * 1e3, 2), "images_per_s": round(a.batch_size as f64 / t, 1), "threads": threads, "device": a.device.to_string()}),
            );
        }
        "infer" => {
            // What graft runs for a frozen backbone: BatchNorm folded into the convolutions.
            let model = model_for(&a, &device)?.folded_for_inference();
            let s = a.image_size;
            let x = Tensor::<4>::random(
                [a.batch_size, 3, s, s],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let t = timed(2, a.iters, || {
                let _ = to_vec(model.forward_features(x.clone()));
            });
            emit(
                json!({"bench": "infer", "model": a.model, "image_size": s, "batch_size": a.batch_size,
                "ms_per_batch": round(t * 1e3, 2), "images_per_s": round(a.batch_size as f64 / t, 1), "threads": threads, "device": a.device.to_string()}),
            );
        }
        "linear-probe" | "fine-tune" => {
            let probe = a.bench == "linear-probe";
            let data = match (a.data.as_str(), &a.data_dir) {
                ("cifar10", Some(d)) => format!("cifar10:{d}"),
                ("cifar10", None) => bail!("--data cifar10 needs --data-dir"),
                ("fashion-mnist", Some(d)) => format!("idx:{d}"),
                (spec, _) => spec.to_string(),
            };
            let out = std::env::temp_dir().join(format!("graft-bench-{}", std::process::id()));
            let cfg = FitConfig {
                model: a.model.clone(),
                weights: a
                    .weights
                    .clone()
                    .unwrap_or_else(|| default_weights(&a.model)),
                data,
                strategy: if probe {
                    Strategy::LinearProbe
                } else {
                    Strategy::FineTune
                },
                // The reference: probe = Adam 1e-3, batches of 256 on cached features (graft's
                // `--probe sgd`: the same work; the default L-BFGS probe is another algorithm);
                // fine-tune = SGD(lr, momentum 0.9, wd 5e-4), crop+flip; --epochs for both.
                probe: graft::linear_model::ProbeSolver::Sgd,
                optimizer: if probe {
                    OptimizerKind::Adam
                } else {
                    OptimizerKind::Sgd
                },
                lr: if probe { 1e-3 } else { a.lr },
                momentum: 0.9,
                weight_decay: if probe { 0.0 } else { 5e-4 },
                epochs: a.epochs,
                batch_size: if probe { 256 } else { a.batch_size },
                image_size: Some(a.image_size),
                resize: Resize::Exact,
                augment: Augment {
                    crop: !probe,
                    flip: !probe,
                },
                val_split: 0.0,
                // The reference keeps the weights' BatchNorm momentum (0.01 for EfficientNet-Lite,
                // 0.1 for torchvision ResNets): same settings, same numbers.
                bn_momentum: if a.model.starts_with("efficientnet") {
                    0.01
                } else {
                    0.1
                },
                limit_train: None,
                limit_test: None,
                device: a.device,
                out: Some(out.clone()),
                // A fresh cache: the reference extracts features in every run, so must we.
                cache_dir: Some(out.join("cache")),
                ..FitConfig::default()
            };
            let t = Instant::now();
            // The reference limits by taking the first N samples (not a stratified subset):
            // the same images here, so the accuracies compare.
            let mut ds = graft::data::open(&cfg.data)?;
            let first = |n: usize, len: usize| -> Vec<usize> { (0..n.min(len)).collect() };
            if a.limit_train > 0 {
                ds.train = ds.train.select(&first(a.limit_train, ds.train.len()));
            }
            if a.limit_test > 0 {
                ds.test = ds.test.select(&first(a.limit_test, ds.test.len()));
            }
            let opts = FitOptions {
                quiet: true,
                ..FitOptions::default()
            };
            let s = fit_on::<ImageClassification>(&cfg, &opts, ds)?;
            let total = t.elapsed().as_secs_f64();
            let _ = std::fs::remove_dir_all(&out);
            emit(
                json!({"bench": a.bench, "model": a.model, "data": a.data, "image_size": a.image_size,
                "epochs": s.epochs, "batch_size": cfg.batch_size, "test_accuracy": round(s.score("test_accuracy").unwrap_or(f64::NAN), 4),
                "total_seconds": round(total, 1), "threads": threads, "device": a.device.to_string()}),
            );
        }
        "loader" => loader(&a)?,
        "text-infer" | "text-step" => text(&a, threads)?,
        "seg-step" => seg::seg_step(&a, threads)?,
        other => {
            bail!(
                "unknown bench `{other}` (train-step, infer, linear-probe, fine-tune, loader, \
                 text-infer, text-step, seg-step)"
            )
        }
    }
    Ok(())
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Prints one result line, noting whether graft's kernels or burn's stock ops ran.
fn emit(mut v: serde_json::Value) {
    v["kernels"] = json!(if graft::kernels::enabled() {
        "graft"
    } else {
        "burn"
    });
    println!("{v}");
}

/// Decode + augment throughput of the training loader (no model): one epoch over the training
/// split with the seeds' transforms (resize to --image-size, random crop with padding, flip,
/// normalise), `--iters` epochs, median.
fn loader(a: &BenchArgs) -> Result<()> {
    use graft::data::{Augment, Loader, Pipeline, Sampler};
    let mut ds = graft::data::open(&a.data)?;
    if a.limit_train > 0 {
        ds = ds.limit_train(a.limit_train, 0);
    }
    let p = preset(&a.model)?;
    let pipe = Pipeline::train(
        a.image_size,
        p.mean,
        p.std,
        Augment {
            crop: true,
            flip: true,
        },
        a.image_size / 8,
    )?;
    let n = ds.train.len();
    let mut batches = 0usize;
    let mut epoch = 0u64;
    let t = timed(1, a.iters, || {
        batches = 0;
        for b in Loader::new(
            ds.train.clone(),
            pipe.clone(),
            a.batch_size,
            Sampler::Shuffle,
            0,
            epoch,
        ) {
            if b.is_ok() {
                batches += 1;
            }
        }
        epoch += 1;
    });
    emit(
        json!({"bench": "loader", "data": a.data, "image_size": a.image_size, "batch_size": a.batch_size,
        "images": n, "batches_per_s": round(batches as f64 / t, 1), "images_per_s": round(n as f64 / t, 1),
        "threads": rayon::current_num_threads()}),
    );
    Ok(())
}

/// `text-infer` / `text-step`: the same cases as tools/text_reference.py — random ids (seeded),
/// every token attended to; the encoder's forward pass + mean pooling, or one AdamW step of
/// encoder and linear head.
fn text(a: &BenchArgs, threads: usize) -> Result<()> {
    use burn::tensor::TensorData;
    use graft::model::text_encoder::{EncoderFolder, Pooling, TextClassifier};
    let Some(dir) = &a.weights else {
        bail!("{} needs --weights MODEL_DIR", a.bench);
    };
    let folder = EncoderFolder::read(std::path::Path::new(dir))?;
    let device = a.device.device()?;
    device.seed(0);
    let mut model = TextClassifier::new(folder.config, 8, Pooling::Mean, &device);
    if let Some(w) = &folder.weights {
        let map = graft::task::text_classification::encoder_weights(w)?;
        model = load_into(model, &map, "classifier", Strictness::SkipHead)?.0;
    }
    let (b, s) = (a.batch_size, a.seq_len);
    let vocab = folder.config.vocab_size as i64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<i64> = (0..b * s)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1000 + ((state >> 33) as i64) % (vocab - 1000).max(1)
        })
        .collect();
    let make = |d: &Device| {
        (
            Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), d),
            Tensor::<2, Int>::zeros([b, s], d),
            Tensor::<2>::ones([b, s], d),
        )
    };
    let t = if a.bench == "text-infer" {
        let model = model.valid();
        let (ids, types, mask) = make(&device);
        timed(1, a.iters, || {
            let _ = to_vec(model.features(ids.clone(), types.clone(), mask.clone()));
        })
    } else {
        let ad = device.clone().autodiff();
        let mut model = model.train();
        let (ids, types, mask) = make(&ad);
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new((0..b as i64).map(|i| i % 8).collect::<Vec<_>>(), [b]),
            &ad,
        );
        let loss = Loss {
            kind: LossKind::CrossEntropy {
                label_smoothing: 0.0,
            },
            class_weights: None,
        };
        let mut opt = Optimizer::new(OptimizerConfig {
            kind: OptimizerKind::AdamW,
            weight_decay: 0.01,
            ..Default::default()
        });
        timed(1, a.iters, || {
            let l = loss.forward(
                model.forward(ids.clone(), types.clone(), mask.clone()),
                labels.clone(),
            );
            let mut g = Grads::default();
            g.accumulate(&model, &mut l.backward());
            model = opt.step(model.clone(), &g, &|_| 5e-5);
            let _ = to_vec(model.head.bias.val());
        })
    };
    emit(
        json!({"bench": a.bench, "model": "bert", "batch_size": b, "seq_len": s,
        "ms_per_step": round(t * 1e3, 2), "texts_per_s": round(b as f64 / t, 1), "threads": threads, "device": a.device.to_string()}),
    );
    Ok(())
}
