//! How faithful a map is to the model: the deletion and insertion curves of RISE (Petsiuk et
//! al. 2018), with its substrates. Pixels are ranked by the map (upsampled to the input as it
//! is drawn); deletion turns the top-ranked fraction black and follows the class probability
//! as the fraction grows; insertion starts from the image blurred (Gaussian, 11 taps, σ 5) and
//! restores the top-ranked pixels. A faithful map makes the probability fall fast under
//! deletion and rise fast under insertion: the score is the area under insertion minus the
//! area under deletion (−1…1, higher is better), to be compared with
//! [`super::Method::Random`]'s on the same image.

use burn::tensor::Tensor;
use serde::Serialize;

use super::cam::{Corners, resize_bilinear};
use super::probability;
use crate::error::Result;
use crate::model::Classifier;
use crate::tensor::{from_vec, to_vec};

/// Points on each curve after the unperturbed one: 5%, 10%, ... 100% of the pixels.
pub const STEPS: usize = 20;

/// One map's curves on one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faithfulness {
    /// Class probability with 0, 1/STEPS, ... 1 of the pixels deleted (most relevant first).
    pub deletion: Vec<f32>,
    /// Class probability with 0, 1/STEPS, ... 1 of the pixels inserted into the baseline.
    pub insertion: Vec<f32>,
    /// Area under the deletion curve (trapezoids over the fraction 0…1): lower is better.
    pub deletion_auc: f32,
    /// Area under the insertion curve (trapezoids over the fraction 0…1): higher is better.
    pub insertion_auc: f32,
    /// `insertion_auc - deletion_auc`.
    pub score: f32,
}

/// The curves of `cam` (`h × w`, any scale: only its order counts) for `class` on `image`
/// `(1, 3, H, W)`, normalised as `model` expects (`(x - mean) / std`, so black is
/// `-mean / std`), with `model` an inference copy ([`Classifier::folded_for_inference`]).
pub fn faithfulness(
    model: &Classifier,
    image: Tensor<4>,
    (mean, std): ([f32; 3], [f32; 3]),
    cam: &[f32],
    (h, w): (usize, usize),
    class: usize,
) -> Result<Faithfulness> {
    let [_, channels, big_h, big_w] = image.dims();
    let device = image.device();
    let plane = big_h * big_w;
    let pixels = to_vec(image);
    let blurred = blur(&pixels, channels, (big_h, big_w));
    let black: Vec<f32> = (0..channels).map(|c| -mean[c % 3] / std[c % 3]).collect();
    let up = resize_bilinear(cam, (h, w), (big_h, big_w), Corners::HalfPixel);
    // Most relevant first; ties (a ReLU'd map's zeros) in raster order.
    let mut order: Vec<usize> = (0..plane).collect();
    order.sort_by(|&a, &b| up[b].total_cmp(&up[a]));
    // Rank of each pixel: deleted (or inserted) at step s when rank < s/STEPS of the pixels.
    let mut rank = vec![0usize; plane];
    for (r, &p) in order.iter().enumerate() {
        rank[p] = r;
    }
    let mut batch = Vec::with_capacity(2 * (STEPS + 1) * pixels.len());
    for inserting in [false, true] {
        for s in 0..=STEPS {
            let cut = plane * s / STEPS;
            for c in 0..channels {
                let src = &pixels[c * plane..(c + 1) * plane];
                let blur = &blurred[c * plane..(c + 1) * plane];
                batch.extend(src.iter().zip(blur).zip(&rank).map(|((&v, &b), &r)| {
                    match (inserting, r < cut) {
                        // Deletion: the top-ranked pixels are black, the rest as they were.
                        (false, true) => black[c],
                        (false, false) | (true, true) => v,
                        // Insertion: the pixels not yet inserted are blurred.
                        (true, false) => b,
                    }
                }));
            }
        }
    }
    let n = 2 * (STEPS + 1);
    let logits = to_vec(model.forward(from_vec(batch, [n, channels, big_h, big_w], &device)));
    let classes = logits.len() / n;
    let probs: Vec<f32> = (0..n)
        .map(|i| probability(&logits[i * classes..(i + 1) * classes], class))
        .collect();
    let (deletion, insertion) = probs.split_at(STEPS + 1);
    let (deletion_auc, insertion_auc) = (auc(deletion), auc(insertion));
    Ok(Faithfulness {
        deletion: deletion.to_vec(),
        insertion: insertion.to_vec(),
        deletion_auc,
        insertion_auc,
        score: insertion_auc - deletion_auc,
    })
}

/// RISE's insertion substrate: each channel convolved with an 11-tap Gaussian of σ 5 in both
/// directions (edges clamped).
fn blur(pixels: &[f32], channels: usize, (h, w): (usize, usize)) -> Vec<f32> {
    const RADIUS: isize = 5;
    const SIGMA: f32 = 5.0;
    let taps: Vec<f32> = (-RADIUS..=RADIUS)
        .map(|d| (-(d * d) as f32 / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let total: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / total).collect();
    let pass = |src: &[f32], len: usize, stride: usize, lines: usize, line_stride: usize| {
        let mut out = vec![0f32; src.len()];
        for line in 0..lines {
            for i in 0..len {
                let mut acc = 0.0;
                for (t, &k) in taps.iter().enumerate() {
                    let j = (i as isize + t as isize - RADIUS).clamp(0, len as isize - 1) as usize;
                    acc += k * src[line * line_stride + j * stride];
                }
                out[line * line_stride + i * stride] = acc;
            }
        }
        out
    };
    let plane = h * w;
    let mut out = Vec::with_capacity(pixels.len());
    for c in 0..channels {
        let src = &pixels[c * plane..(c + 1) * plane];
        let rows = pass(src, w, 1, h, w);
        out.extend(pass(&rows, h, w, w, 1));
    }
    out
}

/// Trapezoidal area under a curve sampled at evenly spaced points of [0, 1].
fn auc(curve: &[f32]) -> f32 {
    let steps = (curve.len() - 1) as f32;
    curve.windows(2).map(|p| (p[0] + p[1]) / 2.0).sum::<f32>() / steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_constants_and_spreads_a_point() {
        let flat = vec![0.5f32; 2 * 9 * 9];
        assert!(
            blur(&flat, 2, (9, 9))
                .iter()
                .all(|v| (v - 0.5).abs() < 1e-6)
        );
        let mut point = vec![0f32; 15 * 15];
        point[7 * 15 + 7] = 1.0;
        let b = blur(&point, 1, (15, 15));
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(b[7 * 15 + 7] < 0.05 && b[7 * 15 + 8] > 0.0);
    }

    #[test]
    fn auc_is_the_trapezoid_area() {
        assert!((auc(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-6);
        assert!((auc(&[1.0, 0.0]) - 0.5).abs() < 1e-6);
        assert!((auc(&[0.0, 1.0, 0.0]) - 0.5).abs() < 1e-6);
    }
}
