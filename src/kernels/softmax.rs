//! The softmax of attention scores and its gradient, row by row with a vectorisable `exp`
//! (burn's softmax is four tensor ops — max, sub-exp, sum, div — each a pass over the scores,
//! with libm's scalar `exp`). Called per (batch row, head) by `attention.rs`.

use super::math::{dot, exp_or_zero, max, sum};

/// `softmax(s · scale + bias)` per row of `bias.len()` scores, in place: the attention
/// probabilities from raw `q kᵀ` scores and the additive key mask. Masked keys (`bias` of
/// `f32::MIN` or `-inf`) weigh exactly 0.
#[inline(always)]
fn scaled_softmax_body(scores: &mut [f32], bias: &[f32], scale: f32) {
    let row = bias.len();
    // Separate passes, each vectorised (a float sum or max inside the `exp` loop would keep
    // the whole loop scalar); a row is a few hundred floats, in L1 throughout.
    for s in scores.chunks_exact_mut(row) {
        for (s, &b) in s.iter_mut().zip(bias) {
            *s = *s * scale + b;
        }
        let top = max(s);
        for s in s.iter_mut() {
            *s = exp_or_zero(*s - top);
        }
        let inv = 1.0 / sum(s);
        s.iter_mut().for_each(|s| *s *= inv);
    }
}

/// `y ⊙ (d - Σ_row d ⊙ y)`: the scores' gradient from the probabilities `y` and their gradient
/// `d`, in place on `d`, per row of `row` elements.
#[inline(always)]
fn softmax_backward_body(y: &[f32], d: &mut [f32], row: usize) {
    for (y, d) in y.chunks_exact(row).zip(d.chunks_exact_mut(row)) {
        let yd = dot(y, d);
        for (d, &y) in d.iter_mut().zip(y) {
            *d = y * (*d - yd);
        }
    }
}

wide_simd!(pub(super) fn scaled_softmax_in_place(scores: &mut [f32], bias: &[f32], scale: f32) = scaled_softmax_body);
wide_simd!(pub(super) fn softmax_backward_rows(y: &[f32], d: &mut [f32], row: usize) = softmax_backward_body);

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(x: &[f32], row: usize) -> Vec<f32> {
        let mut y = x.to_vec();
        scaled_softmax_in_place(&mut y, &vec![0.0; row], 1.0);
        y
    }

    #[test]
    fn rows_sum_to_one_and_the_gradient_matches_finite_differences() {
        let row = 7;
        let x: Vec<f32> = (0..5 * row)
            .map(|i| ((i as f32) * 0.91).sin() * 4.0)
            .collect();
        let y = softmax(&x, row);
        for (x, y) in x.chunks(row).zip(y.chunks(row)) {
            let max = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (&x, &y) in x.iter().zip(y) {
                assert!((y as f64 - (x as f64 - max).exp() / z).abs() < 1e-6);
            }
        }
        // d/dx_j Σ_i w_i y_i = y_j (w_j - Σ w_i y_i)
        let w: Vec<f32> = (0..5 * row).map(|i| ((i as f32) * 0.37).cos()).collect();
        let mut d = w.clone();
        softmax_backward_rows(&y, &mut d, row);
        let f = |x: &[f32]| -> f64 {
            let y = softmax(x, row);
            y.iter().zip(&w).map(|(y, w)| *y as f64 * *w as f64).sum()
        };
        for j in [0, 3, 9, 20, 34] {
            let h = 1e-2f32;
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let numeric = (f(&xp) - f(&xm)) / (2.0 * h as f64);
            assert!(
                (d[j] as f64 - numeric).abs() < 1e-3,
                "{j}: {} vs {numeric}",
                d[j]
            );
        }
    }

    #[test]
    fn scale_and_mask_apply_and_masked_scores_weigh_exactly_nothing() {
        let mut y = vec![1.0, 5.0, 2.0, 7.0];
        scaled_softmax_in_place(&mut y, &[0.0, f32::MIN, 0.0, f32::NEG_INFINITY], 0.5);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[3], 0.0);
        let want = 1.0 / (1.0 + 0.5f64.exp());
        assert!((y[0] as f64 - want).abs() < 1e-7);
    }
}
