//! Training kernels on channels-last (NHWC) activations: the backward steps of the dense
//! convolution and of max pooling, the pooling's argmax forward, and the weight-order changes
//! between PyTorch's OIHW parameters and the HWIO matrix the channels-last GEMMs read.
//!
//! The dense convolution's backward uses the same *tap classes* as its forward
//! (`channels_last::conv2d_by_tap_class`): the output pixels whose valid kernel taps are the same
//! rectangle are handled together, with only those taps, so that neither gradient multiplies
//! padding. For a class with unfolded patches `col` (pixels × taps·c_in), output gradient `dy`
//! (pixels × c_out) and weight rows `w` (taps·c_in × c_out):
//! `d_weight[rows of the class's taps] += colᵀ × dy` and `d_col = dy × wᵀ`, folded back onto the
//! input pixels the patches were read from. At the 2×2–8×8 planes ResNet trains on at 32 px,
//! 30–55% of a plain im2col's products multiply padding.

use rayon::prelude::*;

use super::buffers::{scratch, zeros};
use super::channels_last::{AxisRun, COL_BUDGET, axis_runs, unfold_class};
use super::conv::{ConvGeometry, matmul, matmul_uninit};
use super::pool::PoolGeometry;
use super::transpose::{transpose, transpose_strided};

/// Rows per task of the weight reorders.
const REORDER_ROWS: usize = 64;

/// An OIHW weight `(c_out, c_in, kh, kw)` reordered HWIO `(kh, kw, c_in, c_out)`: a transpose
/// to `(c_in, taps) × c_out`, then the rows permuted to `(taps, c_in)`. Both passes write
/// contiguous blocks in parallel: a step reorders every dense weight of the network (tens of
/// MiB for a ResNet), which single-threaded would leave a core idle for ~10% of the step.
pub fn oihw_to_hwio(w: &[f32], c_out: usize, c_in: usize, taps: usize) -> Vec<f32> {
    let k = c_in * taps;
    let mut t = zeros(w.len());
    t.par_chunks_mut(REORDER_ROWS * c_out)
        .enumerate()
        .for_each(|(i, dst)| {
            let r0 = i * REORDER_ROWS;
            transpose_strided(&w[r0..], k, c_out, dst.len() / c_out, dst, c_out);
        });
    if taps == 1 {
        return t;
    }
    permute_rows(&t, c_out, |r| {
        let (tap, ci) = (r / c_in, r % c_in);
        ci * taps + tap
    })
}

/// `src` (rows × cols) transposed, blocks of output rows in parallel.
fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = zeros(src.len());
    out.par_chunks_mut(REORDER_ROWS * rows)
        .enumerate()
        .for_each(|(i, dst)| {
            let c0 = i * REORDER_ROWS;
            transpose_strided(&src[c0..], cols, rows, dst.len() / rows, dst, rows);
        });
    out
}

/// `out` row `r` = `src` row `from(r)`, rows `len` long.
fn permute_rows(src: &[f32], len: usize, from: impl Fn(usize) -> usize + Sync) -> Vec<f32> {
    let mut out = zeros(src.len());
    out.par_chunks_mut(REORDER_ROWS * len)
        .enumerate()
        .for_each(|(i, block)| {
            for (j, dst) in block.chunks_mut(len).enumerate() {
                dst.copy_from_slice(&src[from(i * REORDER_ROWS + j) * len..][..len]);
            }
        });
    out
}

/// What [`conv2d_backward`] is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Compute the gradient with respect to the input `x`.
    pub input: bool,
    /// Compute the gradient with respect to the weight.
    pub weight: bool,
}

/// Gradients of the channels-last dense convolution `out = conv(x, weight)`: `x` (batch, h, w,
/// c_in), `weight` HWIO, `d_out` (batch, oh, ow, c_out). Returns the input gradient (NHWC) and
/// the weight gradient (HWIO), each when wanted.
pub fn conv2d_backward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    d_out: &[f32],
    wanted: Wanted,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (oh, ow) = g.out_hw();
    let (c_in, c_out) = (g.c_in, g.c_out);
    let mut dx = wanted.input.then(|| zeros(g.batch * g.h * g.w * c_in));
    // The input gradient's products read the weight transposed, `(c_out, taps·c_in)`: as a
    // row-major operand gemm packs it with plain copies, where the HWIO matrix read transposed
    // goes through its element-by-element packing (~2 ns a float, for every product).
    let k_full = g.kh * g.kw * c_in;
    let weight_t = wanted.input.then(|| transposed(weight, k_full, c_out));
    let ys = axis_runs(oh, g.h, g.kh, g.stride[0], g.padding[0].0, g.dilation[0]);
    let xs = axis_runs(ow, g.w, g.kw, g.stride[1], g.padding[1].0, g.dilation[1]);
    let whole_plane = ys.len() == 1 && xs.len() == 1;
    let mut classes: Vec<(&AxisRun, &AxisRun)> = ys
        .iter()
        .flat_map(|y| xs.iter().map(move |x| (y, x)))
        .collect();
    // A class whose every tap is valid (the interior) goes first: its first product writes the
    // whole weight gradient, which then needs no zeroing (tens of MiB per step for a ResNet).
    let every_tap = |(y, x): &(&AxisRun, &AxisRun)| y.taps.len() == g.kh && x.taps.len() == g.kw;
    let written_by_first = match classes.iter().position(every_tap) {
        Some(i) => {
            let interior = classes.remove(i);
            classes.insert(0, interior);
            true
        }
        None => false,
    };
    let weight_len = g.kh * g.kw * c_in * c_out;
    let mut dw = wanted.weight.then(|| match written_by_first {
        true => Vec::with_capacity(weight_len),
        false => zeros(weight_len),
    });
    let (mut col_buf, mut dy_buf, mut d_col_buf) = (Vec::new(), Vec::new(), Vec::new());
    for (yr, xr) in classes {
        let class = Class::new(g, yr, xr);
        if class.k == 0 {
            continue; // every tap in the padding: no gradient flows
        }
        let images = (COL_BUDGET / (class.per_image * class.k).max(1)).clamp(1, g.batch);
        for b0 in (0..g.batch).step_by(images) {
            let nb = images.min(g.batch - b0);
            let rows = nb * class.per_image;
            // The class's rows of the output gradient: in place when it is every pixel.
            let dy_rows: &[f32] = if whole_plane {
                &d_out[b0 * oh * ow * c_out..][..rows * c_out]
            } else {
                let dy = scratch(&mut dy_buf, rows * c_out);
                class.gather_rows(g, d_out, b0, dy);
                dy
            };
            // The two gradients are independent: run side by side, so that a core idles less
            // in the small products of the last stages (64 rows at 1×1 planes).
            let weight_step = || {
                if let Some(dw) = dw.as_mut() {
                    let col = scratch(&mut col_buf, rows * class.k);
                    unfold_class(g, x, b0, yr, xr, col);
                    if dw.is_empty() {
                        // The interior class's first chunk: every tap, so every element of
                        // d_weight = colᵀ × dy, written (not accumulated) into fresh memory.
                        matmul_uninit(
                            class.k,
                            c_out,
                            rows,
                            &mut dw.spare_capacity_mut()[..weight_len],
                            (c_out as isize, 1),
                            col,
                            (1, class.k as isize),
                            dy_rows,
                            (c_out as isize, 1),
                        );
                        // SAFETY: the product wrote all k × c_out = weight_len elements.
                        unsafe { dw.set_len(weight_len) };
                    } else {
                        for (w_row, offset, len) in class.weight_groups(g) {
                            // d_weight[w_row.., len × c_out] += col[:, offset..offset+len]ᵀ × dy
                            matmul(
                                len,
                                c_out,
                                rows,
                                &mut dw[w_row * c_out..],
                                (c_out as isize, 1),
                                true,
                                &col[offset..],
                                (1, class.k as isize),
                                dy_rows,
                                (c_out as isize, 1),
                            );
                        }
                    }
                }
            };
            let input_step = || {
                if let (Some(dx), Some(weight_t)) = (dx.as_deref_mut(), weight_t.as_deref()) {
                    let d_col = scratch(&mut d_col_buf, rows * class.k);
                    for (w_row, offset, len) in class.weight_groups(g) {
                        // d_col[:, offset..offset+len] = dy × weightᵀ[:, w_row..w_row+len]
                        matmul(
                            rows,
                            len,
                            c_out,
                            &mut d_col[offset..],
                            (class.k as isize, 1),
                            false,
                            dy_rows,
                            (c_out as isize, 1),
                            &weight_t[w_row..],
                            (k_full as isize, 1),
                        );
                    }
                    class.fold(g, d_col, b0, nb, dx);
                }
            };
            rayon::join(weight_step, input_step);
        }
    }
    (dx, dw)
}

/// One tap class: the output pixels `yr.out × xr.out` of every image, whose valid taps are
/// `yr.taps × xr.taps`.
struct Class<'a> {
    yr: &'a AxisRun,
    xr: &'a AxisRun,
    /// Pixels of the class in one image.
    per_image: usize,
    /// Patch length: valid taps × c_in.
    k: usize,
}

impl<'a> Class<'a> {
    fn new(g: &ConvGeometry, yr: &'a AxisRun, xr: &'a AxisRun) -> Self {
        Class {
            yr,
            xr,
            per_image: yr.out.len() * xr.out.len(),
            k: yr.taps.len() * xr.taps.len() * g.c_in,
        }
    }

    /// The class's weight rows as contiguous groups `(first HWIO row, offset in the patch,
    /// length)`: one per kernel row, or a single one when every column tap is valid (then the
    /// kernel rows' taps follow each other in the weight too).
    fn weight_groups(&self, g: &ConvGeometry) -> Vec<(usize, usize, usize)> {
        let first = |ky: usize| (ky * g.kw + self.xr.taps.start) * g.c_in;
        if self.xr.taps.len() == g.kw {
            return vec![(first(self.yr.taps.start), 0, self.k)];
        }
        let len = self.xr.taps.len() * g.c_in;
        self.yr
            .taps
            .clone()
            .enumerate()
            .map(|(i, ky)| (first(ky), i * len, len))
            .collect()
    }

    /// The output-gradient rows of the class's pixels of images `b0..`, in (image, oy, ox)
    /// order, into `dst` (as many rows as it holds).
    fn gather_rows(&self, g: &ConvGeometry, d_out: &[f32], b0: usize, dst: &mut [f32]) {
        let (oh, ow) = g.out_hw();
        let c = g.c_out;
        let nx = self.xr.out.len();
        dst.par_chunks_mut(self.per_image * c)
            .enumerate()
            .for_each(|(i, image)| {
                let src = &d_out[(b0 + i) * oh * ow * c..][..oh * ow * c];
                for (j, oy) in self.yr.out.clone().enumerate() {
                    let from = (oy * ow + self.xr.out.start) * c;
                    image[j * nx * c..][..nx * c].copy_from_slice(&src[from..][..nx * c]);
                }
            });
    }

    /// Adds each patch gradient row of `d_col` (images `b0..b0 + nb`) onto the input pixels the
    /// patch was unfolded from (see `unfold_class`). One task per image: patches of one image
    /// overlap, those of different images do not.
    fn fold(&self, g: &ConvGeometry, d_col: &[f32], b0: usize, nb: usize, dx: &mut [f32]) {
        let c = g.c_in;
        let image_len = g.h * g.w * c;
        let (ny, nx) = (self.yr.out.len(), self.xr.out.len());
        let run = self.xr.taps.len() * c;
        dx[b0 * image_len..(b0 + nb) * image_len]
            .par_chunks_mut(image_len)
            .zip(d_col.par_chunks(self.per_image * self.k))
            .for_each(|(image, patches)| {
                for (r, patch) in patches.chunks(self.k).enumerate() {
                    let (oy, ox) = (self.yr.out.start + r / nx % ny, self.xr.out.start + r % nx);
                    let ix0 =
                        ox * g.stride[1] + self.xr.taps.start * g.dilation[1] - g.padding[1].0;
                    for (i, ky) in self.yr.taps.clone().enumerate() {
                        let iy = oy * g.stride[0] + ky * g.dilation[0] - g.padding[0].0;
                        let src = &patch[i * run..][..run];
                        let row = &mut image[iy * g.w * c..][..g.w * c];
                        if g.dilation[1] == 1 {
                            add_into(&mut row[ix0 * c..][..run], src);
                        } else {
                            for (j, s) in src.chunks(c).enumerate() {
                                add_into(&mut row[(ix0 + j * g.dilation[1]) * c..][..c], s);
                            }
                        }
                    }
                }
            });
    }
}

#[inline(always)]
fn add_into_body(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

wide_simd!(fn add_into(dst: &mut [f32], src: &[f32]) = add_into_body);

/// The bias gradient: `d_out` (rows × c_out) summed over its rows, in f64 per block of rows and
/// the blocks added in order (the same result whatever the thread schedule).
pub fn bias_gradient(d_out: &[f32], c_out: usize) -> Vec<f32> {
    super::batch_norm::column_sums(d_out, c_out)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// Max pooling for training: `x` (batch, h, w, channels) → the maxima (batch, oh, ow,
/// channels) and, for each, the index `iy·w + ix` of the input pixel it came from. Same
/// semantics as `pool::max_pool2d_forward`: padding never selected, the first maximum wins,
/// a NaN is taken and kept.
pub fn max_pool2d_forward_argmax(
    g: &PoolGeometry,
    channels: usize,
    x: &[f32],
) -> (Vec<f32>, Vec<u32>) {
    let (oh, ow) = g.out_hw();
    let c = channels;
    let batch = g.planes / c.max(1);
    let mut out = vec![f32::NEG_INFINITY; batch * oh * ow * c];
    let mut argmax = vec![0u32; out.len()];
    out.par_chunks_mut(ow * c)
        .zip(argmax.par_chunks_mut(ow * c))
        .enumerate()
        .for_each(|(row, (dst, idx))| {
            let (b, oy) = (row / oh, row % oh);
            let (y0, y1) = PoolGeometry::window(oy, g.stride[0], g.padding[0], g.kernel[0], g.h);
            for ox in 0..ow {
                let (x0, x1) =
                    PoolGeometry::window(ox, g.stride[1], g.padding[1], g.kernel[1], g.w);
                let (acc, at) = (&mut dst[ox * c..][..c], &mut idx[ox * c..][..c]);
                at.fill((y0 * g.w + x0) as u32);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let src = &x[((b * g.h + iy) * g.w + ix) * c..][..c];
                        max_argmax_into(acc, at, src, (iy * g.w + ix) as u32);
                    }
                }
            }
        });
    (out, argmax)
}

/// `acc = max(acc, src)` with `at` updated where `src` wins: strictly larger, or a NaN where
/// `acc` holds none yet (a NaN then stays, as in the NCHW kernel, which stops at it).
#[inline(always)]
fn max_argmax_into_body(acc: &mut [f32], at: &mut [u32], src: &[f32], here: u32) {
    for ((a, i), &v) in acc.iter_mut().zip(at.iter_mut()).zip(src) {
        let wins = v > *a || (v.is_nan() && !a.is_nan());
        *a = if wins { v } else { *a };
        *i = if wins { here } else { *i };
    }
}

wide_simd!(fn max_argmax_into(acc: &mut [f32], at: &mut [u32], src: &[f32], here: u32) = max_argmax_into_body);

/// The max pool's input gradient: each output gradient added to the input pixel (same channel)
/// its maximum came from. One task per image.
pub fn max_pool2d_backward(
    g: &PoolGeometry,
    channels: usize,
    argmax: &[u32],
    d_out: &[f32],
) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let c = channels;
    let batch = g.planes / c.max(1);
    let mut dx = zeros(batch * g.h * g.w * c);
    dx.par_chunks_mut(g.h * g.w * c)
        .zip(argmax.par_chunks(oh * ow * c))
        .zip(d_out.par_chunks(oh * ow * c))
        .for_each(|((image, idx), grad)| {
            for (pixel_idx, pixel_grad) in idx.chunks(c).zip(grad.chunks(c)) {
                for (ch, (i, d)) in pixel_idx.iter().zip(pixel_grad).enumerate() {
                    image[*i as usize * c + ch] += d;
                }
            }
        });
    dx
}

/// NHWC → NCHW, one image at a time.
pub fn nhwc_to_nchw(x: &[f32], batch: usize, c: usize, plane: usize) -> Vec<f32> {
    let mut out = zeros(batch * c * plane);
    out.par_chunks_mut(c * plane)
        .zip(x.par_chunks(c * plane))
        .for_each(|(dst, src)| transpose(src, plane, c, dst));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::batch_norm::{
        NormGeometry, batch_stats, batch_stats_nhwc, inv_std, normalize_backward,
        normalize_backward_nhwc, normalize_nhwc,
    };
    use crate::kernels::channels_last::nchw_to_nhwc;
    use crate::kernels::channels_last::tests::{
        assert_close, dense_geometries, stem_pool, to_nchw,
    };
    use crate::kernels::conv::tests::values;
    use crate::kernels::{conv, pool};

    /// The inverse of [`oihw_to_hwio`].
    fn hwio_to_oihw(w: &[f32], c_out: usize, c_in: usize, taps: usize) -> Vec<f32> {
        let k = c_in * taps;
        let rows_ci_tap = if taps == 1 {
            std::borrow::Cow::Borrowed(w)
        } else {
            std::borrow::Cow::Owned(permute_rows(w, c_out, |r| {
                let (ci, tap) = (r / taps, r % taps);
                tap * c_in + ci
            }))
        };
        transposed(&rows_ci_tap, k, c_out)
    }

    #[test]
    fn weight_orders_round_trip() {
        // One block, several blocks of rows (> 64) in both passes, and a pointwise weight.
        for (c_out, c_in, taps) in [(5, 3, 9), (70, 10, 9), (130, 67, 1)] {
            let w = values(c_out * c_in * taps, 1);
            let hwio = oihw_to_hwio(&w, c_out, c_in, taps);
            for o in 0..c_out {
                for i in 0..c_in {
                    for t in 0..taps {
                        let (h, w) = (
                            hwio[(t * c_in + i) * c_out + o],
                            w[(o * c_in + i) * taps + t],
                        );
                        assert_eq!(h, w, "({c_out}, {c_in}, {taps}) at ({o}, {i}, {t})");
                    }
                }
            }
            assert_eq!(hwio_to_oihw(&hwio, c_out, c_in, taps), w);
        }
    }

    /// Both gradients, by tap classes, equal the NCHW kernels' (full im2col) on every geometry
    /// the forward is tested on: padding-only borders, 1×1 and 2×2 planes, stride, dilation.
    #[test]
    fn conv_gradients_match_the_nchw_kernels() {
        for g in dense_geometries() {
            let (plane, (oh, ow)) = (g.h * g.w, g.out_hw());
            let x = values(g.batch * g.c_in * plane, 1);
            let w = values(g.c_out * g.c_in * g.kh * g.kw, 2);
            let d_out = values(g.batch * g.c_out * oh * ow, 3);
            let want_dx = conv::conv2d_backward_input(&g, &w, &d_out);
            let want_dw = conv::conv2d_backward_weight(&g, &x, &d_out);
            let want_db = conv::conv2d_backward_bias(&g, &d_out);
            let d_out_nhwc = nchw_to_nhwc(&d_out, g.batch, g.c_out, oh * ow);
            let taps = g.kh * g.kw;
            let wanted = Wanted {
                input: true,
                weight: true,
            };
            let (dx, dw) = conv2d_backward(
                &g,
                &nchw_to_nhwc(&x, g.batch, g.c_in, plane),
                &oihw_to_hwio(&w, g.c_out, g.c_in, taps),
                &d_out_nhwc,
                wanted,
            );
            let dx = to_nchw(&dx.unwrap(), g.batch, g.c_in, plane);
            assert_close(&dx, &want_dx, &format!("dx {g:?}"));
            let dw = hwio_to_oihw(&dw.unwrap(), g.c_out, g.c_in, taps);
            assert_close(&dw, &want_dw, &format!("dw {g:?}"));
            assert_close(&bias_gradient(&d_out_nhwc, g.c_out), &want_db, "db");
        }
    }

    /// Large enough that a class's patches take two chunks of images: the interior class's
    /// first chunk writes the weight gradient, the second accumulates onto it.
    #[test]
    fn conv_gradients_over_several_image_chunks() {
        let g = ConvGeometry {
            batch: 3,
            c_in: 64,
            h: 64,
            w: 64,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            padding: [(1, 1), (1, 1)],
            dilation: [1, 1],
        };
        let (plane, (oh, ow)) = (g.h * g.w, g.out_hw());
        assert!(
            g.batch * plane * 9 * g.c_in > COL_BUDGET,
            "needs more than one chunk"
        );
        let x = values(g.batch * g.c_in * plane, 5);
        let d_out = values(g.batch * g.c_out * oh * ow, 6);
        let w = values(g.c_out * g.c_in * 9, 7);
        let want_dw = conv::conv2d_backward_weight(&g, &x, &d_out);
        let wanted = Wanted {
            input: false,
            weight: true,
        };
        let (dx, dw) = conv2d_backward(
            &g,
            &nchw_to_nhwc(&x, g.batch, g.c_in, plane),
            &oihw_to_hwio(&w, g.c_out, g.c_in, 9),
            &nchw_to_nhwc(&d_out, g.batch, g.c_out, oh * ow),
            wanted,
        );
        assert!(dx.is_none());
        let dw = hwio_to_oihw(&dw.unwrap(), g.c_out, g.c_in, 9);
        assert_close(&dw, &want_dw, "dw");
    }

    /// Small planes (where the NCHW kernel transposes per image) and a large one (where it
    /// runs per plane), stride 2 and asymmetric padding.
    #[test]
    fn depthwise_gradients_match_the_nchw_kernels() {
        let geometry = |hw: usize, k: usize, stride: usize, pad: (usize, usize)| ConvGeometry {
            batch: 5,
            c_in: 19,
            h: hw,
            w: hw + 1,
            c_out: 19,
            kh: k,
            kw: k,
            stride: [stride, stride],
            padding: [pad, pad],
            dilation: [1, 1],
        };
        for g in [
            geometry(5, 3, 1, (1, 1)),
            geometry(9, 5, 2, (1, 2)),
            geometry(24, 3, 1, (1, 1)),
        ] {
            let (plane, (oh, ow)) = (g.h * g.w, g.out_hw());
            let x = values(g.batch * g.c_in * plane, 1);
            let w = values(g.c_in * g.kh * g.kw, 2);
            let d_out = values(g.batch * g.c_in * oh * ow, 3);
            let (want_dx, want_dw) =
                crate::kernels::depthwise::depthwise_backward(&g, &x, &w, &d_out);
            let (dx, dw) = crate::kernels::depthwise::depthwise_backward_nhwc(
                &g,
                &nchw_to_nhwc(&x, g.batch, g.c_in, plane),
                &w,
                &nchw_to_nhwc(&d_out, g.batch, g.c_in, oh * ow),
            );
            assert_close(
                &to_nchw(&dx, g.batch, g.c_in, plane),
                &want_dx,
                &format!("dx {g:?}"),
            );
            assert_close(&dw, &want_dw, &format!("dw {g:?}"));
        }
    }

    #[test]
    fn max_pool_matches_the_nchw_kernel_with_ties_and_nan() {
        let (batch, c) = (2, 5);
        let g = stem_pool(batch, c);
        let plane = g.h * g.w;
        // Few distinct values: many ties, where the first maximum must win.
        let mut x: Vec<f32> = (0..batch * c * plane)
            .map(|i| ((i * 7) % 5) as f32)
            .collect();
        x[17] = f32::NAN;
        let (oh, ow) = g.out_hw();
        let mut want_idx = vec![0u32; g.planes * oh * ow];
        let want = pool::max_pool2d_forward(&g, &x, Some(&mut want_idx));
        let (got, idx) = max_pool2d_forward_argmax(&g, c, &nchw_to_nhwc(&x, batch, c, plane));
        let got = to_nchw(&got, batch, c, oh * ow);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a == b || (a.is_nan() && b.is_nan()), "max[{i}]: {a} vs {b}");
        }
        let d_out = values(want.len(), 4);
        let want_dx = pool::max_pool2d_backward(&g, &want_idx, &d_out);
        let dx = max_pool2d_backward(&g, c, &idx, &nchw_to_nhwc(&d_out, batch, c, oh * ow));
        assert_close(&to_nchw(&dx, batch, c, plane), &want_dx, "dx");
    }

    #[test]
    fn batch_norm_matches_the_nchw_kernels() {
        let g = NormGeometry {
            batch: 3,
            channels: 21,
            plane: 45,
        };
        let n = g.batch * g.channels * g.plane;
        let (x, dy) = (values(n, 1), values(n, 2));
        let (gamma, beta) = (values(g.channels, 3), values(g.channels, 4));
        let nhwc = |v: &[f32]| nchw_to_nhwc(v, g.batch, g.channels, g.plane);
        let (mean, var) = batch_stats(&g, &x);
        let (mean_cl, var_cl) = batch_stats_nhwc(g.channels, &nhwc(&x));
        assert_close(&mean_cl, &mean, "mean");
        assert_close(&var_cl, &var, "var");
        let inv = inv_std(&var, 1e-5);
        let y = crate::kernels::batch_norm::normalize(&g, &x, &mean, &inv, &gamma, &beta);
        let y_cl = normalize_nhwc(&nhwc(&x), &mean, &inv, &gamma, &beta);
        assert_close(&to_nchw(&y_cl, g.batch, g.channels, g.plane), &y, "y");
        let (dx, dgamma, dbeta) = normalize_backward(&g, &x, &mean, &inv, &gamma, &dy);
        let (dx_cl, dgamma_cl, dbeta_cl) =
            normalize_backward_nhwc(&nhwc(&x), &mean, &inv, &gamma, &nhwc(&dy));
        assert_close(&to_nchw(&dx_cl, g.batch, g.channels, g.plane), &dx, "dx");
        assert_close(&dgamma_cl, &dgamma, "dgamma");
        assert_close(&dbeta_cl, &dbeta, "dbeta");
    }
}
