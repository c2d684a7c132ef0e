//! Pointwise (1×1) convolutions with a short reduction, channels-last: `out = act(x · w + bias)`
//! with `x` (rows × k), `w` (k × n), written in one pass.
//!
//! The expansion and projection convolutions of EfficientNet's early blocks multiply by 16–64
//! input channels. A general GEMM packs both operands and then does only k = 16–64 steps per
//! output tile, so packing and the output's round trip dominate; and the bias and activation
//! take a second pass over an output that no longer fits in cache. Here each tile of 6 rows ×
//! up to 64 columns keeps its sums in registers: one broadcast of an input element and one load
//! of a weight vector per 4–24 multiply-adds, no packing (the weight matrix is a few KiB and
//! stays in L1), and the epilogue applied before the single store. Sums run over `k` in order
//! and the bias is added after them, as the GEMM-then-epilogue path does.
//!
//! AVX-512 only (the intrinsics are explicit, so the code is what runs); elsewhere, and for
//! long reductions with large weights ([`applies`]), `channels_last::conv2d_forward` uses the
//! gemm crate.

use std::mem::MaybeUninit;

use super::activation::Activation;

/// Reductions up to this length always take this kernel (the general GEMM's packing does not
/// pay for itself).
pub(super) const SHORT_K: usize = 64;

/// Longer reductions take it while the weight matrix (k × n floats, read again by every tile
/// of rows) stays in L2 with room to spare: 96 Ki floats, 384 KiB of the 1–2 MiB of current
/// cores. Measured on EfficientNet-Lite0's shapes: 112 × 672 and 480 × 112 gain, 192 × 1152
/// loses.
const MAX_WEIGHT: usize = 96 << 10;

/// Input floats per task (128 KiB): the task's rows stay in L2 while every column block reads
/// them, and a batch of small planes still splits into enough tasks for every thread.
const INPUT_PER_TASK: usize = 32 << 10;

/// Whether [`pointwise_forward`] runs on this CPU for a `k` × `n` weight.
pub(super) fn applies(k: usize, n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        k > 0
            && (k <= SHORT_K || k * n <= MAX_WEIGHT)
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, n);
        false
    }
}

/// `out[r, :] = act(Σ_i x[r, i] · w[i, :] + bias)` for `rows` rows; `x` is rows × k, `w` is
/// k × n (row-major, HWIO for a 1×1 kernel), `out` rows × n, every element written once.
///
/// # Panics
/// If [`applies`] is false for `k` × `n`, or a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)] // a GEMM's shape, operands and epilogue
pub(super) fn pointwise_forward(
    rows: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [MaybeUninit<f32>],
) {
    use rayon::prelude::*;
    assert!(
        applies(k, n),
        "pointwise_forward: {k} × {n} unsupported here"
    );
    assert!(x.len() >= rows * k && w.len() >= k * n && out.len() >= rows * n);
    if let Some(b) = bias {
        assert!(b.len() >= n);
    }
    if rows == 0 || n == 0 {
        return;
    }
    let rows_per_task = (INPUT_PER_TASK / k).clamp(24, 1024);
    out[..rows * n]
        .par_chunks_mut(rows_per_task * n)
        .zip(x[..rows * k].par_chunks(rows_per_task * k))
        .for_each(|(out, x)| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX-512F; the chunks hold `out.len() / n` whole rows of
            // both matrices, and `w` (and `bias`) were checked above.
            unsafe {
                avx512::rows(out.len() / n, k, n, x, w, bias, act, out)
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use crate::kernels::activation::Activation;

    /// Rows per register tile: 6 rows × 4 vectors = 24 accumulators of 32.
    const R: usize = 6;

    /// All `rows` rows, in column blocks of up to 64 (4 vectors; the last vector masked).
    ///
    /// # Safety
    /// AVX-512F present; `x` holds rows × k, `w` k × n, `out` rows × n, `bias` (if any) n.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows(
        rows: usize,
        k: usize,
        n: usize,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [MaybeUninit<f32>],
    ) {
        let out = out.as_mut_ptr().cast::<f32>();
        let (x, w) = (x.as_ptr(), w.as_ptr());
        let bias = bias.map(|b| b.as_ptr());
        let mut c0 = 0;
        while c0 < n {
            let width = (n - c0).min(64);
            let vectors = width.div_ceil(16);
            let tail = width - (vectors - 1) * 16;
            let mask: __mmask16 = if tail == 16 {
                0xffff
            } else {
                (1u16 << tail) - 1
            };
            let t = Tile {
                k,
                n,
                c0,
                mask,
                bias,
                act,
            };
            let mut r = 0;
            // SAFETY (all calls): rows r..r+R (or r) exist in `x` and `out`, columns
            // c0..c0+width in `w`, `out` and `bias`; the last vector is masked to `width`.
            unsafe {
                while r + R <= rows {
                    t.rows::<R>(vectors, x.add(r * k), w, out.add(r * n));
                    r += R;
                }
                while r < rows {
                    t.rows::<1>(vectors, x.add(r * k), w, out.add(r * n));
                    r += 1;
                }
            }
            c0 += width;
        }
    }

    /// One column block: which columns, the mask of its last vector, the epilogue.
    struct Tile {
        k: usize,
        n: usize,
        c0: usize,
        mask: __mmask16,
        bias: Option<*const f32>,
        act: Activation,
    }

    impl Tile {
        /// Rows `0..RR` of this block, its `vectors` (1–4) picked at compile time.
        ///
        /// # Safety
        /// As [`Tile::run`].
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn rows<const RR: usize>(
            &self,
            vectors: usize,
            x: *const f32,
            w: *const f32,
            out: *mut f32,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                match vectors {
                    4 => self.run::<RR, 4>(x, w, out),
                    3 => self.run::<RR, 3>(x, w, out),
                    2 => self.run::<RR, 2>(x, w, out),
                    _ => self.run::<RR, 1>(x, w, out),
                }
            }
        }

        /// Rows `0..RR` (from `x`, `out`) × vectors `0..V` of this block.
        ///
        /// # Safety
        /// As [`rows`], for the rows and columns named.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const RR: usize, const V: usize>(
            &self,
            x: *const f32,
            w: *const f32,
            out: *mut f32,
        ) {
            let (k, n, c0) = (self.k, self.n, self.c0);
            // Lane mask of vector `v`: all lanes but in the last one.
            let mask = |v: usize| if v + 1 == V { self.mask } else { 0xffff };
            let mut acc = [[_mm512_setzero_ps(); V]; RR];
            for i in 0..k {
                let mut wv = [_mm512_setzero_ps(); V];
                for (v, wv) in wv.iter_mut().enumerate() {
                    // SAFETY: row i of w, columns c0 + 16v.. within the block (masked).
                    *wv = unsafe { _mm512_maskz_loadu_ps(mask(v), w.add(i * n + c0 + 16 * v)) };
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: element (r, i) of this tile's rows of x.
                    let xb = _mm512_set1_ps(unsafe { *x.add(r * k + i) });
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(xb, wv[v], acc[v]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for (r, acc) in acc.iter().enumerate() {
                for (v, &sum) in acc.iter().enumerate() {
                    let at = c0 + 16 * v;
                    let mut y = match self.bias {
                        // SAFETY: bias has n elements; masked to the block.
                        Some(b) => {
                            _mm512_add_ps(sum, unsafe { _mm512_maskz_loadu_ps(mask(v), b.add(at)) })
                        }
                        None => sum,
                    };
                    // max/min return their second operand when either is NaN: NaN stays NaN,
                    // as in `Activation::of`.
                    y = match self.act {
                        Activation::Identity => y,
                        Activation::Relu => _mm512_max_ps(zero, y),
                        Activation::Relu6 => {
                            _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, y))
                        }
                    };
                    // SAFETY: row r of out, the block's columns (masked).
                    unsafe { _mm512_mask_storeu_ps(out.add(r * n + at), mask(v), y) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::tests::values;

    #[test]
    fn matches_the_definition_on_every_block_shape() {
        if !applies(16, 16) {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        // n covers full 64-column blocks, 1–3 vector remainders and masked tails; rows cover
        // whole register tiles, a remainder and more than one task.
        for (rows, k, n) in [
            (13, 16, 96),
            (6, 1, 16),
            (7, 24, 24),
            (300, 40, 240),
            (5, 64, 150),
            (50, 480, 80),
        ] {
            let x = values(rows * k, 1);
            let w = values(k * n, 2);
            let bias = values(n, 3);
            for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
                let mut out = vec![MaybeUninit::uninit(); rows * n];
                pointwise_forward(rows, k, n, &x, &w, Some(&bias), act, &mut out);
                for r in 0..rows {
                    for c in 0..n {
                        let want: f64 = (0..k)
                            .map(|i| x[r * k + i] as f64 * w[i * n + c] as f64)
                            .sum::<f64>()
                            + bias[c] as f64;
                        let want = act.of(want as f32) as f64;
                        // f32 rounding grows with the terms' magnitudes.
                        let scale: f64 = (0..k)
                            .map(|i| (x[r * k + i] as f64 * w[i * n + c] as f64).abs())
                            .sum();
                        // SAFETY: the kernel writes every element.
                        let got = unsafe { out[r * n + c].assume_init() } as f64;
                        assert!(
                            (got - want).abs() < 1e-6 * (1.0 + scale),
                            "{rows}×{k}×{n} {act:?} [{r},{c}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nan_survives_the_activation() {
        if !applies(2, 16) {
            return;
        }
        let (x, w) = ([f32::NAN, 1.0], [1.0f32; 2 * 16]);
        let mut out = vec![MaybeUninit::uninit(); 16];
        pointwise_forward(1, 2, 16, &x, &w, None, Activation::Relu6, &mut out);
        // SAFETY: written by the kernel.
        assert!(out.iter().all(|v| unsafe { v.assume_init() }.is_nan()));
    }
}
