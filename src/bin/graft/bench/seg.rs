//! `graft bench seg-step`: one training step of the segmentation model, the case
//! tools/seg_reference_bench.py times in PyTorch with segmentation_models_pytorch.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use graft::model::layers::{resize_bilinear_aligned, upsample_nearest2};
use graft::model::params::{Strictness, load_into};
use graft::model::segmenter::{Decoder, DecoderKind, SIZE_MULTIPLE};
use graft::model::{Classifier, Segmenter, preset};
use graft::optim::{Grads, Optimizer, OptimizerConfig, OptimizerKind};
use graft::task::segmentation::loss::SegLoss;
use graft::tensor::to_vec;
use graft::weights::load_pretrained;
use serde_json::{Value, json};

use super::{BenchArgs, emit, median, round, timed};

/// `seg-step`: `Segmenter` (backbone → FPN decoder → 1×1 head → bilinear ×4 = smp's
/// `FPN(encoder, classes)`; `--decoder unet` = smp's `Unet`) in training mode (BatchNorm on
/// batch statistics, FPN's Dropout2d on), the segmentation loss (ce+dice by default, pixels
/// marked 255 ignored), backward, Adam lr 1e-3 on every parameter. Random backbone unless
/// `--weights` (the reference's smp encoders are random too: the time does not depend on the
/// values). Random images; masks `(i * 7 + i / w) % classes` over the flat (n, h, w) index `i`,
/// every 23rd pixel 255, as the reference builds them.
///
/// Besides the step's median (3 warm-ups, `--iters` steps), the JSON has the median of each
/// phase over `--iters` more steps that wait after each: forward + loss (read back), backward,
/// gradients gathered by key, the optimizer step. `--parts` and `--ops` add finer splits (see
/// [`parts`] and [`fpn_ops`]).
pub(super) fn seg_step(a: &BenchArgs, threads: usize) -> Result<()> {
    let device = a.device.device()?;
    device.seed(0);
    let p = preset(&a.model)?;
    let s = a.image_size;
    if s == 0 || !s.is_multiple_of(SIZE_MULTIPLE) {
        bail!("seg-step: --image-size must be a multiple of {SIZE_MULTIPLE}");
    }
    if a.ops && a.decoder != DecoderKind::Fpn {
        bail!("seg-step --ops: FPN only (--decoder fpn)");
    }
    let model = match a.weights.as_deref() {
        None | Some("none") => Segmenter::new(p, a.decoder, a.classes, &device),
        Some(w) => {
            let map = load_pretrained(std::path::Path::new(w))?;
            let (c, _) = load_into(
                Classifier::new(p, 1, &device),
                &map,
                p.head_name,
                Strictness::SkipHead,
            )?;
            Segmenter::with_backbone(c.backbone, p.arch, a.decoder, a.classes, &device)
        }
    };
    let mut model = model.train();
    let ad = device.clone().autodiff();
    let loss = SegLoss {
        choice: a.loss,
        class_weights: None,
        focal_gamma: 2.0,
    };
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: OptimizerKind::Adam,
        ..Default::default()
    });
    let b = a.batch_size;
    let x = Tensor::<4>::random([b, 3, s, s], Distribution::Normal(0.0, 1.0), &ad);
    let masks: Vec<u8> = (0..b * s * s)
        .map(|i| {
            if i % 23 == 0 {
                255
            } else {
                ((i * 7 + i / s) % a.classes) as u8
            }
        })
        .collect();
    let lr = 1e-3;
    let t = timed(3, a.iters, || {
        let l = loss.forward(model.forward(x.clone()), &masks);
        let mut g = Grads::default();
        g.accumulate(&model, &mut l.backward());
        model = opt.step(model.clone(), &g, &|_| lr);
        // Wait for the step to finish (backends may be asynchronous).
        let _ = to_vec(model.head.weight.val());
    });
    // The phases, each waited for.
    let mut phases = [const { Vec::new() }; 4];
    for _ in 0..a.iters.max(1) {
        let t0 = Instant::now();
        let l = loss.forward(model.forward(x.clone()), &masks);
        let _ = to_vec(l.clone().detach());
        let t1 = Instant::now();
        let mut grads = l.backward();
        let t2 = Instant::now();
        let mut g = Grads::default();
        g.accumulate(&model, &mut grads);
        let t3 = Instant::now();
        model = opt.step(model.clone(), &g, &|_| lr);
        let _ = to_vec(model.head.weight.val());
        let t4 = Instant::now();
        for (k, (u, v)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]
            .into_iter()
            .enumerate()
        {
            phases[k].push((v - u).as_secs_f64() * 1e3);
        }
    }
    let [fwd, bwd, gather, step] = phases.map(|v| round(median(v), 2));
    let by_part = if a.parts {
        parts(&model, &x, &loss, &masks, a.iters)
    } else {
        Value::Null
    };
    let by_op = if a.ops {
        fpn_ops(&model, &x, &masks, a.iters)?
    } else {
        Value::Null
    };
    emit(
        json!({"bench": "seg-step", "model": a.model, "decoder": a.decoder.to_string(),
        "image_size": s, "batch_size": b, "classes": a.classes, "loss": a.loss.to_string(),
        "ms_per_step": round(t * 1e3, 2), "images_per_s": round(b as f64 / t, 1),
        "forward_loss_ms": fwd, "backward_ms": bwd, "grads_ms": gather, "optimizer_ms": step,
        "parts": by_part, "ops": by_op, "threads": threads, "device": a.device.to_string()}),
    );
    Ok(())
}

/// Forward and backward times of `f`'s scalar, medians over `iters` runs after 2 warm-ups.
fn forward_backward(iters: usize, f: &dyn Fn() -> Tensor<1>) -> (f64, f64) {
    let (mut fw, mut bw) = (Vec::new(), Vec::new());
    for i in 0..iters.max(1) + 2 {
        let t0 = Instant::now();
        let l = f();
        let _ = to_vec(l.clone().detach());
        let t1 = Instant::now();
        drop(l.backward());
        let t2 = Instant::now();
        if i >= 2 {
            fw.push((t1 - t0).as_secs_f64() * 1e3);
            bw.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    (median(fw), median(bw))
}

/// A copy of `t` as a fresh leaf of the autodiff graph (layout kept).
fn leaf(t: &Tensor<4>) -> Tensor<4> {
    t.clone().detach().require_grad()
}

/// `--parts`: each part of the step alone, its input a fresh leaf, its output summed for the
/// backward pass (the loss: its own value): the backbone (the maps the decoder reads), the
/// decoder, the head (FPN: the 1×1 convolution and the bilinear ×4), the loss. The same parts
/// as tools/seg_reference_bench.py's.
fn parts(model: &Segmenter, x: &Tensor<4>, loss: &SegLoss, masks: &[u8], iters: usize) -> Value {
    let [_, _, h, w] = x.dims();
    let decode = |maps: Vec<Tensor<4>>| match &model.decoder {
        Decoder::Fpn(fpn) => fpn.forward(maps),
        Decoder::Unet(unet) => unet.forward(maps, [h, w]),
    };
    let head = |d: Tensor<4>| match &model.decoder {
        Decoder::Fpn(_) => resize_bilinear_aligned(model.head.forward(d), [h, w]),
        Decoder::Unet(_) => model.head.forward(d),
    };
    let mut out = serde_json::Map::new();
    let mut part = |name: &str, f: &dyn Fn() -> Tensor<1>| {
        let (fw, bw) = forward_backward(iters, f);
        out.insert(
            name.to_string(),
            json!({"forward_ms": round(fw, 2), "backward_ms": round(bw, 2)}),
        );
    };
    let sum = |maps: Vec<Tensor<4>>| {
        maps.into_iter()
            .map(|m| m.sum())
            .reduce(|a, b| a + b)
            .expect("maps")
    };
    part("backbone", &|| {
        sum(model.backbone.feature_maps(x.clone(), &model.stages))
    });
    let maps = model.backbone.feature_maps(x.clone(), &model.stages);
    let leaves: Vec<Tensor<4>> = maps.iter().map(leaf).collect();
    part("decoder", &|| decode(leaves.clone()).sum());
    let decoded = leaf(&decode(leaves.clone()));
    part("head", &|| head(decoded.clone()).sum());
    let logits = leaf(&model.forward(x.clone()));
    part("loss", &|| loss.forward(logits.clone(), masks));
    Value::Object(out)
}

/// Forward and backward times per kind of operation, summed over its calls.
#[derive(Default)]
struct OpTimes(Vec<(&'static str, usize, Vec<f64>, Vec<f64>)>);

impl OpTimes {
    /// Runs `f` on fresh leaves of `inputs` (`iters` times after 2 warm-ups; the backward pass
    /// of its output's sum), adds the medians under `name`; returns its output, detached.
    fn run(
        &mut self,
        name: &'static str,
        iters: usize,
        inputs: &[&Tensor<4>],
        f: &dyn Fn(Vec<Tensor<4>>) -> Tensor<4>,
    ) -> Tensor<4> {
        let leaves: Vec<Tensor<4>> = inputs.iter().map(|t| leaf(t)).collect();
        let (fw, bw) = forward_backward(iters, &|| f(leaves.clone()).sum());
        let k = match self.0.iter().position(|(n, ..)| *n == name) {
            Some(k) => k,
            None => {
                self.0.push((name, 0, Vec::new(), Vec::new()));
                self.0.len() - 1
            }
        };
        let entry = &mut self.0[k];
        entry.1 += 1;
        entry.2.push(fw);
        entry.3.push(bw);
        f(leaves).detach()
    }

    fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, calls, fw, bw) in &self.0 {
            out.insert(
                name.to_string(),
                json!({"calls": calls, "forward_ms": round(fw.iter().sum(), 2),
                    "backward_ms": round(bw.iter().sum(), 2)}),
            );
        }
        Value::Object(out)
    }
}

/// `--ops` (FPN only): every operation of the decoder, the head and the loss alone at the
/// step's shapes, on its real inputs (layout included: graft's backbone hands channels-last
/// maps over) made fresh leaves; per kind of operation the summed medians of forward and of
/// backward (of the output's sum). tools/seg_reference_bench.py `--ops` walks smp's FPNDecoder
/// the same way.
fn fpn_ops(model: &Segmenter, x: &Tensor<4>, masks: &[u8], iters: usize) -> Result<Value> {
    let Decoder::Fpn(fpn) = &model.decoder else {
        bail!("seg-step --ops: FPN only");
    };
    let [_, _, h, w] = x.dims();
    let mut ops = OpTimes::default();
    let maps = model.backbone.feature_maps(x.clone(), &model.stages);
    let [c2, c3, c4, c5]: [Tensor<4>; 4] = maps.try_into().expect("four maps");
    let mut p = ops.run("conv1x1 (lateral)", iters, &[&c5], &|v| {
        fpn.p5.forward(v[0].clone())
    });
    let mut pyramid = vec![p.clone()];
    for (block, skip) in [(&fpn.p4, &c4), (&fpn.p3, &c3), (&fpn.p2, &c2)] {
        let up = ops.run("upsample nearest x2", iters, &[&p], &|v| {
            upsample_nearest2(v[0].clone())
        });
        let lateral = ops.run("conv1x1 (lateral)", iters, &[skip], &|v| {
            block.skip_conv.forward(v[0].clone())
        });
        p = ops.run("add", iters, &[&up, &lateral], &|v| {
            v[0].clone() + v[1].clone()
        });
        pyramid.push(p.clone());
    }
    let mut merged: Option<Tensor<4>> = None;
    for (seg, level) in fpn.seg_blocks.iter().zip(pyramid) {
        let mut y = level;
        for cgr in &seg.block {
            y = ops.run("conv3x3", iters, &[&y], &|v| cgr.conv.forward(v[0].clone()));
            y = ops.run("groupnorm", iters, &[&y], &|v| {
                cgr.norm.forward(v[0].clone())
            });
            y = ops.run("relu", iters, &[&y], &|v| {
                burn::tensor::activation::relu(v[0].clone())
            });
            if cgr.upsample {
                let [_, _, yh, yw] = y.dims();
                y = ops.run("bilinear x2", iters, &[&y], &|v| {
                    resize_bilinear_aligned(v[0].clone(), [2 * yh, 2 * yw])
                });
            }
        }
        merged = Some(match merged {
            None => y,
            Some(m) => ops.run("add", iters, &[&m, &y], &|v| v[0].clone() + v[1].clone()),
        });
    }
    let merged = merged.expect("four levels");
    let dropped = ops.run("dropout2d", iters, &[&merged], &|v| {
        fpn.dropout.forward(v[0].clone())
    });
    let logits = ops.run("conv1x1 (head)", iters, &[&dropped], &|v| {
        model.head.forward(v[0].clone())
    });
    let logits = ops.run("bilinear x4 (head)", iters, &[&logits], &|v| {
        resize_bilinear_aligned(v[0].clone(), [h, w])
    });
    let mut out = match ops.json() {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    };
    for (name, choice) in [
        ("loss ce", graft::loss::LossChoice::CrossEntropy),
        ("loss dice", graft::loss::LossChoice::Dice),
    ] {
        let loss = SegLoss {
            choice,
            class_weights: None,
            focal_gamma: 2.0,
        };
        let l = leaf(&logits);
        let (fw, bw) = forward_backward(iters, &|| loss.forward(l.clone(), masks));
        out.insert(
            name.into(),
            json!({"calls": 1, "forward_ms": round(fw, 2), "backward_ms": round(bw, 2)}),
        );
    }
    Ok(Value::Object(out))
}
