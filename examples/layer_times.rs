//! Per-layer forward times of EfficientNet-Lite0's convolutions (inference kernels, channels-last,
//! BatchNorm folded: bias + ReLU6), for profiling the linear probe's feature extraction.
//!
//! ```sh
//! cargo run --release --example layer_times -- 64        # batch size (default 64), 64 px input
//! ONLY=expand REPS=50 cargo run --release --example layer_times
//! ```
//! Each layer runs alone on synthetic data (medians of `REPS` runs). Run it with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4000000000`
//! to keep freed memory in the process as it is in a real run: otherwise the layers' fresh
//! outputs are page-faulted on every call, which a whole network does not see.
use std::time::Instant;

use graft::kernels::Activation;
use graft::kernels::channels_last::{conv2d_forward, depthwise_forward};
use graft::kernels::conv::ConvGeometry;
use graft::model::efficientnet_lite::LITE0_STAGES;

/// TensorFlow "SAME" padding (before, after), as the EfficientNet-Lite weights expect.
fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let total = ((size.div_ceil(stride) - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

fn geometry(
    batch: usize,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    s: usize,
) -> ConvGeometry {
    let p = same_padding(hw, k, s);
    ConvGeometry {
        batch,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: [s, s],
        padding: [p, p],
        dilation: [1, 1],
    }
}

struct Layer {
    name: String,
    g: ConvGeometry,
    depthwise: bool,
}

/// The backbone's convolutions at a 64 px input, from the model's own stage table.
fn layers(batch: usize) -> Vec<Layer> {
    let layer = |name: String, g, depthwise| Layer { name, g, depthwise };
    let mut out = vec![layer(
        "stem".into(),
        geometry(batch, 3, 64, 32, 3, 2),
        false,
    )];
    let mut hw = 32;
    for (stage, &(repeats, k, stride, e, first_in, c_out)) in LITE0_STAGES.iter().enumerate() {
        for block in 0..repeats {
            let c_in = if block == 0 { first_in } else { c_out };
            let s = if block == 0 { stride } else { 1 };
            let mid = c_in * e;
            let at = format!("s{}b{block}", stage + 1);
            if e != 1 {
                let g = geometry(batch, c_in, hw, mid, 1, 1);
                out.push(layer(format!("{at} expand {c_in}→{mid} @{hw}"), g, false));
            }
            let g = geometry(batch, mid, hw, mid, k, s);
            out.push(layer(format!("{at} dw{k} s{s} {mid} @{hw}"), g, true));
            hw = hw.div_ceil(s);
            let g = geometry(batch, mid, hw, c_out, 1, 1);
            out.push(layer(format!("{at} project {mid}→{c_out} @{hw}"), g, false));
        }
    }
    out.push(layer(
        "head 320→1280".into(),
        geometry(batch, 320, hw, 1280, 1, 1),
        false,
    ));
    out
}

fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let only = std::env::var("ONLY").ok();
    let mut rows = Vec::new();
    for l in layers(batch) {
        if only.as_ref().is_some_and(|o| !l.name.contains(o.as_str())) {
            continue;
        }
        let g = &l.g;
        let x: Vec<f32> = (0..g.batch * g.h * g.w * g.c_in)
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        let w_len = if l.depthwise {
            g.c_in
        } else {
            g.c_in * g.c_out
        } * g.kh
            * g.kw;
        let (w, bias) = (vec![0.01f32; w_len], vec![0.1f32; g.c_out]);
        let run = || {
            let act = Activation::Relu6;
            if l.depthwise {
                depthwise_forward(g, &x, &w, Some(&bias), act)
            } else {
                conv2d_forward(g, &x, &w, Some(&bias), act)
            }
        };
        for _ in 0..3 {
            std::hint::black_box(run());
        }
        let mut times: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(run());
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        let (oh, ow) = g.out_hw();
        let per_output = if l.depthwise { 1 } else { g.c_in };
        let macs = g.batch * oh * ow * g.c_out * g.kh * g.kw * per_output;
        rows.push((l.name, t, 2.0 * macs as f64 / t / 1e9));
    }
    let total: f64 = rows.iter().map(|r| r.1).sum();
    for (name, t, gflops) in &rows {
        let share = 100.0 * t / total;
        println!(
            "{name:36} {:7.3} ms {share:5.1}% {gflops:6.1} GFLOP/s",
            t * 1e3
        );
    }
    let per_s = batch as f64 / total;
    println!(
        "total {:.2} ms per batch of {batch} → {per_s:.0} img/s (layers only)",
        total * 1e3
    );
}
