//! H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
//! Learning", ICIP 2019): `tr(cov(f)⁺ cov(E[f|y]))`, how much of the features' variance the
//! class means explain, measured in the features' own metric. Covariances with `n - 1`
//! (numpy's `np.cov`), the pseudo-inverse cutting eigenvalues below `1e-15 × the largest`
//! (numpy's `pinv` default) — the formula of the Transfer-Learning-Library's `h_score`.

use super::linalg::{symmetric_eigen, to_mat};
use crate::error::Result;

/// The H-score of features `x` (row-major `(n, d)`) for labels `y` in `0..classes`.
pub fn hscore(x: &[f32], y: &[usize], d: usize, classes: usize) -> Result<f64> {
    let n = y.len();
    if n < 2 {
        return Ok(f64::NAN);
    }
    let f = to_mat(x, n, d);
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| f[(i, j)]).sum::<f64>() / n as f64)
        .collect();
    let centred = faer::Mat::<f64>::from_fn(n, d, |i, j| f[(i, j)] - mean[j]);
    let cov = (centred.transpose() * &centred) * faer::Scale(1.0 / (n as f64 - 1.0));
    let (values, v) = symmetric_eigen(&cov)?;
    let largest = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    // Class means' deviations from the mean, and class sizes.
    let mut sums = vec![vec![0.0; d]; classes];
    let mut counts = vec![0usize; classes];
    for (i, &c) in y.iter().enumerate() {
        counts[c] += 1;
        for j in 0..d {
            sums[c][j] += f[(i, j)];
        }
    }
    let mut score = 0.0;
    for c in 0..classes {
        if counts[c] == 0 {
            continue;
        }
        let delta: Vec<f64> = (0..d)
            .map(|j| sums[c][j] / counts[c] as f64 - mean[j])
            .collect();
        let weight = counts[c] as f64 / (n as f64 - 1.0);
        for (k, &lambda) in values.iter().enumerate() {
            if lambda.abs() > 1e-15 * largest {
                let proj: f64 = (0..d).map(|j| v[(j, k)] * delta[j]).sum();
                score += weight * proj * proj / lambda;
            }
        }
    }
    Ok(score)
}
