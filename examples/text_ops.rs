//! Where a BERT forward pass spends its time on the CPU: each op of one encoder layer at
//! all-MiniLM-L6-v2's sizes (batch 32, 128 tokens, hidden 384, 12 heads, intermediate 1536),
//! timed alone (`cargo run --release --example text_ops`).

use std::time::Instant;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Tensor};

fn time<T>(name: &str, flops: f64, mut f: impl FnMut() -> T) {
    let _ = f();
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        let _ = f();
    }
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:<28} {:>8.2} ms {:>8.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
}

fn main() {
    let d = Device::flex();
    let (b, s, h, heads, inter) = (32usize, 128usize, 384usize, 12usize, 1536usize);
    let x = Tensor::<2>::random([b * s, h], Distribution::Normal(0.0, 1.0), &d);
    let w = Tensor::<2>::random([h, h], Distribution::Normal(0.0, 0.02), &d);
    let wi = Tensor::<2>::random([inter, h], Distribution::Normal(0.0, 0.02), &d);
    let xi = Tensor::<2>::random([b * s, inter], Distribution::Normal(0.0, 1.0), &d);
    let to_vec = |t: Tensor<2>| t.into_data();
    time("x @ Wqkv^T (384x384)", 2.0 * (b * s * h * h) as f64, || {
        to_vec(x.clone().matmul(w.clone().transpose()))
    });
    time("x @ W (contiguous)", 2.0 * (b * s * h * h) as f64, || {
        to_vec(x.clone().matmul(w.clone()))
    });
    time(
        "x @ Wi^T (384x1536)",
        2.0 * (b * s * h * inter) as f64,
        || to_vec(x.clone().matmul(wi.clone().transpose())),
    );
    time("gelu (4096x1536)", 0.0, || to_vec(gelu(xi.clone())));
    let g = Tensor::<1>::ones([h], &d);
    let bias = Tensor::<1>::zeros([h], &d);
    time("layer_norm (4096x384)", 0.0, || {
        to_vec(burn::tensor::module::layer_norm(
            x.clone(),
            g.clone(),
            Some(bias.clone()),
            1e-12,
        ))
    });
    let dh = h / heads;
    let q = x.clone().reshape([b, s, heads, dh]).swap_dims(1, 2);
    time("split heads (reshape+swap)", 0.0, || q.clone().into_data());
    let qc = Tensor::<4>::random([b, heads, s, dh], Distribution::Normal(0.0, 1.0), &d);
    let kt = Tensor::<4>::random([b, heads, dh, s], Distribution::Normal(0.0, 1.0), &d);
    time(
        "scores q @ k^T",
        2.0 * (b * heads * s * s * dh) as f64,
        || qc.clone().matmul(kt.clone()).into_data(),
    );
    let sc = Tensor::<4>::random([b, heads, s, s], Distribution::Normal(0.0, 1.0), &d);
    time("softmax (32x12x128x128)", 0.0, || {
        softmax(sc.clone(), 3).into_data()
    });
    let v = Tensor::<4>::random([b, heads, s, dh], Distribution::Normal(0.0, 1.0), &d);
    time("probs @ v", 2.0 * (b * heads * s * s * dh) as f64, || {
        sc.clone().matmul(v.clone()).into_data()
    });
}
