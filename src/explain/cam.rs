//! The class activation maps of one image at one layer, from that layer's activations `A`
//! `(c, h, w)` and, for the gradient methods, `G = d(target logit)/dA`: pytorch-grad-cam's
//! formulas (`grad_cam.py`, `hirescam.py`, `grad_cam_plusplus.py`, `eigen_cam.py`,
//! `base_cam.py`), on plain row-major slices.

use faer::Mat;

use crate::transferability::linalg::symmetric_eigen;

/// One image's activations (or gradients) at a layer: `channels × (height·width)`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Maps<'a> {
    /// `channels * pixels` values: channel `k`'s map is `values[k * pixels..(k + 1) * pixels]`.
    pub values: &'a [f32],
    /// The number of channels (`c`).
    pub channels: usize,
    /// Positions per channel: the layer's `height * width`.
    pub pixels: usize,
}

impl<'a> Maps<'a> {
    fn channel(&self, k: usize) -> &'a [f32] {
        &self.values[k * self.pixels..(k + 1) * self.pixels]
    }
}

/// `Σ_k w_k A_k` (pytorch-grad-cam's `weighted_activations.sum(axis=1)`).
pub fn weighted_sum(acts: Maps<'_>, weights: &[f32]) -> Vec<f32> {
    let mut cam = vec![0f32; acts.pixels];
    for (k, &w) in weights.iter().enumerate().take(acts.channels) {
        for (c, &a) in cam.iter_mut().zip(acts.channel(k)) {
            *c += w * a;
        }
    }
    cam
}

/// Grad-CAM's channel weights: the spatial mean of each channel's gradient.
pub fn grad_cam_weights(grads: Maps<'_>) -> Vec<f32> {
    (0..grads.channels)
        .map(|k| grads.channel(k).iter().sum::<f32>() / grads.pixels as f32)
        .collect()
}

/// HiResCAM: `Σ_k G_k ⊙ A_k`, the gradient kept per pixel (equal to Grad-CAM's map when the
/// layer feeds global average pooling and a linear head directly, where `G` is constant over
/// the map).
pub fn hires_cam(acts: Maps<'_>, grads: Maps<'_>) -> Vec<f32> {
    let mut cam = vec![0f32; acts.pixels];
    for k in 0..acts.channels {
        for ((c, &a), &g) in cam.iter_mut().zip(acts.channel(k)).zip(grads.channel(k)) {
            *c += a * g;
        }
    }
    cam
}

/// Grad-CAM++'s channel weights (Chattopadhay et al. 2018, eq. 19, with the third derivative
/// of the exponentiated score written in first-order gradients as pytorch-grad-cam does):
/// `α = G² / (2G² + ΣA·G³ + 1e-6)` where `G ≠ 0`, `w_k = Σ_ij α·ReLU(G)`.
pub fn grad_cam_plus_plus_weights(acts: Maps<'_>, grads: Maps<'_>) -> Vec<f32> {
    (0..acts.channels)
        .map(|k| {
            let sum_a: f32 = acts.channel(k).iter().sum();
            grads
                .channel(k)
                .iter()
                .map(|&g| {
                    if g == 0.0 {
                        return 0.0;
                    }
                    let g2 = g * g;
                    let alpha = g2 / (2.0 * g2 + sum_a * g2 * g + 1e-6);
                    g.max(0.0) * alpha
                })
                .sum()
        })
        .collect()
}

/// EigenCAM: the activations' projection on their first principal component (pixels as
/// samples, channels as features, centred; pytorch-grad-cam's `get_2d_projection`), signed so
/// that the salient region is positive (its `get_2d_projection_with_sign_correction`: flipped
/// when `|min| > |max|`; an SVD's sign is otherwise arbitrary).
pub fn eigen_cam(acts: Maps<'_>) -> Vec<f32> {
    let (n, c) = (acts.pixels, acts.channels);
    let mean: Vec<f64> = (0..c)
        .map(|k| acts.channel(k).iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64)
        .collect();
    let centred = Mat::<f64>::from_fn(n, c, |i, k| f64::from(acts.channel(k)[i]) - mean[k]);
    // The first right singular vector is the top eigenvector of XᵀX (or Xᵀ·(XXᵀ's top
    // eigenvector) when there are fewer pixels than channels): the smaller Gram matrix.
    let direction: Vec<f64> = if c <= n {
        top_eigenvector(&(centred.transpose() * &centred))
    } else {
        let u = top_eigenvector(&(&centred * centred.transpose()));
        let v: Vec<f64> = (0..c)
            .map(|k| (0..n).map(|i| centred[(i, k)] * u[i]).sum())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / norm.max(f64::MIN_POSITIVE)).collect()
    };
    let mut projection: Vec<f64> = (0..n)
        .map(|i| (0..c).map(|k| centred[(i, k)] * direction[k]).sum())
        .collect();
    let max = projection.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = projection.iter().copied().fold(f64::INFINITY, f64::min);
    if min.abs() > max.abs() {
        projection.iter_mut().for_each(|p| *p = -*p);
    }
    projection.into_iter().map(|p| p as f32).collect()
}

/// The eigenvector of the symmetric matrix `m` with the largest eigenvalue.
fn top_eigenvector(m: &Mat<f64>) -> Vec<f64> {
    let d = m.nrows();
    match symmetric_eigen(m) {
        // Eigenvalues ascending: the last column.
        Ok((_, vectors)) => (0..d).map(|i| vectors[(i, d - 1)]).collect(),
        // Not reached for a finite symmetric matrix; an all-zero direction gives a flat map.
        Err(_) => vec![0.0; d],
    }
}

/// pytorch-grad-cam's post-processing at the layer's resolution: ReLU, then
/// `(x - min) / (max + 1e-7)` (`np.maximum(cam, 0)` and `scale_cam_image`). A map with no
/// positive value is all zeros.
pub fn scale(mut cam: Vec<f32>) -> Vec<f32> {
    cam.iter_mut().for_each(|v| *v = v.max(0.0));
    let min = cam.iter().copied().fold(f32::INFINITY, f32::min);
    cam.iter_mut().for_each(|v| *v -= min);
    let max = cam.iter().copied().fold(0f32, f32::max);
    cam.iter_mut().for_each(|v| *v /= 1e-7 + max);
    cam
}

/// Where an output pixel samples its source in bilinear resampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corners {
    /// Half-pixel centres: OpenCV's `cv2.resize`, PyTorch's `align_corners=False`. How a
    /// layer's map is laid over the image.
    HalfPixel,
    /// The corner pixels aligned (`torch.nn.UpsamplingBilinear2d`): how Score-CAM spreads each
    /// channel over the input.
    Aligned,
}

/// Bilinear resampling of an `h × w` map to `out_h × out_w`.
pub fn resize_bilinear(
    map: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
    corners: Corners,
) -> Vec<f32> {
    let axis = |out: usize, len: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|o| {
                let src = match corners {
                    Corners::HalfPixel => {
                        ((o as f32 + 0.5) * len as f32 / out as f32 - 0.5).max(0.0)
                    }
                    Corners::Aligned if out > 1 => o as f32 * (len - 1) as f32 / (out - 1) as f32,
                    Corners::Aligned => 0.0,
                };
                let i0 = (src.floor() as usize).min(len - 1);
                let i1 = (i0 + 1).min(len - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(out_h, h), axis(out_w, w));
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
            let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(values: &[f32], channels: usize) -> Maps<'_> {
        Maps {
            values,
            channels,
            pixels: values.len() / channels,
        }
    }

    #[test]
    fn grad_cam_is_the_gradient_weighted_sum_and_hires_keeps_it_per_pixel() {
        let a = [1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, 1.0];
        let g = [0.5, 0.5, 0.5, 0.5, -1.0, 1.0, -1.0, 1.0];
        let w = grad_cam_weights(maps(&g, 2));
        assert_eq!(w, vec![0.5, 0.0]);
        assert_eq!(weighted_sum(maps(&a, 2), &w), vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(
            hires_cam(maps(&a, 2), maps(&g, 2)),
            vec![0.5, 2.0, 1.5, 3.0]
        );
        // A constant gradient makes the two equal.
        let flat = [0.5; 8];
        assert_eq!(
            hires_cam(maps(&a, 2), maps(&flat, 2)),
            weighted_sum(maps(&a, 2), &grad_cam_weights(maps(&flat, 2)))
        );
    }

    #[test]
    fn scale_is_relu_then_min_max() {
        let s = scale(vec![-1.0, 0.0, 2.0, 4.0]);
        assert_eq!(s[0], 0.0);
        assert!((s[3] - 1.0).abs() < 1e-6 && (s[2] - 0.5).abs() < 1e-6);
        // All positive: the minimum is subtracted (pytorch-grad-cam's scale_cam_image).
        let s = scale(vec![2.0, 3.0]);
        assert_eq!(s[0], 0.0);
        assert_eq!(scale(vec![-1.0, -2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn eigen_cam_finds_the_dominant_pattern_with_a_positive_peak() {
        // Two channels carrying the same spatial pattern: the first component is that pattern.
        let pattern = [0.0, 0.0, 1.0, 5.0];
        let a: Vec<f32> = pattern
            .iter()
            .chain(pattern.iter().map(|p| p * 2.0).collect::<Vec<_>>().iter())
            .copied()
            .collect();
        let cam = eigen_cam(maps(&a, 2));
        let best = (0..4).max_by(|&i, &j| cam[i].total_cmp(&cam[j])).unwrap();
        assert_eq!(best, 3);
        assert!(cam[3] > 0.0);
        // Wide (more channels than pixels) takes the other Gram matrix, same answer.
        let wide: Vec<f32> = (0..6)
            .flat_map(|k| pattern.map(|p| p * (k as f32 + 1.0)))
            .collect();
        let cam = eigen_cam(maps(&wide, 6));
        let best = (0..4).max_by(|&i, &j| cam[i].total_cmp(&cam[j])).unwrap();
        assert_eq!(best, 3);
    }

    #[test]
    fn bilinear_resizes_match_opencv_and_torch_on_a_ramp() {
        // cv2.resize(np.float32([[0, 1]]), (4, 1)) = [0, .25, .75, 1].
        let ramp = [0.0, 1.0];
        let half = resize_bilinear(&ramp, (1, 2), (1, 4), Corners::HalfPixel);
        assert_eq!(half, vec![0.0, 0.25, 0.75, 1.0]);
        // UpsamplingBilinear2d(size=4) on [0, 1] = [0, 1/3, 2/3, 1].
        let up = resize_bilinear(&ramp, (1, 2), (1, 4), Corners::Aligned);
        assert!((up[1] - 1.0 / 3.0).abs() < 1e-6 && up[3] == 1.0);
    }
}
