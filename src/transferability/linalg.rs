//! The dense f64 linear algebra the scores share, on faer: Gram matrices of f32 feature rows
//! and symmetric eigendecompositions.

use faer::{Mat, Side};

use crate::error::{Error, Result};

/// Row-major f32 `(n, d)` as an f64 matrix.
pub(super) fn to_mat(x: &[f32], n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| x[i * d + j] as f64)
}

/// Eigenvalues (ascending) and eigenvectors (columns) of the symmetric matrix `a`.
pub(crate) fn symmetric_eigen(a: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let eig = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::invalid(format!("eigendecomposition did not converge ({e:?})")))?;
    let s = eig.S().column_vector();
    let values: Vec<f64> = (0..a.nrows()).map(|i| s[i]).collect();
    Ok((values, eig.U().to_owned()))
}
