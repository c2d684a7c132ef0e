//! Training-mode batch normalisation on plain `f32` slices (NCHW): batch statistics, the
//! normalisation, and its backward step.
//!
//! burn's generic version swaps the batch and channel axes and reshapes (a full copy of the
//! activations) for each statistic, in the forward and again in the backward, and builds the rest
//! from a dozen broadcast element-wise ops: 15–20% of an EfficientNet fine-tuning step. In NCHW a
//! channel is `batch` contiguous planes, so everything here is one or two passes over them.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Shapes of one batch normalisation: `batch` images of `channels` planes of `plane` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormGeometry {
    /// Images in the batch (`N`).
    pub batch: usize,
    /// Channels (`C`): one mean and variance each.
    pub channels: usize,
    /// Values per channel per image (`H * W`).
    pub plane: usize,
}

impl NormGeometry {
    /// The planes of channel `c`, one per image.
    fn planes<'a>(&self, x: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        (0..self.batch).map(move |b| &x[(b * self.channels + c) * self.plane..][..self.plane])
    }

    fn count(&self) -> f64 {
        (self.batch * self.plane) as f64
    }
}

/// Independent f32 accumulators per sum: float addition is not reassociated by the compiler, so a
/// single running sum is one dependent add per element (latency-bound, scalar); 16 lanes
/// vectorise, and they are combined in f64 at the end of each plane.
const LANES: usize = 16;

/// `(Σ a, Σ a·(b - shift))` over one plane.
#[inline(always)]
fn sums_body(a: &[f32], b: &[f32], shift: f32) -> (f64, f64) {
    let n = a.len().min(b.len());
    let full = n / LANES * LANES;
    let (mut s, mut p) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (a, b) in a[..full]
        .chunks_exact(LANES)
        .zip(b[..full].chunks_exact(LANES))
    {
        let a: &[f32; LANES] = a.try_into().expect("lane block");
        let b: &[f32; LANES] = b.try_into().expect("lane block");
        s = std::array::from_fn(|l| s[l] + a[l]);
        p = std::array::from_fn(|l| p[l] + a[l] * (b[l] - shift));
    }
    // The tail in separate scalars: indexing the lane arrays with a run-time index would keep
    // them in memory instead of registers, for the whole loop.
    let (mut s_tail, mut p_tail) = (0.0f32, 0.0f32);
    for j in full..n {
        s_tail += a[j];
        p_tail += a[j] * (b[j] - shift);
    }
    let total = |v: [f32; LANES], tail: f32| v.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    (total(s, s_tail), total(p, p_tail))
}

/// [`sums_body`], with AVX-512 where the CPU has it (LLVM leaves these lane loops scalar).
fn sums(a: &[f32], b: &[f32], shift: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::sums(a, b, shift) };
    }
    sums_body(a, b, shift)
}

/// `Σ (v - shift)²` over one plane.
#[inline(always)]
fn squares_body(v: &[f32], shift: f32) -> f64 {
    let full = v.len() / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for c in v[..full].chunks_exact(LANES) {
        let c: &[f32; LANES] = c.try_into().expect("lane block");
        acc = std::array::from_fn(|l| acc[l] + (c[l] - shift) * (c[l] - shift));
    }
    let tail: f32 = v[full..].iter().map(|v| (v - shift) * (v - shift)).sum();
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// [`squares_body`], with AVX-512 where the CPU has it.
fn squares(v: &[f32], shift: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::squares(v, shift) };
    }
    squares_body(v, shift)
}

/// The two reductions with explicit 16-lane vectors (same lane-wise order as the portable
/// versions: one f32 accumulator per lane, a scalar tail, lanes combined in f64).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::LANES;

    fn lanes_f64(v: __m512) -> f64 {
        let mut out = [0.0f32; LANES];
        // SAFETY: `out` holds 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        out.iter().map(|&v| v as f64).sum()
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sums(a: &[f32], b: &[f32], shift: f32) -> (f64, f64) {
        let n = a.len().min(b.len());
        let full = n / LANES * LANES;
        let (mut s, mut p) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let k = _mm512_set1_ps(shift);
        for i in (0..full).step_by(LANES) {
            // SAFETY: i + 16 <= full <= both lengths.
            let (va, vb) = unsafe {
                (
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                )
            };
            s = _mm512_add_ps(s, va);
            p = _mm512_add_ps(p, _mm512_mul_ps(va, _mm512_sub_ps(vb, k)));
        }
        let (mut s_tail, mut p_tail) = (0.0f32, 0.0f32);
        for j in full..n {
            s_tail += a[j];
            p_tail += a[j] * (b[j] - shift);
        }
        (lanes_f64(s) + s_tail as f64, lanes_f64(p) + p_tail as f64)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn squares(v: &[f32], shift: f32) -> f64 {
        let full = v.len() / LANES * LANES;
        let mut acc = _mm512_setzero_ps();
        let k = _mm512_set1_ps(shift);
        for i in (0..full).step_by(LANES) {
            // SAFETY: i + 16 <= full <= v.len().
            let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(v.as_ptr().add(i)) }, k);
            acc = _mm512_add_ps(acc, _mm512_mul_ps(d, d));
        }
        let tail: f32 = v[full..].iter().map(|v| (v - shift) * (v - shift)).sum();
        lanes_f64(acc) + tail as f64
    }
}

/// Per channel: the mean and the biased variance over images and pixels (what PyTorch
/// normalises with), in two passes (mean, then squared deviations from it).
pub fn batch_stats(g: &NormGeometry, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = g.planes(x, c).map(|p| sums(p, p, 0.0).0).sum();
            let mean = (sum / g.count()) as f32;
            let deviations: f64 = g.planes(x, c).map(|p| squares(p, mean)).sum();
            (mean, (deviations / g.count()) as f32)
        })
        .unzip()
}

/// `1 / sqrt(var + eps)` per channel.
pub fn inv_std(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect()
}

/// `y = (x - mean) · inv_std · gamma + beta`, channel by channel.
pub fn normalize(
    g: &NormGeometry,
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let mut y = super::buffers::zeros(x.len());
    y.par_chunks_mut(g.plane)
        .zip(x.par_chunks(g.plane))
        .enumerate()
        .for_each(|(bc, (y, x))| {
            let c = bc % g.channels;
            let [scale, shift] = forward_coefficients(c, mean, inv_std, gamma, beta);
            affine2(y, x, x, [scale, 0.0, shift]);
        });
    y
}

/// Channel `c`'s normalisation as `y = scale·x + shift` (both memory orders use it).
fn forward_coefficients(
    c: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> [f32; 2] {
    let scale = inv_std[c] * gamma[c];
    [scale, beta[c] - mean[c] * scale]
}

/// Channel `c`'s input gradient as `dx = a·dy + b·x + d`, from its `(dgamma, dbeta)` and the
/// `m` values per channel: `dx = k·(dy - dbeta/m - (x - mean)·inv_std·dgamma/m)`,
/// `k = gamma·inv_std` (both memory orders use it).
fn backward_coefficients(
    c: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    (dgamma, dbeta): (&[f32], &[f32]),
    m: f32,
) -> [f32; 3] {
    let k = gamma[c] * inv_std[c];
    let b = -k * dgamma[c] / m * inv_std[c];
    [k, b, -k * dbeta[c] / m - b * mean[c]]
}

/// `out = a·u + b·v + d`, element-wise.
#[inline(always)]
fn affine2_body(out: &mut [f32], u: &[f32], v: &[f32], [a, b, d]: [f32; 3]) {
    for ((o, u), v) in out.iter_mut().zip(u).zip(v) {
        *o = a * u + b * v + d;
    }
}

wide_simd!(fn affine2(out: &mut [f32], u: &[f32], v: &[f32], coefficients: [f32; 3]) = affine2_body);

/// Gradients of [`normalize`] with the batch statistics taken as functions of `x` (the full
/// training-mode backward): returns (dx, dgamma, dbeta).
///
/// With `x̂ = (x - mean) · inv_std` and M values per channel:
/// `dbeta = Σ dy`, `dgamma = Σ dy · x̂`, `dx = gamma · inv_std · (dy - dbeta / M - x̂ · dgamma / M)`.
pub fn normalize_backward(
    g: &NormGeometry,
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let (mut dg, mut db) = (0.0f64, 0.0f64);
            for (x, dy) in g.planes(x, c).zip(g.planes(dy, c)) {
                // (Σ dy, Σ dy·(x - mean))
                let (db_p, dg_p) = sums(dy, x, mean[c]);
                db += db_p;
                dg += dg_p;
            }
            ((dg * inv_std[c] as f64) as f32, db as f32)
        })
        .unzip();
    let m = g.count() as f32;
    let mut dx = super::buffers::zeros(x.len());
    dx.par_chunks_mut(g.plane)
        .zip(x.par_chunks(g.plane).zip(dy.par_chunks(g.plane)))
        .enumerate()
        .for_each(|(bc, (dx, (x, dy)))| {
            let c = bc % g.channels;
            let grads = (dgamma.as_slice(), dbeta.as_slice());
            let coefficients = backward_coefficients(c, mean, inv_std, gamma, grads, m);
            affine2(dx, dy, x, coefficients);
        });
    (dx, dgamma, dbeta)
}

/// Rows per block of the channels-last reductions: a block is summed in f32 (vectorised across
/// the channels), the block totals in f64, in block order, so the result does not depend on the
/// thread schedule.
const ROW_BLOCK: usize = 64;

/// Per-column sums of `f` applied to each row of a (rows × `c`) matrix: `f(acc, row)` adds a
/// row's contribution to `acc` (`width` floats). Returns the `width` totals.
fn block_sums(x: &[f32], c: usize, width: usize, f: impl Fn(&mut [f32], usize) + Sync) -> Vec<f64> {
    let rows = x.len() / c.max(1);
    let partial: Vec<Vec<f32>> = (0..rows.div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map(|block| {
            let mut acc = vec![0.0f32; width];
            for row in block * ROW_BLOCK..((block + 1) * ROW_BLOCK).min(rows) {
                f(&mut acc, row);
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; width];
    for p in partial {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v as f64);
    }
    total
}

/// Column sums of a (rows × `c`) matrix (see [`block_sums`]).
pub(super) fn column_sums(x: &[f32], c: usize) -> Vec<f64> {
    block_sums(x, c, c, |acc, r| add_row(acc, &x[r * c..][..c]))
}

#[inline(always)]
fn add_row_body(acc: &mut [f32], row: &[f32]) {
    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
}

wide_simd!(fn add_row(acc: &mut [f32], row: &[f32]) = add_row_body);

/// `acc += (row - mean)²`.
#[inline(always)]
fn add_squares_body(acc: &mut [f32], row: &[f32], mean: &[f32]) {
    for ((a, v), m) in acc.iter_mut().zip(row).zip(mean) {
        *a += (v - m) * (v - m);
    }
}

wide_simd!(fn add_squares(acc: &mut [f32], row: &[f32], mean: &[f32]) = add_squares_body);

/// `sum_dy += dy`, `sum_dy_xc += dy · (x - mean)`.
#[inline(always)]
fn add_grad_sums_body(
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
    dy: &[f32],
    x: &[f32],
    mean: &[f32],
) {
    for ((((s, t), d), v), m) in sum_dy
        .iter_mut()
        .zip(sum_dy_xc.iter_mut())
        .zip(dy)
        .zip(x)
        .zip(mean)
    {
        *s += d;
        *t += d * (v - m);
    }
}

wide_simd!(fn add_grad_sums(sum_dy: &mut [f32], sum_dy_xc: &mut [f32], dy: &[f32], x: &[f32], mean: &[f32]) = add_grad_sums_body);

/// `out = a·u + b·v + d` with per-channel coefficients, over rows of `a.len()` channels; writes
/// every element of `out` (which may be uninitialised).
#[inline(always)]
fn affine_rows_body(
    out: &mut [MaybeUninit<f32>],
    u: &[f32],
    v: &[f32],
    a: &[f32],
    b: &[f32],
    d: &[f32],
) {
    let c = a.len();
    for ((o, u), v) in out.chunks_mut(c).zip(u.chunks(c)).zip(v.chunks(c)) {
        for (((((o, u), v), a), b), d) in o.iter_mut().zip(u).zip(v).zip(a).zip(b).zip(d) {
            o.write(a * u + b * v + d);
        }
    }
}

wide_simd!(fn affine_rows(out: &mut [MaybeUninit<f32>], u: &[f32], v: &[f32], a: &[f32], b: &[f32], d: &[f32]) = affine_rows_body);

/// [`affine_rows`] over a whole (rows × c) matrix, a block of rows per task, into a fresh
/// buffer that is not zeroed first.
fn affine_rows_par(u: &[f32], v: &[f32], [a, b, d]: [&[f32]; 3]) -> Vec<f32> {
    let c = a.len();
    let block = c * ROW_BLOCK;
    // SAFETY: `affine_rows` writes every element of its chunk: `u`'s matching chunk has the same
    // length, a whole number of rows of `c`.
    unsafe {
        super::buffers::par_fill(u.len(), block, |first, out| {
            let (u, v) = (&u[first..][..out.len()], &v[first..][..out.len()]);
            affine_rows(out, u, v, a, b, d)
        })
    }
}

/// [`batch_stats`] for channels-last activations: `x` is (images·pixels) × `channels`.
pub fn batch_stats_nhwc(channels: usize, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = channels;
    let m = (x.len() / c.max(1)) as f64;
    let mean: Vec<f32> = column_sums(x, c).iter().map(|s| (s / m) as f32).collect();
    let deviations = block_sums(x, c, c, |acc, r| add_squares(acc, &x[r * c..][..c], &mean));
    let var = deviations.iter().map(|s| (s / m) as f32).collect();
    (mean, var)
}

/// [`normalize`] for channels-last activations.
pub fn normalize_nhwc(
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..mean.len())
        .map(|c| forward_coefficients(c, mean, inv_std, gamma, beta).into())
        .unzip();
    let zero = vec![0.0f32; scale.len()];
    affine_rows_par(x, x, [&scale, &zero, &shift])
}

/// [`normalize_backward`] for channels-last activations.
pub fn normalize_backward_nhwc(
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = mean.len();
    let m = (x.len() / c.max(1)) as f32;
    let sums = block_sums(x, c, 2 * c, |acc, r| {
        let (s, t) = acc.split_at_mut(c);
        add_grad_sums(s, t, &dy[r * c..][..c], &x[r * c..][..c], mean);
    });
    let dbeta: Vec<f32> = sums[..c].iter().map(|v| *v as f32).collect();
    let dgamma: Vec<f32> = (0..c)
        .map(|i| (sums[c + i] * inv_std[i] as f64) as f32)
        .collect();
    let [mut a, mut b, mut d] = [(); 3].map(|_| Vec::with_capacity(c));
    for i in 0..c {
        let [ai, bi, di] = backward_coefficients(i, mean, inv_std, gamma, (&dgamma, &dbeta), m);
        a.push(ai);
        b.push(bi);
        d.push(di);
    }
    let dx = affine_rows_par(dy, x, [&a, &b, &d]);
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::tests::values;

    /// The loss `Σ y · probe` as a function of x, gamma and beta, in f64.
    fn loss(g: &NormGeometry, x: &[f64], gamma: &[f64], beta: &[f64], probe: &[f64]) -> f64 {
        let m = g.count();
        let mut total = 0.0;
        for c in 0..g.channels {
            let vals: Vec<(usize, f64)> = (0..g.batch)
                .flat_map(|b| (0..g.plane).map(move |p| (b * g.channels + c) * g.plane + p))
                .map(|i| (i, x[i]))
                .collect();
            let mean = vals.iter().map(|v| v.1).sum::<f64>() / m;
            let var = vals.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / m;
            for (i, v) in vals {
                let y = (v - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
                total += y * probe[i];
            }
        }
        total
    }

    #[test]
    fn backward_matches_finite_differences_of_the_definition() {
        let g = NormGeometry {
            batch: 3,
            channels: 2,
            plane: 5,
        };
        let n = g.batch * g.channels * g.plane;
        let x = values(n, 1);
        let (gamma, beta) = (values(2, 2), values(2, 3));
        let probe = values(n, 4);
        let (mean, var) = batch_stats(&g, &x);
        let inv = inv_std(&var, 1e-5);
        let (dx, dgamma, dbeta) = normalize_backward(&g, &x, &mean, &inv, &gamma, &probe);
        let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (x64, gamma64, beta64, probe64) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&probe));
        let h = 1e-6;
        let numeric = |which: usize, i: usize| {
            let (mut xs, mut gs, mut bs) = (x64.clone(), gamma64.clone(), beta64.clone());
            let pick =
                |which: usize, xs: &mut Vec<f64>, gs: &mut Vec<f64>, bs: &mut Vec<f64>, d: f64| {
                    match which {
                        0 => xs[i] += d,
                        1 => gs[i] += d,
                        _ => bs[i] += d,
                    }
                };
            pick(which, &mut xs, &mut gs, &mut bs, h);
            let up = loss(&g, &xs, &gs, &bs, &probe64);
            pick(which, &mut xs, &mut gs, &mut bs, -2.0 * h);
            (up - loss(&g, &xs, &gs, &bs, &probe64)) / (2.0 * h)
        };
        let close = |a: f32, b: f64, what: &str| {
            assert!(
                (a as f64 - b).abs() <= 1e-3 * (1.0 + b.abs()),
                "{what}: {a} vs {b}"
            );
        };
        for (i, dx) in dx.iter().enumerate() {
            close(*dx, numeric(0, i), &format!("dx[{i}]"));
        }
        for c in 0..2 {
            close(dgamma[c], numeric(1, c), "dgamma");
            close(dbeta[c], numeric(2, c), "dbeta");
        }
        // And the forward is the definition.
        let y = normalize(&g, &x, &mean, &inv, &gamma, &beta);
        let total: f64 = y.iter().zip(&probe).map(|(y, p)| (*y * *p) as f64).sum();
        close(
            total as f32,
            loss(&g, &x64, &gamma64, &beta64, &probe64),
            "forward",
        );
    }
}
