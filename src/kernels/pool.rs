//! 2-D max pooling on plain `f32` slices (NCHW), with PyTorch's semantics: padding is -inf (never
//! selected), the first maximum in the window wins, NaN propagates.
//!
//! Inference only needs the maxima; training also records, per output, the flat index (within its
//! plane) of the input it came from, which the backward pass adds the gradient to.

use rayon::prelude::*;

/// Shapes and options of one max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Number of (image, channel) planes.
    pub planes: usize,
    /// Input height in pixels.
    pub h: usize,
    /// Input width in pixels.
    pub w: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along the height and the width.
    pub stride: [usize; 2],
    /// Implicit −∞ padding on both sides of the height and the width axes.
    pub padding: [usize; 2],
}

impl PoolGeometry {
    /// Output height and width (PyTorch's formula, `ceil_mode = false`, dilation 1).
    pub fn out_hw(&self) -> (usize, usize) {
        let axis = |size: usize, k: usize, s: usize, p: usize| (size + 2 * p - k) / s + 1;
        (
            axis(self.h, self.kernel[0], self.stride[0], self.padding[0]),
            axis(self.w, self.kernel[1], self.stride[1], self.padding[1]),
        )
    }

    /// Input rows (or columns) `lo..hi` that output `o` covers along one axis, clipped to the image.
    pub(super) fn window(
        o: usize,
        stride: usize,
        pad: usize,
        k: usize,
        size: usize,
    ) -> (usize, usize) {
        let start = (o * stride) as isize - pad as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(size);
        (lo, hi)
    }
}

/// Max-pools every plane. With `argmax`, also fills it with each maximum's index in its plane.
pub fn max_pool2d_forward(g: &PoolGeometry, x: &[f32], argmax: Option<&mut [u32]>) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let (plane_in, plane_out) = (g.h * g.w, oh * ow);
    let mut out = vec![0.0f32; g.planes * plane_out];
    let pool_plane = |src: &[f32], dst: &mut [f32], mut idx: Option<&mut [u32]>| {
        for oy in 0..oh {
            let (y0, y1) = PoolGeometry::window(oy, g.stride[0], g.padding[0], g.kernel[0], g.h);
            for ox in 0..ow {
                let (x0, x1) =
                    PoolGeometry::window(ox, g.stride[1], g.padding[1], g.kernel[1], g.w);
                let (mut best, mut at) = (f32::NEG_INFINITY, y0 * g.w + x0);
                'window: for iy in y0..y1 {
                    for ix in x0..x1 {
                        let v = src[iy * g.w + ix];
                        if v > best || v.is_nan() {
                            (best, at) = (v, iy * g.w + ix);
                            if v.is_nan() {
                                break 'window;
                            }
                        }
                    }
                }
                dst[oy * ow + ox] = best;
                if let Some(idx) = idx.as_deref_mut() {
                    idx[oy * ow + ox] = at as u32;
                }
            }
        }
    };
    match argmax {
        Some(argmax) => out
            .par_chunks_mut(plane_out)
            .zip(argmax.par_chunks_mut(plane_out))
            .zip(x.par_chunks(plane_in))
            .for_each(|((dst, idx), src)| pool_plane(src, dst, Some(idx))),
        None => out
            .par_chunks_mut(plane_out)
            .zip(x.par_chunks(plane_in))
            .for_each_init(
                || vec![f32::NEG_INFINITY; g.w],
                |row_max, (dst, src)| pool_plane_separable(g, src, dst, row_max),
            ),
    }
    out
}

/// The larger of two values, NaN winning (as in PyTorch); branch-free so loops vectorise.
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// Max-pools one plane in two passes: the element-wise maximum of the window's input rows (a
/// vectorised loop over whole rows), then the maximum over each window's columns of that row.
fn pool_plane_separable(g: &PoolGeometry, src: &[f32], dst: &mut [f32], row_max: &mut [f32]) {
    let (_, ow) = g.out_hw();
    for (oy, out_row) in dst.chunks_mut(ow).enumerate() {
        let (y0, y1) = PoolGeometry::window(oy, g.stride[0], g.padding[0], g.kernel[0], g.h);
        row_max.fill(f32::NEG_INFINITY);
        for iy in y0..y1 {
            for (m, v) in row_max.iter_mut().zip(&src[iy * g.w..][..g.w]) {
                *m = max_nan(*m, *v);
            }
        }
        for (ox, o) in out_row.iter_mut().enumerate() {
            let (x0, x1) = PoolGeometry::window(ox, g.stride[1], g.padding[1], g.kernel[1], g.w);
            *o = row_max[x0..x1]
                .iter()
                .fold(f32::NEG_INFINITY, |m, v| max_nan(m, *v));
        }
    }
}

/// The input gradient: each output's gradient added to the input its maximum came from.
pub fn max_pool2d_backward(g: &PoolGeometry, argmax: &[u32], d_out: &[f32]) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let (plane_in, plane_out) = (g.h * g.w, oh * ow);
    let mut dx = vec![0.0f32; g.planes * plane_in];
    dx.par_chunks_mut(plane_in)
        .zip(argmax.par_chunks(plane_out))
        .zip(d_out.par_chunks(plane_out))
        .for_each(|((dst, idx), grad)| {
            for (i, d) in idx.iter().zip(grad) {
                dst[*i as usize] += d;
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_stem_pool_matches_the_definition() {
        let g = PoolGeometry {
            planes: 3,
            h: 7,
            w: 6,
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        let x: Vec<f32> = (0..g.planes * g.h * g.w)
            .map(|i| ((i * 37) % 23) as f32 - 11.0)
            .collect();
        let mut idx = vec![0u32; g.planes * 4 * 3];
        let out = max_pool2d_forward(&g, &x, Some(&mut idx));
        assert_eq!(g.out_hw(), (4, 3));
        for p in 0..g.planes {
            for oy in 0..4usize {
                for ox in 0..3usize {
                    let mut best = f32::NEG_INFINITY;
                    for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(g.h) {
                        for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(g.w) {
                            best = best.max(x[p * 42 + iy * g.w + ix]);
                        }
                    }
                    let o = p * 12 + oy * 3 + ox;
                    assert_eq!(out[o], best);
                    assert_eq!(x[p * 42 + idx[o] as usize], best);
                }
            }
        }
        assert_eq!(max_pool2d_forward(&g, &x, None), out, "separable path");
        let mut with_nan = x.clone();
        with_nan[5] = f32::NAN;
        let pooled = max_pool2d_forward(&g, &with_nan, None);
        // x[5] is row 0, column 5: only the window of output (0, 2) covers it.
        let nan_at: Vec<usize> = (0..pooled.len()).filter(|&i| pooled[i].is_nan()).collect();
        assert_eq!(nan_at, vec![2], "NaN propagates to exactly its window");
        let d_out = vec![1.0f32; out.len()];
        let dx = max_pool2d_backward(&g, &idx, &d_out);
        assert_eq!(dx.iter().sum::<f32>(), out.len() as f32);
    }
}
