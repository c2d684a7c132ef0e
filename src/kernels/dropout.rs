//! Inverted dropout with a counter-based mask: element `i` is kept when a hash of `(seed, i)`
//! falls at or above `prob`, so the mask is computed in parallel, vectorised, identically on any
//! thread count, and never stored (the backward step recomputes it from the seed). burn's
//! `Bernoulli` tensor drew each element from one ChaCha stream on one thread: a fifth of a
//! BERT training step.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::buffers::par_fill;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// murmur3's 32-bit finaliser: every input bit affects every output bit.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Whether element `i` survives: 24 uniform bits from the hash, compared with `prob · 2^24`.
#[inline(always)]
fn kept(seed: u64, i: u32, threshold: u32) -> bool {
    let h = fmix32(fmix32(i ^ seed as u32) ^ (seed >> 32) as u32);
    (h >> 8) >= threshold
}

/// `prob · 2^24`, the integer threshold [`kept`] compares with.
fn threshold(prob: f64) -> u32 {
    (prob.clamp(0.0, 1.0) * (1u32 << 24) as f64).round() as u32
}

#[inline(always)]
fn forward_body(
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    first: u32,
    seed: u64,
    threshold: u32,
    scale: f32,
) {
    for (j, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let keep = kept(seed, first.wrapping_add(j as u32), threshold);
        y.write(if keep { x * scale } else { 0.0 });
    }
}

#[inline(always)]
fn backward_body(d: &mut [f32], first: u32, seed: u64, threshold: u32, scale: f32) {
    for (j, d) in d.iter_mut().enumerate() {
        let keep = kept(seed, first.wrapping_add(j as u32), threshold);
        *d = if keep { *d * scale } else { 0.0 };
    }
}

wide_simd!(fn forward_rows(x: &[f32], y: &mut [MaybeUninit<f32>], first: u32, seed: u64, threshold: u32, scale: f32) = forward_body);
wide_simd!(fn backward_rows(d: &mut [f32], first: u32, seed: u64, threshold: u32, scale: f32) = backward_body);

/// `x ⊙ mask / (1 - prob)`, the mask drawn from `seed` (element indices are taken modulo 2^32).
pub fn dropout_forward(x: &[f32], prob: f64, seed: u64) -> Vec<f32> {
    let (t, scale) = (threshold(prob), (1.0 / (1.0 - prob)) as f32);
    // SAFETY: every element of each chunk is written from the same range of `x`.
    unsafe {
        par_fill(x.len(), CHUNK, |first, y| {
            forward_rows(&x[first..][..y.len()], y, first as u32, seed, t, scale)
        })
    }
}

/// The gradient of [`dropout_forward`] with the same `prob` and `seed`, in place on `d`.
pub fn dropout_backward(d: &mut [f32], prob: f64, seed: u64) {
    let (t, scale) = (threshold(prob), (1.0 / (1.0 - prob)) as f32);
    d.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, d)| backward_rows(d, (c * CHUNK) as u32, seed, t, scale));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_scales_and_the_gradient_uses_the_same_mask() {
        let n = 200_000;
        let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
        for prob in [0.1, 0.5] {
            let y = dropout_forward(&x, prob, 42);
            let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
            assert!(
                (zeros - prob).abs() < 0.005,
                "dropped {zeros}, wanted {prob}"
            );
            let scale = 1.0 / (1.0 - prob) as f32;
            for (a, b) in x.iter().zip(&y) {
                assert!(*b == 0.0 || (b - a * scale).abs() < 1e-5);
            }
            let mut d = vec![1.0f32; n];
            dropout_backward(&mut d, prob, 42);
            for (d, y) in d.iter().zip(&y) {
                assert_eq!(*d == 0.0, *y == 0.0);
            }
        }
        // Another seed, another mask; the same seed, the same mask.
        assert_ne!(dropout_forward(&x, 0.5, 1), dropout_forward(&x, 0.5, 2));
        assert_eq!(dropout_forward(&x, 0.5, 7), dropout_forward(&x, 0.5, 7));
    }

    #[test]
    fn neighbouring_elements_are_independent() {
        // P(both of two neighbours kept) must be keep², not keep (a weak hash would correlate).
        let n = 100_000;
        let y = dropout_forward(&vec![1.0f32; n], 0.5, 3);
        let both = y.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64;
        assert!((both / (n - 1) as f64 - 0.25).abs() < 0.01);
    }
}
