//! GELU (`x Φ(x)`, the exact erf form of PyTorch's and transformers' `gelu`) and its gradient,
//! branch-free so that they vectorise (AVX-512 / AVX2 chosen at run time), in parallel chunks.
//! burn's scalar `erf` made GELU a quarter of a BERT layer's time; `math.rs` has the vectorisable
//! one.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::buffers::par_fill;
use super::math::{erf, exp};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_body(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    for (y, &x) in y.iter_mut().zip(x) {
        y.write(0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)));
    }
}

#[inline(always)]
fn gelu_backward_body(x: &[f32], d: &mut [f32]) {
    for (d, &x) in d.iter_mut().zip(x) {
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
        *d *= cdf + x * pdf;
    }
}

wide_simd!(fn gelu_rows(x: &[f32], y: &mut [MaybeUninit<f32>]) = gelu_body);
wide_simd!(fn gelu_backward_rows(x: &[f32], d: &mut [f32]) = gelu_backward_body);

/// `gelu(x)` element-wise.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    // SAFETY: every element of each chunk is written from the same range of `x`.
    unsafe {
        par_fill(x.len(), CHUNK, |first, y| {
            gelu_rows(&x[first..][..y.len()], y)
        })
    }
}

/// `d ⊙ gelu'(x)`, in place on the output gradient `d`.
pub fn gelu_backward(x: &[f32], d: &mut [f32]) {
    d.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, x)| gelu_backward_rows(x, d));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math::tests::erf64;

    #[test]
    fn gelu_and_its_gradient_match_the_definition() {
        let x: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.01).collect();
        let y = gelu_forward(&x);
        let mut d = vec![1.0f32; x.len()];
        gelu_backward(&x, &mut d);
        for ((&x, &y), &d) in x.iter().zip(&y).zip(&d) {
            let xf = x as f64;
            let cdf = 0.5 * (1.0 + erf64(xf / std::f64::consts::SQRT_2));
            let want = xf * cdf;
            assert!(
                (y as f64 - want).abs() <= 1e-6 * (1.0 + xf.abs()),
                "gelu({x})"
            );
            let pdf = (-0.5 * xf * xf).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let dwant = cdf + xf * pdf;
            assert!(
                (d as f64 - dwant).abs() <= 1e-6 * (1.0 + xf.abs()),
                "gelu'({x})"
            );
        }
    }
}
