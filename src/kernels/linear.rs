//! `torch.nn.Linear` on row-major rows: `y = x Wᵀ + b` as one GEMM accumulating into the
//! broadcast bias (the gemm crate reads `W` transposed through its strides: no copy), and its
//! three gradients (`dx = dy W`, `dW = dyᵀ x`, `db = Σ dy`), each one GEMM or one pass.

use rayon::prelude::*;

use super::conv::{matmul, matmul_uninit};

/// `x` (m×k) `Wᵀ` (W n×k) `+ b`: m×n.
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    if k == 0 {
        return match b {
            Some(b) => b.repeat(m),
            None => vec![0.0; m * n],
        };
    }
    match b {
        Some(b) => {
            let mut y: Vec<f32> = Vec::with_capacity(m * n);
            y.spare_capacity_mut()[..m * n]
                .par_chunks_mut(n.max(1))
                .for_each(|row| {
                    for (o, &v) in row.iter_mut().zip(b) {
                        o.write(v);
                    }
                });
            // SAFETY: every row was written above.
            unsafe { y.set_len(m * n) };
            matmul(
                m,
                n,
                k,
                &mut y,
                (n as isize, 1),
                true,
                x,
                (k as isize, 1),
                w,
                (1, k as isize),
            );
            y
        }
        None => {
            let mut y: Vec<f32> = Vec::with_capacity(m * n);
            matmul_uninit(
                m,
                n,
                k,
                &mut y.spare_capacity_mut()[..m * n],
                (n as isize, 1),
                x,
                (k as isize, 1),
                w,
                (1, k as isize),
            );
            // SAFETY: the product wrote every entry.
            unsafe { y.set_len(m * n) };
            y
        }
    }
}

/// `dx = dy W` (m×k).
pub fn linear_backward_input(dy: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut dx: Vec<f32> = Vec::with_capacity(m * k);
    if n == 0 {
        return vec![0.0; m * k];
    }
    matmul_uninit(
        m,
        k,
        n,
        &mut dx.spare_capacity_mut()[..m * k],
        (k as isize, 1),
        dy,
        (n as isize, 1),
        w,
        (k as isize, 1),
    );
    // SAFETY: the product wrote every entry.
    unsafe { dx.set_len(m * k) };
    dx
}

/// `dW = dyᵀ x` (n×k).
pub fn linear_backward_weight(dy: &[f32], x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    if m == 0 {
        return vec![0.0; n * k];
    }
    let mut dw: Vec<f32> = Vec::with_capacity(n * k);
    matmul_uninit(
        n,
        k,
        m,
        &mut dw.spare_capacity_mut()[..n * k],
        (k as isize, 1),
        dy,
        (1, n as isize),
        x,
        (k as isize, 1),
    );
    // SAFETY: the product wrote every entry.
    unsafe { dw.set_len(n * k) };
    dw
}

/// `db = Σ_rows dy` (n), summed per fixed row block in order (deterministic).
pub fn linear_backward_bias(dy: &[f32], n: usize) -> Vec<f32> {
    const ROWS: usize = 256;
    let partial: Vec<Vec<f64>> = dy
        .par_chunks(ROWS * n.max(1))
        .map(|block| {
            let mut s = vec![0.0f64; n];
            for row in block.chunks_exact(n.max(1)) {
                for (s, &v) in s.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            s
        })
        .collect();
    let mut out = vec![0.0f64; n];
    for p in partial {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(n: usize, phase: f64) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f64 * 0.37 + phase).sin()) as f32)
            .collect()
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        let (m, k, n) = (7, 5, 3);
        let (x, w, b, dy) = (
            det(m * k, 0.1),
            det(n * k, 0.7),
            det(n, 1.3),
            det(m * n, 2.1),
        );
        let y = linear_forward(&x, &w, Some(&b), m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = b[j] as f64
                    + (0..k)
                        .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                        .sum::<f64>();
                assert!((y[i * n + j] as f64 - want).abs() < 1e-5);
            }
        }
        let no_bias = linear_forward(&x, &w, None, m, k, n);
        assert!((no_bias[4] - (y[4] - b[1])).abs() < 1e-5);
        let dx = linear_backward_input(&dy, &w, m, k, n);
        let dw = linear_backward_weight(&dy, &x, m, k, n);
        let db = linear_backward_bias(&dy, n);
        for i in 0..m {
            for t in 0..k {
                let want: f64 = (0..n)
                    .map(|j| dy[i * n + j] as f64 * w[j * k + t] as f64)
                    .sum();
                assert!((dx[i * k + t] as f64 - want).abs() < 1e-5);
            }
        }
        for j in 0..n {
            for t in 0..k {
                let want: f64 = (0..m)
                    .map(|i| dy[i * n + j] as f64 * x[i * k + t] as f64)
                    .sum();
                assert!((dw[j * k + t] as f64 - want).abs() < 1e-5);
            }
            let want: f64 = (0..m).map(|i| dy[i * n + j] as f64).sum();
            assert!((db[j] as f64 - want).abs() < 1e-5);
        }
    }
}
