//! Forward kernels on channels-last (NHWC) activations.
//!
//! In NCHW a 1×1 convolution over a batch is one product per image (or a gather into one big
//! matrix and a scatter back), the depthwise kernels transpose every image to channels-last and
//! back, and unfolding 3×3 patches of small planes gathers single pixels. In NHWC the batch *is*
//! a matrix `(images·pixels) × channels`: a pointwise convolution is one GEMM reading the input
//! in place and writing the output in place, unfolding copies runs of whole channel vectors, and
//! depthwise/pooling loops run over contiguous channels. This is PyTorch's `channels_last` memory
//! format, and how oneDNN runs these networks on CPUs.
//!
//! The forward passes live here, the backward steps in `channels_last_train.rs`. A network runs
//! channels-last when its input is converted once (`kernels::to_channels_last`): frozen,
//! BatchNorm-folded backbones for inference, and every network in training too.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::activation::Activation;
use super::buffers::scratch;
use super::conv::{ConvGeometry, matmul, matmul_uninit};
use super::depthwise::{self, forward_image_nhwc};
use super::pointwise;
use super::pool::PoolGeometry;
use super::transpose::transpose;

/// Floats of unfolded patches per chunk (16 MiB): large enough for a full-speed GEMM, small
/// enough to stay out of the way of the caches' working set.
pub(super) const COL_BUDGET: usize = 4 << 20;

/// Dense convolution (`groups == 1`): `x` (batch, h, w, c_in), `weight` stored HWIO
/// (`(kh, kw, c_in, c_out)`: what frozen backbones store and channels-last training keeps; the
/// GEMM reads it as stored and patches unfold as runs of whole channel vectors), optional `bias`
/// (c_out), then `act` → (batch, oh, ow, c_out).
///
/// `out[(image, pixel), c_out] = col[(image, pixel), patch] × weight`, the patch ordered
/// `(ky, kx, c_in)` like the weight's rows. A plain 1×1 convolution skips the unfolding: `x` is
/// the matrix, and the output buffer is written first by the GEMM (no zeroing), then bias and
/// activation are applied in one pass. Anything else goes by tap classes
/// (`conv2d_by_tap_class`).
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let rows = g.batch * oh * ow;
    let k = g.c_in;
    let total = rows * g.c_out;
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.padding == [(0, 0); 2];
    if !pointwise {
        return conv2d_by_tap_class(g, x, weight, bias, act);
    }
    if k == 0 || total == 0 {
        let mut out = vec![0.0f32; total];
        epilogue(&mut out, bias, act, g.c_out);
        return out;
    }
    let mut out = Vec::with_capacity(total);
    if pointwise::applies(k, g.c_out) {
        // A short reduction: register tiles with the epilogue fused (see `pointwise`).
        pointwise::pointwise_forward(
            rows,
            k,
            g.c_out,
            x,
            weight,
            bias,
            act,
            &mut out.spare_capacity_mut()[..total],
        );
        // SAFETY: the kernel wrote all `total` elements.
        unsafe { out.set_len(total) };
        return out;
    }
    // `dst (rows × c_out) = x (rows × c_in) × weight (c_in × c_out)`
    matmul_uninit(
        rows,
        g.c_out,
        k,
        &mut out.spare_capacity_mut()[..total],
        (g.c_out as isize, 1),
        x,
        (k as isize, 1),
        weight,
        (g.c_out as isize, 1),
    );
    // SAFETY: the GEMM wrote all `total` elements (rows × c_out, densely).
    unsafe { out.set_len(total) };
    epilogue(&mut out, bias, act, g.c_out);
    out
}

/// `out[row, c] = act(out[row, c] + bias[c])` in one pass over rows of `channels`.
fn epilogue(out: &mut [f32], bias: Option<&[f32]>, act: Activation, channels: usize) {
    if bias.is_none() && act == Activation::Identity {
        return;
    }
    out.par_chunks_mut(channels * 256).for_each(|rows| {
        for row in rows.chunks_mut(channels) {
            if let Some(bias) = bias {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
            act.apply(row);
        }
    });
}

/// Output positions `out` along one axis whose valid kernel taps (those that do not fall in the
/// padding) are exactly `taps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AxisRun {
    pub(super) out: std::ops::Range<usize>,
    pub(super) taps: std::ops::Range<usize>,
}

/// The output positions of one axis grouped into runs with the same valid taps: for a 3×3
/// kernel with padding 1 that is the first row (taps 1..3), the interior (0..3) and the last row
/// (0..2). Validity is separable, so a pixel's valid taps are a rectangle: (y run) × (x run).
pub(super) fn axis_runs(
    out: usize,
    size: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Vec<AxisRun> {
    let valid = |o: usize, t: usize| {
        let at = o * stride + t * dilation;
        at >= pad && at - pad < size
    };
    let mut runs: Vec<AxisRun> = Vec::new();
    for o in 0..out {
        // The valid taps of one output form a range: the input coordinate grows with the tap.
        let lo = (0..k).find(|&t| valid(o, t)).unwrap_or(k);
        let hi = (lo..k).find(|&t| !valid(o, t)).unwrap_or(k);
        let taps = lo..hi.max(lo);
        match runs.last_mut() {
            Some(run) if run.taps == taps => run.out.end = o + 1,
            _ => runs.push(AxisRun {
                out: o..o + 1,
                taps,
            }),
        }
    }
    runs
}

/// Dense convolution with HWIO weights, grouped by *tap class*: the output pixels whose valid
/// taps are the same rectangle are unfolded together, with only those taps, and multiplied by
/// only those rows of the weight. Padding taps are never multiplied: at the small planes of
/// transfer learning that is most of the work a plain unfolding would do (a 3×3 convolution on
/// a 1×1 plane has one valid tap out of nine, on a 2×2 plane four). oneDNN's direct kernels skip
/// padding the same way.
///
/// Each class goes through a staging matrix (its pixels × c_out), scattered to the output rows
/// with bias and activation in the same pass; every output row belongs to exactly one class.
fn conv2d_by_tap_class(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let (c_in, c_out) = (g.c_in, g.c_out);
    let image_out = oh * ow * c_out;
    let ys = axis_runs(oh, g.h, g.kh, g.stride[0], g.padding[0].0, g.dilation[0]);
    let xs = axis_runs(ow, g.w, g.kw, g.stride[1], g.padding[1].0, g.dilation[1]);
    let mut out: Vec<f32> = Vec::with_capacity(g.batch * image_out);
    let out_images = &mut out.spare_capacity_mut()[..g.batch * image_out];
    let (mut col_buf, mut staged_buf) = (Vec::new(), Vec::new());
    for yr in &ys {
        for xr in &xs {
            let (ny, nx) = (yr.out.len(), xr.out.len());
            let (nky, nkx) = (yr.taps.len(), xr.taps.len());
            let per_image = ny * nx;
            let k = nky * nkx * c_in;
            // One product per kernel row (the weight rows of a kernel row's valid taps are
            // contiguous), or one for all when every column tap is valid.
            let (groups, per_group) = if nkx == g.kw {
                (1, k)
            } else {
                (nky, nkx * c_in)
            };
            // One short product (a stem over 3 channels): the register-tiled kernel, bias and
            // activation included, and the scatter below only copies.
            let fused = groups == 1 && k <= pointwise::SHORT_K && pointwise::applies(k, c_out);
            let (row_bias, row_act) = match fused {
                true => (None, Activation::Identity),
                false => (bias, act),
            };
            let images = (COL_BUDGET / (per_image * k).max(1)).clamp(1, g.batch);
            for b0 in (0..g.batch).step_by(images) {
                let nb = images.min(g.batch - b0);
                let rows = nb * per_image;
                let staged = scratch(&mut staged_buf, rows * c_out);
                if k == 0 {
                    // Every tap in the padding: the output is the bias alone.
                    staged.fill(0.0);
                } else {
                    let col = scratch(&mut col_buf, rows * k);
                    unfold_class(g, x, b0, yr, xr, col);
                    if fused {
                        let w_row = (yr.taps.start * g.kw + xr.taps.start) * c_in;
                        // SAFETY: the kernel writes only finished values.
                        let staged = unsafe { super::buffers::as_uninit(staged) };
                        let w = &weight[w_row * c_out..];
                        pointwise::pointwise_forward(rows, k, c_out, col, w, bias, act, staged);
                    } else {
                        for i in 0..groups {
                            let ky = yr.taps.start + i;
                            let w_row = (ky * g.kw + xr.taps.start) * c_in;
                            matmul(
                                rows,
                                c_out,
                                per_group,
                                staged,
                                (c_out as isize, 1),
                                i > 0,
                                &col[i * per_group..],
                                (k as isize, 1),
                                &weight[w_row * c_out..],
                                (c_out as isize, 1),
                            );
                        }
                    }
                }
                out_images[b0 * image_out..(b0 + nb) * image_out]
                    .par_chunks_mut(image_out)
                    .zip(staged.par_chunks(per_image * c_out))
                    .for_each(|(image, rows)| {
                        for (j, src) in rows.chunks(c_out).enumerate() {
                            let (oy, ox) = (yr.out.start + j / nx, xr.out.start + j % nx);
                            let dst = &mut image[(oy * ow + ox) * c_out..][..c_out];
                            finish_row(src, row_bias, row_act, dst);
                        }
                    });
            }
        }
    }
    // SAFETY: the runs of each axis partition its output positions, so the classes partition
    // every image's pixels and each output row was written once above.
    unsafe { out.set_len(g.batch * image_out) };
    out
}

/// `dst = act(src + bias)`, into a row that may not be initialised yet.
#[inline]
fn finish_row(src: &[f32], bias: Option<&[f32]>, act: Activation, dst: &mut [MaybeUninit<f32>]) {
    match bias {
        Some(bias) => {
            for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                d.write(act.of(s + b));
            }
        }
        None => {
            for (d, s) in dst.iter_mut().zip(src) {
                d.write(act.of(*s));
            }
        }
    }
}

/// The class (`yr` × `xr`) pixels of images `b0..` unfolded into `col`, one row per pixel in
/// (image, oy, ox) order, each `[ky, kx, c_in]` over the class's taps only (all of them valid:
/// no zeros to write). A kernel row's taps read consecutive input pixels, copied as one run.
pub(super) fn unfold_class(
    g: &ConvGeometry,
    x: &[f32],
    b0: usize,
    yr: &AxisRun,
    xr: &AxisRun,
    col: &mut [f32],
) {
    let c = g.c_in;
    let (nky, nkx) = (yr.taps.len(), xr.taps.len());
    let (ny, nx) = (yr.out.len(), xr.out.len());
    let k = nky * nkx * c;
    let run = nkx * c;
    col.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
        let b = b0 + r / (ny * nx);
        let (oy, ox) = (yr.out.start + r / nx % ny, xr.out.start + r % nx);
        for (i, ky) in yr.taps.clone().enumerate() {
            let iy = oy * g.stride[0] + ky * g.dilation[0] - g.padding[0].0;
            let image_row = &x[(b * g.h + iy) * g.w * c..][..g.w * c];
            let dst = &mut row[i * run..][..run];
            let ix0 = ox * g.stride[1] + xr.taps.start * g.dilation[1] - g.padding[1].0;
            if g.dilation[1] == 1 {
                dst.copy_from_slice(&image_row[ix0 * c..][..run]);
            } else {
                for (j, d) in dst.chunks_mut(c).enumerate() {
                    d.copy_from_slice(&image_row[(ix0 + j * g.dilation[1]) * c..][..c]);
                }
            }
        }
    });
}

/// Depthwise convolution: `x` (batch, h, w, c), `weight` (c, 1, kh, kw), optional `bias` (c)
/// then `act` → (batch, oh, ow, c). One image per task, vectors along the channels.
pub fn depthwise_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    depthwise::check(g);
    let (oh, ow) = g.out_hw();
    let (c, taps) = (g.c_in, g.kh * g.kw);
    let mut w_tc = vec![0.0f32; taps * c];
    transpose(weight, c, taps, &mut w_tc);
    let zeros = vec![0.0f32; c];
    let bias = bias.unwrap_or(&zeros);
    let (image_in, image_out) = (g.h * g.w * c, oh * ow * c);
    // Written without zeroing first: the kernel writes every element of each image.
    let mut out: Vec<f32> = Vec::with_capacity(g.batch * image_out);
    out.spare_capacity_mut()[..g.batch * image_out]
        .par_chunks_mut(image_out.max(1))
        .zip(x.par_chunks(image_in.max(1)))
        .for_each(|(dst, src)| {
            forward_image_nhwc(g, src, &w_tc, bias, dst);
            // SAFETY: every element of this image was written just above.
            let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
            act.apply(dst);
        });
    // SAFETY: as above, for every image.
    unsafe { out.set_len(g.batch * image_out) };
    out
}

/// Max pooling: `x` (batch, h, w, channels) → (batch, oh, ow, channels); `g.planes` is
/// batch × channels. Same semantics as `pool::max_pool2d_forward` (padding never selected, NaN
/// propagates).
pub fn max_pool2d_forward(g: &PoolGeometry, channels: usize, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let c = channels;
    let batch = g.planes / c.max(1);
    let mut out = vec![f32::NEG_INFINITY; batch * oh * ow * c];
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / oh, row % oh);
            let (y0, y1) = PoolGeometry::window(oy, g.stride[0], g.padding[0], g.kernel[0], g.h);
            for ox in 0..ow {
                let (x0, x1) =
                    PoolGeometry::window(ox, g.stride[1], g.padding[1], g.kernel[1], g.w);
                let acc = &mut dst[ox * c..][..c];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        max_into(acc, &x[((b * g.h + iy) * g.w + ix) * c..][..c]);
                    }
                }
            }
        });
    out
}

/// `acc[i] = max(acc[i], src[i])`, a NaN taken and then kept (`v > NaN` is false), as
/// branch-free selects so that it vectorises.
#[inline(always)]
fn max_into_body(acc: &mut [f32], src: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(src) {
        let larger = if v > *a { v } else { *a };
        *a = if v.is_nan() { v } else { larger };
    }
}

wide_simd!(fn max_into(acc: &mut [f32], src: &[f32]) = max_into_body);

/// NCHW → NHWC, one image at a time.
pub fn nchw_to_nhwc(x: &[f32], batch: usize, c: usize, plane: usize) -> Vec<f32> {
    let mut out = super::buffers::zeros(batch * c * plane);
    out.par_chunks_mut(c * plane)
        .zip(x.par_chunks(c * plane))
        .for_each(|(dst, src)| transpose(src, c, plane, dst));
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::conv::tests::values;
    use crate::kernels::{conv, depthwise, pool};

    /// NHWC → NCHW, for comparing with the NCHW kernels.
    pub(crate) fn to_nchw(x: &[f32], batch: usize, c: usize, plane: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len()];
        for b in 0..batch {
            transpose(
                &x[b * c * plane..][..c * plane],
                plane,
                c,
                &mut out[b * c * plane..][..c * plane],
            );
        }
        out
    }

    pub(crate) fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    fn geometry(
        c_in: usize,
        c_out: usize,
        hw: usize,
        k: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> ConvGeometry {
        ConvGeometry {
            batch: 3,
            c_in,
            h: hw,
            w: hw + 1,
            c_out,
            kh: k,
            kw: k,
            stride: [stride, stride],
            padding: [pad, pad],
            dilation: [1, 1],
        }
    }

    /// Pointwise (the GEMM-only path), 3×3 stride 1 and 2, TF-same asymmetric padding, 7×7,
    /// mostly-padding planes, dilation.
    pub(crate) fn dense_geometries() -> Vec<ConvGeometry> {
        vec![
            geometry(5, 7, 6, 1, 1, (0, 0)),
            geometry(5, 7, 6, 1, 2, (0, 0)),
            geometry(4, 6, 7, 3, 1, (1, 1)),
            geometry(3, 8, 9, 3, 2, (0, 1)),
            geometry(3, 4, 11, 7, 2, (3, 3)),
            // ResNet's last stages at 32 px: 3×3 on 2×2 and 1×1 planes (mostly padding).
            ConvGeometry {
                h: 2,
                w: 2,
                ..geometry(4, 6, 2, 3, 1, (1, 1))
            },
            ConvGeometry {
                h: 1,
                w: 1,
                ..geometry(4, 6, 1, 3, 1, (1, 1))
            },
            ConvGeometry {
                h: 2,
                w: 2,
                ..geometry(4, 6, 2, 3, 2, (1, 1))
            },
            // Border outputs that see nothing but padding, and a dilated kernel.
            geometry(3, 4, 2, 1, 1, (2, 2)),
            ConvGeometry {
                dilation: [2, 2],
                ..geometry(3, 5, 8, 3, 1, (2, 2))
            },
        ]
    }

    #[test]
    fn dense_and_depthwise_match_the_nchw_kernels() {
        let dense = dense_geometries();
        for g in dense {
            let plane = g.h * g.w;
            let x = values(g.batch * g.c_in * plane, 1);
            let w = values(g.c_out * g.c_in * g.kh * g.kw, 2);
            let bias = values(g.c_out, 3);
            let want = conv::conv2d_forward(&g, &x, &w, Some(&bias));
            let x_nhwc = nchw_to_nhwc(&x, g.batch, g.c_in, plane);
            let id = Activation::Identity;
            // The weight stored HWIO: element (o, i, t) moves to (t, i, o).
            let (taps, k) = (g.kh * g.kw, g.c_in * g.kh * g.kw);
            let mut hwio = vec![0.0f32; w.len()];
            for o in 0..g.c_out {
                for i in 0..g.c_in {
                    for t in 0..taps {
                        hwio[(t * g.c_in + i) * g.c_out + o] = w[o * k + i * taps + t];
                    }
                }
            }
            let got = conv2d_forward(&g, &x_nhwc, &hwio, Some(&bias), id);
            let (oh, ow) = g.out_hw();
            assert_close(
                &to_nchw(&got, g.batch, g.c_out, oh * ow),
                &want,
                &format!("{g:?}"),
            );
        }
        for (hw, k, stride, pad) in [(5, 3, 1, (1, 1)), (9, 5, 2, (1, 2)), (20, 3, 2, (0, 1))] {
            let g = geometry(6, 6, hw, k, stride, pad);
            let plane = g.h * g.w;
            let x = values(g.batch * g.c_in * plane, 4);
            let w = values(g.c_in * g.kh * g.kw, 5);
            let bias = values(g.c_in, 6);
            let want = depthwise::depthwise_forward(&g, &x, &w, Some(&bias));
            let got = depthwise_forward(
                &g,
                &nchw_to_nhwc(&x, g.batch, g.c_in, plane),
                &w,
                Some(&bias),
                Activation::Identity,
            );
            let (oh, ow) = g.out_hw();
            assert_close(
                &to_nchw(&got, g.batch, g.c_in, oh * ow),
                &want,
                &format!("{g:?}"),
            );
        }
    }

    /// ResNet's stem pool (3×3, stride 2, padding 1) over `batch` images of `c` channels, 7×6.
    pub(crate) fn stem_pool(batch: usize, c: usize) -> PoolGeometry {
        PoolGeometry {
            planes: batch * c,
            h: 7,
            w: 6,
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        }
    }

    #[test]
    fn max_pool_matches_the_nchw_kernel_nan_included() {
        let (batch, c) = (2, 5);
        let g = stem_pool(batch, c);
        let mut x = values(batch * c * g.h * g.w, 7);
        x[13] = f32::NAN;
        let want = pool::max_pool2d_forward(&g, &x, None);
        let got = max_pool2d_forward(&g, c, &nchw_to_nhwc(&x, batch, c, g.h * g.w));
        let (oh, ow) = g.out_hw();
        let got = to_nchw(&got, batch, c, oh * ow);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a == b || (a.is_nan() && b.is_nan()), "[{i}]: {a} vs {b}");
        }
        assert!(
            got.iter().any(|v| v.is_nan()),
            "the NaN must reach the output"
        );
    }
}
