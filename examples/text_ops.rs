//! Where a BERT forward pass spends its time on the CPU: each op of one encoder layer at
//! all-MiniLM-L6-v2's sizes (batch 32, 128 tokens, hidden 384, 12 heads, intermediate 1536),
//! timed alone (`-- FILTER` to time only the ops whose name contains FILTER), graft's kernels and burn's ops side by side (`cargo run --release --example
//! text_ops`). Compare the GEMM rows with `torch.nn.functional.linear` on the same shapes.

use std::time::Instant;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Tensor};
use graft::kernels;

/// Times `f` unless the command line names a filter (`text_ops attention`) that `name` lacks.
fn time<T>(name: &str, flops: f64, mut f: impl FnMut() -> T) {
    if let Some(filter) = std::env::args().nth(1)
        && !name.contains(&filter)
    {
        return;
    }
    let _ = f();
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        let _ = f();
    }
    let s = t.elapsed().as_secs_f64() / n as f64;
    let rate = if flops > 0.0 {
        format!("{:>8.1} GFLOP/s", flops / s / 1e9)
    } else {
        String::new()
    };
    println!("{name:<40} {:>8.2} ms {rate}", s * 1e3);
}

fn main() {
    let d = Device::flex();
    let (b, s, h, heads, inter) = (32usize, 128usize, 384usize, 12usize, 1536usize);
    let tokens = b * s;
    let normal = |shape: [usize; 2], std: f64| {
        Tensor::<2>::random(shape, Distribution::Normal(0.0, std), &d)
    };
    let x = normal([tokens, h], 1.0);
    let xi = normal([tokens, inter], 1.0);
    let (w, wi, wo) = (
        normal([h, h], 0.02),
        normal([inter, h], 0.02),
        normal([h, inter], 0.02),
    );
    let (bh, bi) = (Tensor::<1>::zeros([h], &d), Tensor::<1>::zeros([inter], &d));
    for (name, x, w, b) in [
        ("384 -> 384 (q, k, v, attention out)", &x, &w, &bh),
        ("384 -> 1536 (intermediate)", &x, &wi, &bi),
        ("1536 -> 384 (output)", &xi, &wo, &bh),
    ] {
        let [n, k] = w.dims();
        let flops = 2.0 * (tokens * n * k) as f64;
        time(&format!("graft linear {name}"), flops, || {
            kernels::linear(x.clone(), w.clone(), b.clone()).into_data()
        });
        time(&format!("burn matmul {name}"), flops, || {
            (x.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze::<2>()).into_data()
        });
    }
    time("graft gelu (4096x1536)", 0.0, || {
        kernels::gelu(xi.clone()).into_data()
    });
    time("burn gelu (4096x1536)", 0.0, || {
        gelu(xi.clone()).into_data()
    });
    let g = Tensor::<1>::ones([h], &d);
    time("graft layer_norm (4096x384)", 0.0, || {
        kernels::layer_norm(x.clone(), g.clone(), bh.clone(), 1e-12).into_data()
    });
    time("burn layer_norm (4096x384)", 0.0, || {
        burn::tensor::module::layer_norm(x.clone(), g.clone(), Some(bh.clone()), 1e-12).into_data()
    });
    let q = x.clone().reshape([b, s, h]);
    let mask = Tensor::<2>::zeros([b, s], &d);
    let attention_flops = 2.0 * (b * heads * s * s * (h / heads)) as f64;
    time("graft attention probs", attention_flops, || {
        kernels::attention_probs(q.clone(), q.clone(), mask.clone(), heads).into_data()
    });
    let p = kernels::attention_probs(q.clone(), q.clone(), mask.clone(), heads);
    time("graft attention context", attention_flops, || {
        kernels::attention_context(p.clone(), q.clone(), heads).into_data()
    });
    let split = |t: Tensor<3>| t.reshape([b, s, heads, h / heads]).swap_dims(1, 2);
    time("burn split + q k^T + softmax", attention_flops, || {
        let scores = split(q.clone()).matmul(split(q.clone()).swap_dims(2, 3));
        softmax(scores, 3).into_data()
    });
    time("burn p v + merge", attention_flops, || {
        p.clone()
            .matmul(split(q.clone()))
            .swap_dims(1, 2)
            .reshape([b, s, h])
            .into_data()
    });
}
