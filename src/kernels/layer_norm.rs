//! `torch.nn.LayerNorm` over the last dimension, forward and backward, one parallel pass over
//! row blocks each, vectorised (burn composes it from a mean, a variance and four broadcast ops, each a pass,
//! and its backward from as many again).

use rayon::prelude::*;

use super::math::{dot, sum};

/// Rows per parallel task.
const ROWS: usize = 64;

/// What the backward step needs from the forward: per row, the mean and `1/sqrt(var + eps)`.
#[derive(Debug)]
pub struct RowStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// One block of rows: normalise each (three vectorised passes over a row that sits in L1).
#[inline(always)]
fn forward_rows(
    x: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let dim = gamma.len();
    for (((x, y), m), r) in x
        .chunks_exact(dim)
        .zip(y.chunks_exact_mut(dim))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let mu = sum(x) / dim as f32;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x - mu;
        }
        // The variance of the centred row (two passes: no cancellation whatever the offset).
        let rs = 1.0 / (dot(y, y) / dim as f32 + eps).sqrt();
        for ((y, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
            *y = *y * rs * g + b;
        }
        (*m, *r) = (mu, rs);
    }
}

wide_simd!(fn forward_block(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, mean: &mut [f32], rstd: &mut [f32]) = forward_rows);

/// `(x - mean) / sqrt(var + eps) * gamma + beta` per row of `gamma.len()` elements, with the
/// biased variance (PyTorch's), and the row statistics.
pub fn layer_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, RowStats) {
    let dim = gamma.len();
    let rows = x.len().checked_div(dim).unwrap_or(0);
    let mut y = vec![0.0f32; rows * dim];
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    if dim == 0 {
        return (y, RowStats { mean, rstd });
    }
    y.par_chunks_mut(ROWS * dim)
        .zip(x.par_chunks(ROWS * dim))
        .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
        .for_each(|((y, x), (mean, rstd))| {
            forward_block(x, y, gamma, beta, eps as f32, mean, rstd)
        });
    (y, RowStats { mean, rstd })
}

/// One block of rows of the backward step: the input gradients, and this block's sums of the
/// weight and bias gradients added into `dgamma`, `dbeta`. `xhat` and `gh` are one row of
/// scratch each.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    xhat: &mut [f32],
    gh: &mut [f32],
) {
    let dim = gamma.len();
    for ((((x, dy), dx), &mu), &rs) in x
        .chunks_exact(dim)
        .zip(dy.chunks_exact(dim))
        .zip(dx.chunks_exact_mut(dim))
        .zip(mean)
        .zip(rstd)
    {
        for (((xh, gh), (&x, &dy)), &g) in xhat
            .iter_mut()
            .zip(gh.iter_mut())
            .zip(x.iter().zip(dy))
            .zip(gamma)
        {
            *xh = (x - mu) * rs;
            *gh = dy * g;
        }
        let mean_g = sum(gh) / dim as f32;
        let mean_gx = dot(gh, xhat) / dim as f32;
        for ((dx, &gh), &xh) in dx.iter_mut().zip(gh.iter()).zip(xhat.iter()) {
            *dx = rs * (gh - mean_g - xh * mean_gx);
        }
        for (((dg, db), &dy), &xh) in dgamma
            .iter_mut()
            .zip(dbeta.iter_mut())
            .zip(dy)
            .zip(xhat.iter())
        {
            *dg += dy * xh;
            *db += dy;
        }
    }
}

wide_simd!(fn backward_block(x: &[f32], dy: &[f32], dx: &mut [f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dgamma: &mut [f32], dbeta: &mut [f32], xhat: &mut [f32], gh: &mut [f32]) = backward_rows);

/// The gradients of [`layer_norm_forward`]: input, `gamma` and `beta`.
/// `dx = rstd (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))` with `ĝ = dy ⊙ gamma`, `x̂` the normalised input;
/// `dgamma = Σ_rows dy ⊙ x̂`, `dbeta = Σ_rows dy`, summed per fixed block of rows and then the
/// blocks in order, in f64 (deterministic whatever the thread count).
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &RowStats,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dim = gamma.len();
    if dim == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let mut dx = vec![0.0f32; x.len()];
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(ROWS * dim)
        .zip(x.par_chunks(ROWS * dim))
        .zip(dy.par_chunks(ROWS * dim))
        .zip(stats.mean.par_chunks(ROWS).zip(stats.rstd.par_chunks(ROWS)))
        .map(|(((dx, x), dy), (mean, rstd))| {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; dim], vec![0.0f32; dim]);
            let (mut xhat, mut gh) = (vec![0.0f32; dim], vec![0.0f32; dim]);
            backward_block(
                x,
                dy,
                dx,
                gamma,
                mean,
                rstd,
                &mut dgamma,
                &mut dbeta,
                &mut xhat,
                &mut gh,
            );
            (dgamma, dbeta)
        })
        .collect();
    let mut dgamma = vec![0.0f64; dim];
    let mut dbeta = vec![0.0f64; dim];
    for (g, b) in partial {
        dgamma.iter_mut().zip(g).for_each(|(s, v)| *s += v as f64);
        dbeta.iter_mut().zip(b).for_each(|(s, v)| *s += v as f64);
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, f32s(dgamma), f32s(dbeta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(n: usize, phase: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.71 + phase).sin() * 3.0 + 1.0)
            .collect()
    }

    #[test]
    fn forward_normalises_and_backward_matches_finite_differences() {
        let (rows, dim) = (70, 6);
        let (x, g, b, w) = (
            det(rows * dim, 0.0),
            det(dim, 1.0),
            det(dim, 2.0),
            det(rows * dim, 3.0),
        );
        let (y, stats) = layer_norm_forward(&x, &g, &b, 1e-5);
        for (r, row) in x.chunks(dim).enumerate() {
            let mu = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / dim as f64;
            for j in 0..dim {
                let want = (row[j] as f64 - mu) / (var + 1e-5).sqrt() * g[j] as f64 + b[j] as f64;
                assert!((y[r * dim + j] as f64 - want).abs() < 1e-5);
            }
        }
        let (dx, dg, db) = layer_norm_backward(&x, &g, &stats, &w);
        let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
            let (y, _) = layer_norm_forward(x, g, b, 1e-5);
            y.iter().zip(&w).map(|(y, w)| *y as f64 * *w as f64).sum()
        };
        let h = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for j in [0, 5, 77, 419] {
            let n = numeric(&|e| {
                let mut x = x.clone();
                x[j] += e;
                loss(&x, &g, &b)
            });
            assert!(
                (dx[j] as f64 - n).abs() < 2e-2 * (1.0 + n.abs()),
                "dx[{j}] {} vs {n}",
                dx[j]
            );
        }
        for j in 0..dim {
            let n = numeric(&|e| {
                let mut g = g.clone();
                g[j] += e;
                loss(&x, &g, &b)
            });
            assert!(
                (dg[j] as f64 - n).abs() < 1e-2 * (1.0 + n.abs()),
                "dgamma[{j}]"
            );
            let n = numeric(&|e| {
                let mut b = b.clone();
                b[j] += e;
                loss(&x, &g, &b)
            });
            assert!(
                (db[j] as f64 - n).abs() < 1e-2 * (1.0 + n.abs()),
                "dbeta[{j}]"
            );
        }
    }
}
