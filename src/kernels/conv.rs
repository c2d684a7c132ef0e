//! Dense 2-D convolution on plain `f32` slices (NCHW): forward, input gradient, weight gradient.
//!
//! The method is the classic lowering to one large matrix product: a chunk of images is unfolded
//! into a "column" matrix `col[(c_in, ky, kx), (image, oy, ox)]` (im2col), and
//! `out[c_out, (image, oy, ox)] = weight[c_out, (c_in, ky, kx)] × col`. Putting *several images*
//! side by side in the columns is what makes this fast for the small spatial sizes of transfer
//! learning (a 32 px CIFAR image is 1×1 in ResNet's last stage): every product has thousands of
//! columns, so the GEMM micro-kernel runs at full speed and the GEMM's own threads have work to
//! split. Chunks are sized to keep the column matrix in a few MiB.
//!
//! Backward uses the same pieces: `d_col = weightᵀ × d_out` folded back onto the input (col2im),
//! and `d_weight += d_out × colᵀ` accumulated over chunks. Nothing is kept from the forward pass
//! (the column matrix is recomputed), so training memory stays at the activations.
//!
//! Only `groups == 1` lives here: depthwise convolutions have no reduction to speak of and have
//! their own direct kernels (`depthwise.rs`); other grouped convolutions go to burn's op (see
//! `kernels::conv2d`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::transpose::transpose_strided;

/// Shapes and options of one convolution (NCHW input, OIHW weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images in the batch (`N`).
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height in pixels.
    pub h: usize,
    /// Input width in pixels.
    pub w: usize,
    /// Output channels (the weight's first dimension).
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride along the height and the width.
    pub stride: [usize; 2],
    /// (before, after) zero padding for the height and the width axes.
    pub padding: [(usize, usize); 2],
    /// Spacing between kernel taps along the height and the width (1: adjacent).
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Output height and width (PyTorch's formula; asymmetric padding allowed).
    pub fn out_hw(&self) -> (usize, usize) {
        let axis = |size: usize, k: usize, s: usize, (pb, pa): (usize, usize), d: usize| {
            (size + pb + pa - d * (k - 1) - 1) / s + 1
        };
        (
            axis(
                self.h,
                self.kh,
                self.stride[0],
                self.padding[0],
                self.dilation[0],
            ),
            axis(
                self.w,
                self.kw,
                self.stride[1],
                self.padding[1],
                self.dilation[1],
            ),
        )
    }

    /// The input pixel (`iy·w + ix` within a plane) that kernel tap (ky, kx) of output (oy, ox)
    /// reads, `None` where it falls in the padding.
    #[inline(always)]
    pub fn tap_source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let iy = (oy * self.stride[0] + ky * self.dilation[0]).checked_sub(self.padding[0].0)?;
        let ix = (ox * self.stride[1] + kx * self.dilation[1]).checked_sub(self.padding[1].0)?;
        (iy < self.h && ix < self.w).then_some(iy * self.w + ix)
    }

    /// When a single kernel tap `(ky, kx)` is the only one that ever reads inside the image (a
    /// 3×3 convolution on a 1×1 plane, ResNet's last stage at 32 px), the 1×1 convolution that
    /// computes the same thing, and the tap's index `ky·kw + kx`. Running that instead skips the
    /// taps that only ever multiply padding: 8/9 of the work, forward and backward.
    pub fn single_live_tap(&self) -> Option<(ConvGeometry, usize)> {
        if self.kh * self.kw <= 1 {
            return None;
        }
        let (oh, ow) = self.out_hw();
        let live = |out: usize, size: usize, k: usize, axis: usize| -> Vec<usize> {
            let (s, d, pad) = (self.stride[axis], self.dilation[axis], self.padding[axis].0);
            (0..k)
                .filter(|&t| {
                    let (lo, hi) = valid_range(out, size, s, t * d, pad);
                    lo < hi
                })
                .collect()
        };
        let (ys, xs) = (live(oh, self.h, self.kh, 0), live(ow, self.w, self.kw, 1));
        let (&[ky], &[kx]) = (ys.as_slice(), xs.as_slice()) else {
            return None;
        };
        // Output o reads input o·s + t·d - pad: the same as a 1×1 kernel with padding pad - t·d.
        let before_y = self.padding[0].0.checked_sub(ky * self.dilation[0])?;
        let before_x = self.padding[1].0.checked_sub(kx * self.dilation[1])?;
        let after = |out: usize, size: usize, s: usize, before: usize| {
            ((out - 1) * s + 1).saturating_sub(size + before)
        };
        let single = ConvGeometry {
            kh: 1,
            kw: 1,
            padding: [
                (before_y, after(oh, self.h, self.stride[0], before_y)),
                (before_x, after(ow, self.w, self.stride[1], before_x)),
            ],
            dilation: [1, 1],
            ..*self
        };
        (single.out_hw() == (oh, ow)).then_some((single, ky * self.kw + kx))
    }

    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    fn patch_len(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    fn out_plane(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }

    /// A pointwise convolution that reads every input pixel once, in order: no unfolding needed.
    fn is_plain_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [(0, 0), (0, 0)]
    }

    /// How many images go into one column matrix: enough columns for an efficient GEMM, few
    /// enough that the column matrix stays around `COL_BUDGET` floats.
    fn images_per_chunk(&self) -> usize {
        const MIN_COLUMNS: usize = 4096;
        const COL_BUDGET: usize = 4 << 20;
        let plane = self.out_plane().max(1);
        let wanted = MIN_COLUMNS.div_ceil(plane);
        let affordable = (COL_BUDGET / (self.patch_len() * plane).max(1)).max(1);
        wanted.min(affordable).clamp(1, self.batch.max(1))
    }
}

/// `dst := (if accumulate { dst } else { 0 }) + lhs × rhs` for row/column-strided f32 matrices,
/// `dst` being m×n, `lhs` m×k, `rhs` k×n. Strides are (row, column) in elements.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_strides.0 as usize + j * dst_strides.1 as usize] = 0.0;
                }
            }
        }
        return;
    }
    let (len, ptr) = (dst.len(), dst.as_mut_ptr());
    // SAFETY: `ptr` is valid for `len` writes and reads of initialised floats.
    unsafe {
        gemm_checked(
            m,
            n,
            k,
            ptr,
            len,
            dst_strides,
            accumulate,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// [`matmul`] without accumulation into a destination that need not be initialised (a fresh
/// buffer's spare capacity): the product writes every m×n entry and reads none, so the buffer
/// is not zeroed first — a single-threaded pass over the whole output saved.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_uninit(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<f32>],
    dst_strides: (isize, isize),
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    let (lhs, rhs) = ((lhs, lhs_strides), (rhs, rhs_strides));
    write_product(
        gemm::Parallelism::Rayon(0),
        (m, n, k),
        dst,
        dst_strides,
        lhs,
        rhs,
    );
}

/// `dst := lhs × rhs` on the calling thread, every entry of the m×n window written (none read,
/// so `dst` may be fresh memory): for the many small products that a caller already
/// runs in parallel (attention, one batch row per task), where splitting each product again
/// would only add synchronisation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serial_matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<f32>],
    dst_strides: (isize, isize),
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    let (lhs, rhs) = ((lhs, lhs_strides), (rhs, rhs_strides));
    write_product(
        gemm::Parallelism::None,
        (m, n, k),
        dst,
        dst_strides,
        lhs,
        rhs,
    );
}

/// An operand and its (row, column) strides.
type Operand<'a> = (&'a [f32], (isize, isize));

/// `dst := lhs × rhs` for [`matmul_uninit`] and [`serial_matmul`], split as `parallelism` says.
fn write_product(
    parallelism: gemm::Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    dst_strides: (isize, isize),
    (lhs, lhs_strides): Operand<'_>,
    (rhs, rhs_strides): Operand<'_>,
) {
    assert!(k > 0, "matmul into fresh memory: empty reduction");
    let (len, ptr) = (dst.len(), dst.as_mut_ptr().cast::<f32>());
    // SAFETY: `ptr` is valid for `len` writes; with `accumulate` false the GEMM never reads it.
    unsafe {
        gemm_checked(
            m,
            n,
            k,
            ptr,
            len,
            dst_strides,
            false,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            parallelism,
        )
    }
}

/// Checks that the three matrices fit their slices, then runs the GEMM (gemm crate, Rayon).
///
/// # Safety
/// `dst` must be valid for `dst_len` writes, and for reads of initialised values if
/// `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_checked(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_len: usize,
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, cols: usize, (rs, cs): (isize, isize)| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    // The bounds the unsafe call relies on, checked once per product.
    assert!(
        dst_len >= extent(m, n, dst_strides),
        "matmul: dst too small"
    );
    assert!(
        lhs.len() >= extent(m, k, lhs_strides),
        "matmul: lhs too small"
    );
    assert!(
        rhs.len() >= extent(k, n, rhs_strides),
        "matmul: rhs too small"
    );
    // SAFETY: the three extents were checked above; strides are non-negative and the slices do
    // not overlap (dst is borrowed mutably by the callers).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1,
            dst_strides.0,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.1,
            lhs_strides.0,
            rhs.as_ptr(),
            rhs_strides.1,
            rhs_strides.0,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The valid output range `lo..hi` along one axis for kernel offset `k_off` (= k·dilation):
/// outputs whose input coordinate `o·stride + k_off - pad` falls inside `0..size`.
fn valid_range(out: usize, size: usize, stride: usize, k_off: usize, pad: usize) -> (usize, usize) {
    // o·s + k_off >= pad  <=>  o >= ceil((pad - k_off) / s)
    let lo = if pad > k_off {
        (pad - k_off).div_ceil(stride)
    } else {
        0
    };
    // o·s + k_off - pad <= size - 1  <=>  o <= (size - 1 + pad - k_off) / s
    let hi = if size + pad > k_off {
        ((size - 1 + pad - k_off) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Unfolds images `first..first + count` into `col` (`patch_len × count·plane`, row-major).
fn im2col(g: &ConvGeometry, x: &[f32], first: usize, count: usize, col: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let plane_in = g.h * g.w;
    let plane_out = oh * ow;
    let row_len = count * plane_out;
    col.par_chunks_mut(row_len)
        .enumerate()
        .for_each_init(Vec::new, |gather, (r, row)| {
            let ci = r / (g.kh * g.kw);
            let ky = (r / g.kw) % g.kh;
            let kx = r % g.kw;
            let (ky_off, kx_off) = (ky * g.dilation[0], kx * g.dilation[1]);
            let (y_lo, y_hi) = valid_range(oh, g.h, g.stride[0], ky_off, g.padding[0].0);
            let (x_lo, x_hi) = valid_range(ow, g.w, g.stride[1], kx_off, g.padding[1].0);
            if ow < SHORT_ROW {
                // Short rows (the small planes of late stages): copy/fill calls per row would
                // cost more than the data, so gather through an index list shared by all images.
                gather.clear();
                gather.extend((0..plane_out).map(|p| {
                    let (oy, ox) = (p / ow, p % ow);
                    if (y_lo..y_hi).contains(&oy) && (x_lo..x_hi).contains(&ox) {
                        let iy = oy * g.stride[0] + ky_off - g.padding[0].0;
                        let ix = ox * g.stride[1] + kx_off - g.padding[1].0;
                        (iy * g.w + ix) as u32
                    } else {
                        u32::MAX
                    }
                }));
                for b in 0..count {
                    let src = &x[((first + b) * g.c_in + ci) * plane_in..][..plane_in];
                    let dst = &mut row[b * plane_out..][..plane_out];
                    for (d, i) in dst.iter_mut().zip(gather.iter()) {
                        *d = if *i == u32::MAX {
                            0.0
                        } else {
                            src[*i as usize]
                        };
                    }
                }
                return;
            }
            for b in 0..count {
                let src = &x[((first + b) * g.c_in + ci) * plane_in..][..plane_in];
                let dst = &mut row[b * plane_out..][..plane_out];
                dst[..y_lo * ow].fill(0.0);
                dst[y_hi * ow..].fill(0.0);
                for oy in y_lo..y_hi {
                    let iy = oy * g.stride[0] + ky_off - g.padding[0].0;
                    let src_row = &src[iy * g.w..][..g.w];
                    let dst_row = &mut dst[oy * ow..][..ow];
                    dst_row[..x_lo].fill(0.0);
                    dst_row[x_hi..].fill(0.0);
                    let ix0 = x_lo * g.stride[1] + kx_off - g.padding[1].0;
                    if g.stride[1] == 1 {
                        dst_row[x_lo..x_hi].copy_from_slice(&src_row[ix0..ix0 + (x_hi - x_lo)]);
                    } else {
                        for (o, d) in dst_row[x_lo..x_hi].iter_mut().enumerate() {
                            *d = src_row[ix0 + o * g.stride[1]];
                        }
                    }
                }
            }
        });
}

/// Output rows shorter than this are unfolded element by element through an index list.
const SHORT_ROW: usize = 16;

/// Folds `col` (as produced by [`im2col`] for images `first..first + count`) back onto `dx`,
/// adding every entry to the input pixel it was read from.
fn col2im(g: &ConvGeometry, col: &[f32], first: usize, count: usize, dx: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let plane_in = g.h * g.w;
    let plane_out = oh * ow;
    let row_len = count * plane_out;
    let taps = g.kh * g.kw;
    let planes = &mut dx[first * g.c_in * plane_in..(first + count) * g.c_in * plane_in];
    if ow < SHORT_ROW {
        // Short rows (the small planes of late stages): per-row loops would cost more than the
        // data, so every (tap, output pixel) → input pixel pair is listed once, for all planes.
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(taps * plane_out);
        for t in 0..taps {
            for p in 0..plane_out {
                if let Some(at) = g.tap_source(p / ow, p % ow, t / g.kw, t % g.kw) {
                    pairs.push(((t * row_len + p) as u32, at as u32));
                }
            }
        }
        planes
            .par_chunks_mut(plane_in)
            .enumerate()
            .for_each(|(bc, dst)| {
                let (b, ci) = (bc / g.c_in, bc % g.c_in);
                let src = &col[ci * taps * row_len + b * plane_out..];
                for &(s, d) in &pairs {
                    dst[d as usize] += src[s as usize];
                }
            });
        return;
    }
    // One task per (image, input channel) plane: the planes are disjoint, so no two tasks write
    // the same pixel.
    planes
        .par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(bc, dst)| {
            let (b, ci) = (bc / g.c_in, bc % g.c_in);
            for t in 0..taps {
                let (ky, kx) = (t / g.kw, t % g.kw);
                let (ky_off, kx_off) = (ky * g.dilation[0], kx * g.dilation[1]);
                let (y_lo, y_hi) = valid_range(oh, g.h, g.stride[0], ky_off, g.padding[0].0);
                let (x_lo, x_hi) = valid_range(ow, g.w, g.stride[1], kx_off, g.padding[1].0);
                let row = &col[(ci * taps + t) * row_len + b * plane_out..][..plane_out];
                for oy in y_lo..y_hi {
                    let iy = oy * g.stride[0] + ky_off - g.padding[0].0;
                    let dst_row = &mut dst[iy * g.w..][..g.w];
                    let src_row = &row[oy * ow..][..ow];
                    let ix0 = x_lo * g.stride[1] + kx_off - g.padding[1].0;
                    if g.stride[1] == 1 {
                        for (d, s) in dst_row[ix0..ix0 + (x_hi - x_lo)]
                            .iter_mut()
                            .zip(&src_row[x_lo..x_hi])
                        {
                            *d += s;
                        }
                    } else {
                        for (o, s) in src_row[x_lo..x_hi].iter().enumerate() {
                            dst_row[ix0 + o * g.stride[1]] += s;
                        }
                    }
                }
            }
        });
}

/// Copies images `first..first + count` of an NCHW tensor with `channels` channels into
/// channel-major order `[channel, (image, pixel)]`.
fn gather_channel_major(
    src: &[f32],
    channels: usize,
    plane: usize,
    first: usize,
    count: usize,
    dst: &mut [f32],
) {
    dst.par_chunks_mut(count * plane)
        .enumerate()
        .for_each(|(c, row)| {
            for b in 0..count {
                row[b * plane..][..plane]
                    .copy_from_slice(&src[((first + b) * channels + c) * plane..][..plane]);
            }
        });
}

/// The inverse of [`gather_channel_major`]: writes `[channel, (image, pixel)]` back to NCHW,
/// adding `bias[channel]` on the way when given (one pass over the output instead of two).
fn scatter_channel_major(
    src: &[f32],
    channels: usize,
    plane: usize,
    first: usize,
    count: usize,
    bias: Option<&[f32]>,
    dst: &mut [f32],
) {
    dst[first * channels * plane..(first + count) * channels * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(bc, out)| {
            let (b, c) = (bc / channels, bc % channels);
            let row = &src[c * count * plane + b * plane..][..plane];
            match bias {
                Some(bias) => out.iter_mut().zip(row).for_each(|(o, v)| *o = v + bias[c]),
                None => out.copy_from_slice(row),
            }
        });
}

/// Adds `bias[channel]` to each plane of a `(channels, plane)` block.
fn add_bias(out: &mut [f32], bias: &[f32], plane: usize) {
    out.par_chunks_mut(plane)
        .zip(bias.par_iter())
        .for_each(|(p, b)| p.iter_mut().for_each(|v| *v += b));
}

/// The input of images `first..first + count` as a `patch_len × count·plane` matrix: borrowed
/// when the convolution is a plain pointwise one over a single image, else built in `scratch`.
fn columns<'a>(
    g: &ConvGeometry,
    x: &'a [f32],
    first: usize,
    count: usize,
    scratch: &'a mut Vec<f32>,
) -> &'a [f32] {
    let plane_in = g.h * g.w;
    if g.is_plain_pointwise() && count == 1 {
        return &x[first * g.c_in * plane_in..][..g.c_in * plane_in];
    }
    scratch.resize(g.patch_len() * count * g.out_plane(), 0.0);
    if g.is_plain_pointwise() {
        gather_channel_major(x, g.c_in, plane_in, first, count, scratch);
    } else {
        im2col(g, x, first, count, scratch);
    }
    scratch
}

/// Forward convolution: `x` (batch, c_in, h, w), `weight` (c_out, c_in, kh, kw), optional
/// `bias` (c_out) → (batch, c_out, oh, ow), row-major.
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    conv2d_forward_keeping(g, x, weight, bias, false).0
}

/// [`conv2d_forward`] for a training step: also returns the column matrix, transposed as
/// [`conv2d_backward_weight_from`] reads it, when the whole batch fits one chunk (≤ 16 MiB), so
/// that the backward step does not unfold the input a second time.
pub fn conv2d_forward_for_training(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    conv2d_forward_keeping(g, x, weight, bias, g.images_per_chunk() >= g.batch)
}

fn conv2d_forward_keeping(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    keep_columns: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut kept = None;
    let plane = g.out_plane();
    let k = g.patch_len();
    let mut out = vec![0.0f32; g.batch * g.c_out * plane];
    let chunk = g.images_per_chunk();
    let mut scratch = Vec::new();
    let mut staged = Vec::new();
    for first in (0..g.batch).step_by(chunk) {
        let count = chunk.min(g.batch - first);
        let n = count * plane;
        let col = columns(g, x, first, count, &mut scratch);
        // A single image's product lands in the output directly; several images' are staged
        // channel-major and then scattered back to NCHW.
        let dst = if count == 1 {
            &mut out[first * g.c_out * plane..][..g.c_out * plane]
        } else {
            staged.resize(g.c_out * n, 0.0);
            &mut staged[..]
        };
        matmul(
            g.c_out,
            n,
            k,
            dst,
            (n as isize, 1),
            false,
            weight,
            (k as isize, 1),
            col,
            (n as isize, 1),
        );
        if keep_columns {
            kept = Some(transposed_columns(col, n, k));
        }
        // The bias is added while the chunk's output is still in cache.
        if count > 1 {
            scatter_channel_major(&staged, g.c_out, plane, first, count, bias, &mut out);
        } else if let Some(bias) = bias {
            add_bias(
                &mut out[first * g.c_out * plane..][..g.c_out * plane],
                bias,
                plane,
            );
        }
    }
    (out, kept)
}

/// The `k × n` column matrix transposed to `n × k`. The weight-gradient product reads it along
/// k; handed over k × n, the GEMM packs it through a generic strided copy (~2 ns a float, 15% of
/// a training step), where the 8×8-block transpose takes ~0.2 ns.
fn transposed_columns(col: &[f32], n: usize, k: usize) -> Vec<f32> {
    const COLUMNS_PER_TASK: usize = 64;
    let mut col_t = vec![0.0f32; n * k];
    col_t
        .par_chunks_mut(COLUMNS_PER_TASK * k)
        .enumerate()
        .for_each(|(t, dst)| {
            let j0 = t * COLUMNS_PER_TASK;
            let cols = (n - j0).min(COLUMNS_PER_TASK);
            transpose_strided(&col[j0..], n, k, cols, dst, k);
        });
    col_t
}

/// The output gradient of images `first..first + count` as a `c_out × count·plane` matrix.
fn grad_rows<'a>(
    g: &ConvGeometry,
    d_out: &'a [f32],
    first: usize,
    count: usize,
    scratch: &'a mut Vec<f32>,
) -> &'a [f32] {
    let plane = g.out_plane();
    if count == 1 {
        return &d_out[first * g.c_out * plane..][..g.c_out * plane];
    }
    scratch.resize(g.c_out * count * plane, 0.0);
    gather_channel_major(d_out, g.c_out, plane, first, count, scratch);
    scratch
}

/// Gradient of the loss with respect to the input, given the output gradient `d_out`.
pub fn conv2d_backward_input(g: &ConvGeometry, weight: &[f32], d_out: &[f32]) -> Vec<f32> {
    let plane = g.out_plane();
    let k = g.patch_len();
    let mut dx = vec![0.0f32; g.batch * g.c_in * g.h * g.w];
    let chunk = g.images_per_chunk();
    let (mut d_col, mut staged) = (Vec::new(), Vec::new());
    for first in (0..g.batch).step_by(chunk) {
        let count = chunk.min(g.batch - first);
        let n = count * plane;
        let rows = grad_rows(g, d_out, first, count, &mut staged);
        d_col.resize(k * n, 0.0);
        // d_col (k × n) = weightᵀ (k × c_out) × d_out (c_out × n)
        matmul(
            k,
            n,
            g.c_out,
            &mut d_col,
            (n as isize, 1),
            false,
            weight,
            (1, k as isize),
            rows,
            (n as isize, 1),
        );
        if g.is_plain_pointwise() {
            scatter_channel_major(&d_col, g.c_in, plane, first, count, None, &mut dx);
        } else {
            col2im(g, &d_col, first, count, &mut dx);
        }
    }
    dx
}

/// Gradient of the loss with respect to the weight (c_out, c_in, kh, kw).
pub fn conv2d_backward_weight(g: &ConvGeometry, x: &[f32], d_out: &[f32]) -> Vec<f32> {
    conv2d_backward_weight_from(g, x, d_out, None)
}

/// [`conv2d_backward_weight`], with the transposed column matrix of the whole batch when the
/// forward pass kept it ([`conv2d_forward_for_training`]).
pub fn conv2d_backward_weight_from(
    g: &ConvGeometry,
    x: &[f32],
    d_out: &[f32],
    kept_columns: Option<&[f32]>,
) -> Vec<f32> {
    let plane = g.out_plane();
    let k = g.patch_len();
    let mut dw = vec![0.0f32; g.c_out * k];
    let chunk = match kept_columns {
        Some(_) => g.batch,
        None => g.images_per_chunk(),
    };
    let (mut scratch, mut staged) = (Vec::new(), Vec::new());
    for (i, first) in (0..g.batch).step_by(chunk.max(1)).enumerate() {
        let count = chunk.min(g.batch - first);
        let n = count * plane;
        let made;
        let col_t = match kept_columns {
            Some(kept) => kept,
            None => {
                made = transposed_columns(columns(g, x, first, count, &mut scratch), n, k);
                &made[..]
            }
        };
        let rows = grad_rows(g, d_out, first, count, &mut staged);
        // d_weight (c_out × k) += d_out (c_out × n) × colᵀ (n × k)
        matmul(
            g.c_out,
            k,
            n,
            &mut dw,
            (k as isize, 1),
            i > 0,
            rows,
            (n as isize, 1),
            col_t,
            (k as isize, 1),
        );
    }
    dw
}

/// Gradient with respect to the bias: the output gradient summed over images and pixels.
pub fn conv2d_backward_bias(g: &ConvGeometry, d_out: &[f32]) -> Vec<f32> {
    let plane = g.out_plane();
    (0..g.c_out)
        .into_par_iter()
        .map(|c| {
            (0..g.batch)
                .map(|b| {
                    d_out[(b * g.c_out + c) * plane..][..plane]
                        .iter()
                        .sum::<f32>()
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The definition, six nested loops, in f64.
    fn reference(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (oh, ow) = g.out_hw();
        let mut out = vec![0.0; g.batch * g.c_out * oh * ow];
        for b in 0..g.batch {
            for co in 0..g.c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for ci in 0..g.c_in {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    if let Some(at) = g.tap_source(oy, ox, ky, kx) {
                                        let xv = x[(b * g.c_in + ci) * g.h * g.w + at];
                                        let wv = w[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        out[((b * g.c_out + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    /// Checks that `dx` and `dw` are the adjoints of the forward map `y(x, w)` along `d_out`:
    /// <d_out, y> = <dx, x> = <dw, w> (the convolution is linear in each argument).
    pub(crate) fn assert_adjoint(
        g: &ConvGeometry,
        y: &[f64],
        d_out: &[f32],
        (x, dx): (&[f32], &[f32]),
        (w, dw): (&[f32], &[f32]),
    ) {
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        let lhs: f64 = y.iter().zip(d_out).map(|(a, b)| a * *b as f64).sum();
        let (via_x, via_w) = (dot(dx, x), dot(dw, w));
        let tol = 1e-4 * lhs.abs().max(1.0);
        assert!(
            (lhs - via_x).abs() < tol,
            "{g:?}: input grad {via_x} vs {lhs}"
        );
        assert!(
            (lhs - via_w).abs() < tol,
            "{g:?}: weight grad {via_w} vs {lhs}"
        );
    }

    /// Deterministic test values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    fn geometries() -> Vec<ConvGeometry> {
        let base = ConvGeometry {
            batch: 3,
            c_in: 4,
            h: 9,
            w: 7,
            c_out: 5,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            padding: [(1, 1), (1, 1)],
            dilation: [1, 1],
        };
        vec![
            base,
            ConvGeometry {
                stride: [2, 2],
                ..base
            },
            ConvGeometry {
                padding: [(0, 1), (1, 2)],
                stride: [2, 1],
                ..base
            },
            ConvGeometry {
                kh: 1,
                kw: 1,
                padding: [(0, 0), (0, 0)],
                ..base
            },
            ConvGeometry {
                kh: 1,
                kw: 1,
                padding: [(0, 0), (0, 0)],
                stride: [2, 2],
                ..base
            },
            ConvGeometry {
                kh: 7,
                kw: 5,
                stride: [2, 2],
                padding: [(3, 3), (2, 2)],
                ..base
            },
            ConvGeometry {
                dilation: [2, 2],
                padding: [(2, 2), (2, 2)],
                ..base
            },
            ConvGeometry { batch: 1, ..base },
            // rows of at least SHORT_ROW outputs (the row-by-row unfolding paths)
            ConvGeometry {
                h: 5,
                w: 19,
                ..base
            },
            ConvGeometry {
                h: 4,
                w: 37,
                stride: [2, 2],
                ..base
            },
            // many images per chunk and a 1x1 output plane, like ResNet's last stage on CIFAR
            ConvGeometry {
                batch: 40,
                h: 2,
                w: 2,
                stride: [2, 2],
                ..base
            },
        ]
    }

    #[test]
    fn the_kept_column_matrix_gives_the_same_weight_gradient() {
        for g in geometries() {
            let x = values(g.batch * g.c_in * g.h * g.w, 11);
            let w = values(g.c_out * g.patch_len(), 12);
            let (out, kept) = conv2d_forward_for_training(&g, &x, &w, None);
            assert_eq!(out, conv2d_forward(&g, &x, &w, None), "{g:?}: output");
            let d_out = values(out.len(), 13);
            let recomputed = conv2d_backward_weight(&g, &x, &d_out);
            if let Some(kept) = kept {
                let from_kept = conv2d_backward_weight_from(&g, &x, &d_out, Some(&kept));
                for (a, b) in from_kept.iter().zip(&recomputed) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_single_live_tap_is_the_equivalent_pointwise_convolution() {
        // geometries()[0] (3×3, padding 1) on a 1×1 plane.
        let base = ConvGeometry {
            h: 1,
            w: 1,
            ..geometries()[0]
        };
        // 3×3 on 1×1 (centre tap), stride 2 from 1×1, TF-same stride 2 from 2×2 (two live taps
        // per axis: no reduction), and 2×2 planes (every tap live somewhere: none).
        let tf_same = [(0, 1), (0, 1)];
        let cases = [
            (base, Some(4)),
            (
                ConvGeometry {
                    stride: [2, 2],
                    ..base
                },
                Some(4),
            ),
            (
                ConvGeometry {
                    h: 2,
                    w: 2,
                    stride: [2, 2],
                    padding: tf_same,
                    ..base
                },
                None,
            ),
            (ConvGeometry { h: 2, w: 2, ..base }, None),
        ];
        for (g, want) in cases {
            let got = g.single_live_tap();
            assert_eq!(got.map(|(_, t)| t), want, "{g:?}");
            let Some((single, t)) = got else { continue };
            let x = values(g.batch * g.c_in * g.h * g.w, 8);
            let w = values(g.c_out * g.c_in * 9, 9);
            let w1: Vec<f32> = w.chunks(9).map(|taps| taps[t]).collect();
            let full = conv2d_forward(&g, &x, &w, None);
            let reduced = conv2d_forward(&single, &x, &w1, None);
            for (a, b) in full.iter().zip(&reduced) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geometries() {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(g.c_out * g.c_in * g.kh * g.kw, 2);
            let bias = values(g.c_out, 3);
            let got = conv2d_forward(&g, &x, &w, Some(&bias));
            let want = reference(&g, &x, &w);
            let plane = g.out_plane();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let b = b + bias[(i / plane) % g.c_out] as f64;
                assert!((*a as f64 - b).abs() < 1e-4, "{g:?} at {i}: {a} vs {b}");
            }
        }
    }

    /// The gradients are the adjoints of the forward map: for random `d_out`,
    /// <d_out, conv(x, w)> = <conv_backward_input(d_out), x> = <conv_backward_weight(d_out), w>.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        for g in geometries() {
            let x = values(g.batch * g.c_in * g.h * g.w, 4);
            let w = values(g.c_out * g.c_in * g.kh * g.kw, 5);
            let y = reference(&g, &x, &w);
            let d_out = values(y.len(), 6);
            let dx = conv2d_backward_input(&g, &w, &d_out);
            let dw = conv2d_backward_weight(&g, &x, &d_out);
            assert_adjoint(&g, &y, &d_out, (&x, &dx), (&w, &dw));
            let db = conv2d_backward_bias(&g, &d_out);
            let want_db: f32 = d_out[..g.out_plane()].iter().sum::<f32>()
                + (1..g.batch)
                    .map(|b| {
                        d_out[b * g.c_out * g.out_plane()..][..g.out_plane()]
                            .iter()
                            .sum::<f32>()
                    })
                    .sum::<f32>();
            assert!((db[0] - want_db).abs() < 1e-3, "{g:?}: bias grad");
        }
    }
}
