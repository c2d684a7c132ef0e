//! LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
//! Learning", ICML 2021), in the fixed-point form of their follow-up ("Ranking and Tuning
//! Pre-trained Models", arXiv 2110.10545) that thuml/LogME's `LogME.py` ships as the default.
//!
//! Per class `c`, the one-hot column `y` is regressed on the features `F` (n × d) with prior
//! `w ~ N(0, α⁻¹ I)` and noise `N(0, β⁻¹)`. With `F = U S Vᵀ` (one decomposition shared by
//! every class) and `x = Uᵀ y`, the evidence is maximised over `(α, β)` by MacKay's updates
//! `γ = Σ σ/(σ+t)`, `α = γ / (‖m‖² + 1e-5)`, `β = (n - γ) / (‖y - F m‖² + 1e-5)`, `t = α/β`,
//! at most 11 times, until `t` moves by ≤ 0.1%; the score is the mean over classes of the
//! log evidence divided by `n`. The decomposition comes from `FᵀF` (d × d) when `n > d`, as
//! the reference's `truncated_svd` does, else from `F Fᵀ` (n × n).

use super::linalg::{symmetric_eigen, to_mat};
use crate::error::Result;

/// The LogME score of features `x` (row-major `(n, d)`) for labels `y` in `0..classes`.
pub fn logme(x: &[f32], y: &[usize], d: usize, classes: usize) -> Result<f64> {
    let n = y.len();
    let f = to_mat(x, n, d);
    // sigma: squared singular values; proj(c): x = Uᵀ y_c for the kept singular directions.
    let (sigma, uty) = if n > d {
        let gram = f.transpose() * &f;
        let (values, v) = symmetric_eigen(&gram)?;
        // Uᵀ y = S⁻¹ Vᵀ Fᵀ y, over the directions with singular value > 1e-10 (the reference's
        // rank cut).
        let keep: Vec<usize> = (0..d)
            .filter(|&i| values[i].max(0.0).sqrt() > 1e-10)
            .collect();
        let mut fty = faer::Mat::<f64>::zeros(d, classes);
        for (i, &c) in y.iter().enumerate() {
            for j in 0..d {
                fty[(j, c)] += f[(i, j)];
            }
        }
        let vt_fty = v.transpose() * &fty;
        let sigma: Vec<f64> = keep.iter().map(|&i| values[i]).collect();
        let uty: Vec<Vec<f64>> = (0..classes)
            .map(|c| {
                keep.iter()
                    .map(|&i| vt_fty[(i, c)] / values[i].sqrt())
                    .collect()
            })
            .collect();
        (sigma, uty)
    } else {
        let outer = &f * f.transpose();
        let (values, u) = symmetric_eigen(&outer)?;
        let sigma: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
        let uty: Vec<Vec<f64>> = (0..classes)
            .map(|c| {
                (0..n)
                    .map(|k| {
                        y.iter()
                            .enumerate()
                            .filter(|&(_, &yi)| yi == c)
                            .map(|(i, _)| u[(i, k)])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        (sigma, uty)
    };
    let evidences: Vec<f64> = (0..classes)
        .map(|c| {
            let count = y.iter().filter(|&&yi| yi == c).count() as f64;
            class_evidence(&sigma, &uty[c], count, n as f64, d as f64)
        })
        .collect();
    Ok(evidences.iter().sum::<f64>() / classes.max(1) as f64)
}

/// The maximised log evidence / n of one one-hot target: `x = Uᵀ y`, `sum_y2 = ‖y‖²`.
fn class_evidence(sigma: &[f64], x: &[f64], sum_y2: f64, n: f64, d: f64) -> f64 {
    let x2: Vec<f64> = x.iter().map(|v| v * v).collect();
    let res_x2 = sum_y2 - x2.iter().sum::<f64>();
    let (mut alpha, mut beta) = (1.0f64, 1.0f64);
    let (mut m2, mut res2) = (0.0, 0.0);
    for _ in 0..11 {
        let t = alpha / beta;
        let gamma: f64 = sigma.iter().map(|s| s / (s + t)).sum();
        m2 = sigma
            .iter()
            .zip(&x2)
            .map(|(s, x2)| s * x2 / ((t + s) * (t + s)))
            .sum();
        res2 = sigma
            .iter()
            .zip(&x2)
            .map(|(s, x2)| x2 / ((1.0 + s / t) * (1.0 + s / t)))
            .sum::<f64>()
            + res_x2;
        alpha = gamma / (m2 + 1e-5);
        beta = (n - gamma) / (res2 + 1e-5);
        let t_new = alpha / beta;
        if (t_new - t).abs() / t <= 1e-3 {
            break;
        }
    }
    let log_det: f64 = sigma.iter().map(|s| (alpha + beta * s).ln()).sum();
    (d / 2.0 * alpha.ln() + n / 2.0 * beta.ln()
        - 0.5 * log_det
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * (2.0 * std::f64::consts::PI).ln())
        / n
}
