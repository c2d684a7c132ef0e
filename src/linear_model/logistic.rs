//! Multinomial logistic regression fitted to convergence: the linear probe of the evaluations
//! the field trusts (CLIP's protocol, Kornblith et al. 2019; scikit-learn's
//! `LogisticRegression(solver="lbfgs")`).
//!
//! Minimises `Σ_i w_i · CE(W x_i + b, y_i) / Σ_i w_i + (λ/2) ‖W‖²` (the bias is not penalised)
//! with L-BFGS, on features standardised by the training split's mean and standard deviation;
//! `w_i` is the class weight of `y_i` (1 without class weights: PyTorch's weighted mean).
//! scikit-learn's `C` is `1 / (λ n)` for unweighted data.
//!
//! The data term is two GEMMs per evaluation (`X Wᵀ` and `(P - Y)ᵀ X`, f32 through graft's
//! kernels) with the softmax, loss and parameters in f64.

use rayon::prelude::*;

use super::lbfgs::{self, Outcome, Settings};
use crate::kernels::conv::serial_matmul;
use crate::kernels::linear::linear_forward;

/// Rows per block of the objective's pass (a block's gradient share is summed in f32, the
/// blocks' in f64, in a fixed order: deterministic for any thread count).
const ROWS: usize = 256;

/// Row-major `(n, d)` features and their labels.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// The features, `n * d` values, row `i` is sample `i`.
    pub x: &'a [f32],
    /// The class of each row, in `0..classes`.
    pub y: &'a [usize],
    /// Features per row.
    pub d: usize,
}

impl Data<'_> {
    /// The number of rows (samples).
    pub fn n(&self) -> usize {
        self.y.len()
    }
}

/// The parameters: `w` is `(classes, d)` row-major (PyTorch's `Linear.weight`), `b` `(classes)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Weights, `classes * d` values, row-major `(classes, d)`.
    pub w: Vec<f64>,
    /// Intercepts, one per class.
    pub b: Vec<f64>,
    /// The number of classes (rows of `w`).
    pub classes: usize,
}

impl Model {
    /// All-zero parameters: the solver's starting point (as scikit-learn's).
    pub fn zeros(classes: usize, d: usize) -> Self {
        Model {
            w: vec![0.0; classes * d],
            b: vec![0.0; classes],
            classes,
        }
    }

    fn pack(&self) -> Vec<f64> {
        self.w.iter().chain(&self.b).copied().collect()
    }

    fn unpack(&mut self, theta: &[f64]) {
        let (w, b) = theta.split_at(self.w.len());
        self.w.copy_from_slice(w);
        self.b.copy_from_slice(b);
    }

    /// Logits `(n, classes)` of `data`.
    pub fn logits(&self, data: &Data<'_>) -> Vec<f32> {
        logits(data, &self.w, &self.b, self.classes)
    }
}

/// Mean cross-entropy (unweighted) and accuracy of a model on `data`.
pub fn score(model: &Model, data: &Data<'_>) -> (f64, f64) {
    let c = model.classes;
    let z = model.logits(data);
    let (loss, correct) = z
        .par_chunks(c)
        .zip(data.y.par_iter())
        .map(|(row, &y)| {
            let (lse, arg) = log_sum_exp(row);
            (lse - row[y] as f64, usize::from(arg == y))
        })
        .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let n = data.n().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// Fits `model` (its values are the starting point: warm starts along an L2 path) with L2
/// strength `l2` and optional per-class weights.
pub fn fit(
    model: &mut Model,
    data: &Data<'_>,
    class_weights: Option<&[f32]>,
    l2: f64,
    settings: Settings,
) -> Outcome {
    let (c, d) = (model.classes, data.d);
    let mut theta = model.pack();
    let sample_weight: Option<Vec<f64>> =
        class_weights.map(|cw| data.y.iter().map(|&y| cw[y] as f64).collect());
    let total = sample_weight
        .as_ref()
        .map_or(data.n() as f64, |w| w.iter().sum::<f64>())
        .max(f64::MIN_POSITIVE);
    let out = lbfgs::minimize(&mut theta, settings, |theta, grad| {
        let (w, b) = theta.split_at(c * d);
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        // One pass over the rows, block by block, while each row is in cache: its logits, its
        // softmax, and its share of the gradient. (Two GEMMs would stream the features twice;
        // with ten-odd classes the pass is memory-bound, not compute-bound.)
        let partials: Vec<(f64, Vec<f32>, Vec<f64>)> = data
            .x
            .par_chunks(ROWS * d)
            .enumerate()
            .map(|(block, rows)| {
                let rows_n = rows.len() / d;
                // z = X_blk Wᵀ + b (rows × c), then dz = (softmax - onehot) w_i / Σw in place.
                let mut z = product(rows_n, c, d, rows, (d as isize, 1), &w32, (1, d as isize));
                let mut gb = vec![0f64; c];
                let mut loss = 0.0;
                let mut zr = vec![0f64; c];
                for (r, out) in z.chunks_exact_mut(c).enumerate() {
                    let i = block * ROWS + r;
                    for ((zk, &v), bk) in zr.iter_mut().zip(out.iter()).zip(b) {
                        *zk = v as f64 + bk;
                    }
                    let max = zr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                    let lse = max + zr.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    let y = data.y[i];
                    let wi = sample_weight.as_ref().map_or(1.0, |sw| sw[i]);
                    loss += wi * (lse - zr[y]);
                    for k in 0..c {
                        let p = (zr[k] - lse).exp() - f64::from(u8::from(k == y));
                        let g = p * wi / total;
                        gb[k] += g;
                        out[k] = g as f32;
                    }
                }
                // This block's share of dW = dzᵀ X_blk (c × d).
                let gw = product(c, d, rows_n, &z, (1, c as isize), rows, (d as isize, 1));
                (loss, gw, gb)
            })
            .collect();
        let (grad_w, grad_b) = grad.split_at_mut(c * d);
        grad_w.iter_mut().for_each(|g| *g = 0.0);
        grad_b.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, gw, gb) in partials {
            loss += l;
            for (g, v) in grad_w.iter_mut().zip(gw) {
                *g += v as f64;
            }
            for (g, v) in grad_b.iter_mut().zip(gb) {
                *g += v;
            }
        }
        let mut penalty = 0.0;
        for (g, &wv) in grad_w.iter_mut().zip(w) {
            *g += l2 * wv;
            penalty += wv * wv;
        }
        loss / total + 0.5 * l2 * penalty
    });
    model.unpack(&theta);
    out
}

/// `lhs × rhs` (m × n, row-major) on the calling thread (the caller runs blocks in parallel).
fn product(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    serial_matmul(
        m,
        n,
        k,
        &mut out.spare_capacity_mut()[..m * n],
        (n as isize, 1),
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
    );
    // SAFETY: the product wrote every entry of the m × n window.
    unsafe { out.set_len(m * n) };
    out
}

fn logits(data: &Data<'_>, w: &[f64], b: &[f64], c: usize) -> Vec<f32> {
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
    linear_forward(data.x, &w32, Some(&b32), data.n(), data.d, c)
}

/// `log Σ exp(row)` in f64, and the arg max.
fn log_sum_exp(row: &[f32]) -> (f64, usize) {
    let (mut arg, mut max) = (0, f32::NEG_INFINITY);
    for (k, &v) in row.iter().enumerate() {
        if v > max {
            (arg, max) = (k, v);
        }
    }
    let s: f64 = row.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
    (max as f64 + s.ln(), arg)
}

/// Per-feature mean and standard deviation of a training split (the population deviation, as
/// scikit-learn's `StandardScaler`; a constant feature keeps scale 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature population standard deviation (1 for a constant feature).
    pub scale: Vec<f64>,
}

impl Standardizer {
    /// The statistics of `x`, row-major with `d` features per row.
    pub fn fit(x: &[f32], d: usize) -> Self {
        let n = (x.len() / d.max(1)).max(1) as f64;
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                let e = v as f64 - m;
                *s += e * e;
            }
        }
        let scale = var
            .into_iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 1e-12 { sd } else { 1.0 }
            })
            .collect();
        Standardizer { mean, scale }
    }

    /// `(x - mean) / scale`, row-major like `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        let mut out = x.to_vec();
        out.par_chunks_mut(d.max(1)).for_each(|row| {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = ((*v as f64 - m) / s) as f32;
            }
        });
        out
    }

    /// The model on raw features equal to `model` on standardised ones:
    /// `W' = W / scale`, `b' = b - W' · mean`.
    pub fn fold(&self, model: &Model) -> Model {
        let d = self.mean.len();
        let mut out = model.clone();
        for (k, row) in out.w.chunks_exact_mut(d).enumerate() {
            let mut shift = 0.0;
            for ((w, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *w /= s;
                shift += *w * m;
            }
            out.b[k] -= shift;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<f32>, Vec<usize>) {
        // Three overlapping classes in 2-D.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..60 {
            let k = i % 3;
            let t = i as f32 * 0.37;
            x.extend([k as f32 + t.sin(), (k as f32 * 0.5) + (1.3 * t).cos()]);
            y.push(k);
        }
        (x, y)
    }

    /// At the optimum the gradient vanishes: checked against central finite differences of the
    /// objective's value, which the solver never sees.
    #[test]
    fn optimum_is_stationary_and_weights_shrink_with_l2() {
        let (x, y) = toy();
        let data = Data { x: &x, y: &y, d: 2 };
        let mut weak = Model::zeros(3, 2);
        let out = fit(
            &mut weak,
            &data,
            None,
            1e-3,
            Settings {
                gtol: 1e-7,
                ..Settings::default()
            },
        );
        assert!(out.converged, "{out:?}");
        let mut strong = Model::zeros(3, 2);
        fit(
            &mut strong,
            &data,
            None,
            1.0,
            Settings {
                gtol: 1e-7,
                ..Settings::default()
            },
        );
        let norm = |m: &Model| m.w.iter().map(|v| v * v).sum::<f64>();
        assert!(norm(&strong) < 0.2 * norm(&weak));
        // The objective at the optimum is lower than at small perturbations of every parameter.
        let value = |m: &Model| {
            let (loss, _) = score(m, &data);
            loss + 0.5e-3 * norm(m)
        };
        let best = value(&weak);
        for i in 0..6 {
            for delta in [-1e-2, 1e-2] {
                let mut m = weak.clone();
                if i < 6 {
                    m.w[i] += delta;
                }
                assert!(value(&m) >= best - 1e-9, "parameter {i} {delta}");
            }
        }
    }

    #[test]
    fn folding_the_standardizer_keeps_the_logits() {
        let (mut x, y) = toy();
        x.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = *v * (1.0 + (i % 2) as f32 * 40.0) + 3.0);
        let st = Standardizer::fit(&x, 2);
        let xs = st.apply(&x);
        let mut m = Model::zeros(3, 2);
        fit(
            &mut m,
            &Data {
                x: &xs,
                y: &y,
                d: 2,
            },
            None,
            1e-2,
            Settings::default(),
        );
        let a = m.logits(&Data {
            x: &xs,
            y: &y,
            d: 2,
        });
        let b = st.fold(&m).logits(&Data { x: &x, y: &y, d: 2 });
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }
}
