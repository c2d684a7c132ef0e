//! Element-wise functions for the kernels, written branch-free (selects, polynomials, exponent
//! bits) so that loops calling them vectorise; libm's scalar calls would not.

/// `e^x` for f32 (Cephes `expf`: range reduction by ln 2, degree-6 polynomial, exponent bits),
/// relative error about 1e-7; saturates instead of overflowing (see [`exp_or_zero`]).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // Ties to even: one `vrndscaleps` (plain `round` ties away from zero, a libm call per lane).
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n through the exponent bits (n + 127 is a whole number in [1, 254] after the clamp).
    // Adding 2^23 puts it in the low mantissa bits; the shift moves them to the exponent (and
    // the rest out). Not `n as i32`: Rust's saturating cast does not vectorise.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    e * f32::from_bits(biased << 23)
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26, odd by construction.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// `e^x`, and exactly 0 below f32's smallest normal result (where [`exp`] saturates): what a
/// softmax needs for masked scores (`-inf` or `f32::MIN`), which must weigh nothing.
#[inline(always)]
pub(crate) fn exp_or_zero(x: f32) -> f32 {
    let e = exp(x);
    if x < -87.3 { 0.0 } else { e }
}

/// Lanes of the reductions below: one AVX-512 register of f32 (two AVX2 ones).
const LANES: usize = 16;

/// `Σ a_i b_i` over 16 interleaved partial sums, so that it vectorises (LLVM keeps a plain
/// float sum in order, one lane). The order is fixed, so the result is deterministic.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a_blocks.zip(b_blocks) {
        for i in 0..LANES {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i`, vectorised as [`dot`].
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let blocks = a.chunks_exact(LANES);
    let tail: f32 = blocks.remainder().iter().sum();
    for a in blocks {
        for i in 0..LANES {
            acc[i] += a[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element (`-inf` for none), vectorised; NaN elements are skipped.
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let blocks = a.chunks_exact(LANES);
    let tail = blocks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for a in blocks {
        for i in 0..LANES {
            acc[i] = if a[i] > acc[i] { a[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (|x| ≤ 3) or asymptotic complement: a reference.
    pub(crate) fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let a = x.abs();
            // erfc(a) ~ e^{-a²}/(a√π) (1 - 1/(2a²) + 3/(4a⁴) - 15/(8a⁶))
            let a2 = a * a;
            let c = (-a2).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 0.5 / a2 + 0.75 / (a2 * a2) - 1.875 / (a2 * a2 * a2));
            return (1.0 - c).copysign(x);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let e = exp(x) as f64;
            let want = (x as f64).exp();
            assert!(
                (e - want).abs() <= 3e-7 * want,
                "exp({x}) = {e}, want {want}"
            );
            let got = erf(x) as f64;
            let want = erf64(x as f64);
            assert!(
                (got - want).abs() <= 2.5e-7,
                "erf({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(-200.0), exp(-87.3));
        assert!(exp(200.0).is_finite());
        assert_eq!(exp_or_zero(f32::MIN), 0.0);
        assert_eq!(exp_or_zero(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_or_zero(0.0), 1.0);
    }

    #[test]
    fn reductions_match_the_plain_ones() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
            let plain_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain_dot).abs() < 1e-5);
            assert!((sum(&a) - a.iter().sum::<f32>()).abs() < 1e-5);
            assert_eq!(max(&a), a.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        }
    }
}
