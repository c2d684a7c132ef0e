//! Multi-head scaled dot-product attention in two fused ops, with their gradients, straight on
//! the projections' `(batch, seq, hidden)` layout: head `h` of a token is columns
//! `h·d .. (h+1)·d` of its row, which the GEMMs read through strides, so the heads are never
//! split into a `(batch, heads, seq, d)` copy nor merged back.
//!
//! - [`attention_probs`]: `P = softmax(Q Kᵀ · scale + mask)` per (batch row, head), `(b, heads,
//!   s, s)` — the scores, scaling, mask and softmax in one pass over each head's scores.
//! - [`attention_context`]: `O = P V`, written into `(b, s, hidden)` at each head's columns.
//!
//! Dropout on the probabilities (BERT's `attention_probs_dropout_prob`) stays a separate op
//! between the two, as in PyTorch. Where nothing needs the probabilities afterwards (no
//! gradient, no dropout: inference), [`attention`] does both products per head through one
//! `s × s` scratch block that stays in cache, never writing the `(b, heads, s, s)` tensor. Each task is one batch row (all its heads, in order), each
//! product a single-threaded GEMM: deterministic, and no writes shared between tasks.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::serial_matmul;
use super::softmax::{scaled_softmax_in_place, softmax_backward_rows};

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    /// Columns per head (`hidden / heads`).
    pub dim: usize,
}

impl Heads {
    pub fn hidden(&self) -> usize {
        self.heads * self.dim
    }
    /// Elements of one batch row of a `(b, s, hidden)` tensor.
    fn row(&self) -> usize {
        self.seq * self.hidden()
    }
    /// Elements of one head's `s × s` probabilities.
    fn square(&self) -> usize {
        self.seq * self.seq
    }
    /// `1 / sqrt(d)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.dim as f32).sqrt()
    }
}

/// `n` floats, every one of which `fill` writes (no zeroing pass over fresh memory).
///
/// # Safety
/// `fill` must initialise every element of the slice it is given.
unsafe fn filled(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's `fill` initialised all `n`.
    unsafe { v.set_len(n) };
    v
}

/// `softmax(Q Kᵀ / sqrt(d) + bias)` for every (batch row, head): `(b, heads, s, s)`. `q`, `k`
/// are `(b, s, hidden)`; `bias` `(b, s)` is added to every query's score of each key (0 for a
/// token, a large negative number for padding).
pub fn attention_probs(q: &[f32], k: &[f32], bias: &[f32], g: Heads) -> Vec<f32> {
    let (row, square, hidden, s, d) = (g.row(), g.square(), g.hidden(), g.seq, g.dim);
    if s == 0 || d == 0 {
        return vec![0.0; g.batch * g.heads * square];
    }
    let fill = |probs: &mut [MaybeUninit<f32>]| {
        probs
            .par_chunks_mut(g.heads * square)
            .enumerate()
            .for_each(|(b, p)| {
                let (q, k, bias) = (
                    &q[b * row..][..row],
                    &k[b * row..][..row],
                    &bias[b * s..][..s],
                );
                for (h, p) in p.chunks_exact_mut(square).enumerate() {
                    let col = h * d;
                    // Q_h (s×d, rows `hidden` apart) times K_hᵀ (d×s: K_h read by columns).
                    serial_matmul(
                        s,
                        s,
                        d,
                        p,
                        (s as isize, 1),
                        &q[col..],
                        (hidden as isize, 1),
                        &k[col..],
                        (1, hidden as isize),
                    );
                    // SAFETY: the product wrote every score.
                    let p = unsafe { &mut *(p as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    scaled_softmax_in_place(p, bias, g.scale());
                }
            });
    };
    // SAFETY: each head's product writes all of its s×s block, and the blocks tile the output.
    unsafe { filled(g.batch * g.heads * square, fill) }
}

/// `softmax(Q Kᵀ / sqrt(d) + bias) V` per (batch row, head), heads side by side: `(b, s,
/// hidden)` — [`attention_probs`] then [`attention_context`] without materialising the
/// probabilities (each head's pass through one scratch block per task).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], g: Heads) -> Vec<f32> {
    let (row, square, hidden, s, d) = (g.row(), g.square(), g.hidden(), g.seq, g.dim);
    if s == 0 || d == 0 {
        return vec![0.0; g.batch * row];
    }
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(row).enumerate().for_each_init(
            || Vec::<f32>::with_capacity(square),
            |scratch, (b, out)| {
                let (q, k, v, bias) = (
                    &q[b * row..][..row],
                    &k[b * row..][..row],
                    &v[b * row..][..row],
                    &bias[b * s..][..s],
                );
                let p = &mut scratch.spare_capacity_mut()[..square];
                for h in 0..g.heads {
                    let col = h * d;
                    serial_matmul(
                        s,
                        s,
                        d,
                        p,
                        (s as isize, 1),
                        &q[col..],
                        (hidden as isize, 1),
                        &k[col..],
                        (1, hidden as isize),
                    );
                    // SAFETY: the product wrote every score.
                    let probs = unsafe { &mut *(p as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    scaled_softmax_in_place(probs, bias, g.scale());
                    serial_matmul(
                        s,
                        d,
                        s,
                        &mut out[col..],
                        (hidden as isize, 1),
                        probs,
                        (s as isize, 1),
                        &v[col..],
                        (hidden as isize, 1),
                    );
                }
            },
        );
    };
    // SAFETY: each head's second product writes its d columns of every row; the heads tile the
    // rows.
    unsafe { filled(g.batch * row, fill) }
}

/// The gradients of [`attention_probs`] for `q` and `k` from the probabilities `p` and their
/// gradient `dp`: `dS = P ⊙ (dP - rowsum(dP ⊙ P)) / sqrt(d)`, `dQ = dS K`, `dK = dSᵀ Q`.
pub fn attention_probs_backward(
    q: &[f32],
    k: &[f32],
    p: &[f32],
    dp: &[f32],
    g: Heads,
) -> (Vec<f32>, Vec<f32>) {
    let (row, square, hidden, s, d) = (g.row(), g.square(), g.hidden(), g.seq, g.dim);
    let mut dq: Vec<f32> = Vec::with_capacity(g.batch * row);
    let mut dk: Vec<f32> = Vec::with_capacity(g.batch * row);
    if s == 0 || d == 0 {
        return (vec![0.0; g.batch * row], vec![0.0; g.batch * row]);
    }
    dq.spare_capacity_mut()[..g.batch * row]
        .par_chunks_mut(row)
        .zip(dk.spare_capacity_mut()[..g.batch * row].par_chunks_mut(row))
        .enumerate()
        .for_each(|(b, (dq, dk))| {
            let (q, k) = (&q[b * row..][..row], &k[b * row..][..row]);
            let mut ds = vec![0.0f32; square];
            for h in 0..g.heads {
                let at = (b * g.heads + h) * square;
                ds.copy_from_slice(&dp[at..][..square]);
                softmax_backward_rows(&p[at..][..square], &mut ds, s);
                let scale = g.scale();
                ds.iter_mut().for_each(|v| *v *= scale);
                let col = h * d;
                // dQ_h = dS K_h  (s×s · s×d)
                serial_matmul(
                    s,
                    d,
                    s,
                    &mut dq[col..],
                    (hidden as isize, 1),
                    &ds,
                    (s as isize, 1),
                    &k[col..],
                    (hidden as isize, 1),
                );
                // dK_h = dSᵀ Q_h
                serial_matmul(
                    s,
                    d,
                    s,
                    &mut dk[col..],
                    (hidden as isize, 1),
                    &ds,
                    (1, s as isize),
                    &q[col..],
                    (hidden as isize, 1),
                );
            }
        });
    // SAFETY: each head's products wrote its d columns of every row; the heads tile the rows.
    unsafe {
        dq.set_len(g.batch * row);
        dk.set_len(g.batch * row);
    }
    (dq, dk)
}

/// `P V` per (batch row, head), heads side by side: `(b, s, hidden)`.
pub fn attention_context(p: &[f32], v: &[f32], g: Heads) -> Vec<f32> {
    let (row, square, hidden, s, d) = (g.row(), g.square(), g.hidden(), g.seq, g.dim);
    if s == 0 || d == 0 {
        return vec![0.0; g.batch * row];
    }
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(row).enumerate().for_each(|(b, out)| {
            let v = &v[b * row..][..row];
            for h in 0..g.heads {
                let col = h * d;
                serial_matmul(
                    s,
                    d,
                    s,
                    &mut out[col..],
                    (hidden as isize, 1),
                    &p[(b * g.heads + h) * square..][..square],
                    (s as isize, 1),
                    &v[col..],
                    (hidden as isize, 1),
                );
            }
        });
    };
    // SAFETY: each head's product writes its d columns of every row; the heads tile the rows.
    unsafe { filled(g.batch * row, fill) }
}

/// The gradients of [`attention_context`]: `dP = dO Vᵀ` per head `(b, heads, s, s)`, and
/// `dV = Pᵀ dO` `(b, s, hidden)`.
pub fn attention_context_backward(
    p: &[f32],
    v: &[f32],
    d_out: &[f32],
    g: Heads,
) -> (Vec<f32>, Vec<f32>) {
    let (row, square, hidden, s, d) = (g.row(), g.square(), g.hidden(), g.seq, g.dim);
    let mut dp: Vec<f32> = Vec::with_capacity(g.batch * g.heads * square);
    let mut dv: Vec<f32> = Vec::with_capacity(g.batch * row);
    if s == 0 || d == 0 {
        return (
            vec![0.0; g.batch * g.heads * square],
            vec![0.0; g.batch * row],
        );
    }
    dp.spare_capacity_mut()[..g.batch * g.heads * square]
        .par_chunks_mut(g.heads * square)
        .zip(dv.spare_capacity_mut()[..g.batch * row].par_chunks_mut(row))
        .enumerate()
        .for_each(|(b, (dp, dv))| {
            let (v, d_out) = (&v[b * row..][..row], &d_out[b * row..][..row]);
            for (h, dp) in dp.chunks_exact_mut(square).enumerate() {
                let col = h * d;
                let p = &p[(b * g.heads + h) * square..][..square];
                // dP_h = dO_h V_hᵀ  (s×d · d×s)
                serial_matmul(
                    s,
                    s,
                    d,
                    dp,
                    (s as isize, 1),
                    &d_out[col..],
                    (hidden as isize, 1),
                    &v[col..],
                    (1, hidden as isize),
                );
                // dV_h = P_hᵀ dO_h  (s×s · s×d)
                serial_matmul(
                    s,
                    d,
                    s,
                    &mut dv[col..],
                    (hidden as isize, 1),
                    p,
                    (1, s as isize),
                    &d_out[col..],
                    (hidden as isize, 1),
                );
            }
        });
    // SAFETY: every head's s×s block of dP, and its d columns of every row of dV, were written.
    unsafe {
        dp.set_len(g.batch * g.heads * square);
        dv.set_len(g.batch * row);
    }
    (dp, dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(n: usize, phase: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.53 + phase).sin()).collect()
    }

    /// The definition, one (batch row, head) at a time, in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], g: Heads) -> (Vec<f64>, Vec<f64>) {
        let (s, d, hd) = (g.seq, g.dim, g.hidden());
        let mut probs = vec![0.0; g.batch * g.heads * s * s];
        let mut out = vec![0.0; g.batch * s * hd];
        for b in 0..g.batch {
            for h in 0..g.heads {
                let at = |t: &[f32], i: usize, j: usize| t[(b * s + i) * hd + h * d + j] as f64;
                for i in 0..s {
                    let scores: Vec<f64> = (0..s)
                        .map(|j| {
                            (0..d).map(|t| at(q, i, t) * at(k, j, t)).sum::<f64>()
                                / (d as f64).sqrt()
                                + bias[b * s + j] as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for j in 0..s {
                        let pij = (scores[j] - max).exp() / z;
                        probs[((b * g.heads + h) * s + i) * s + j] = pij;
                        for t in 0..d {
                            out[(b * s + i) * hd + h * d + t] += pij * at(v, j, t);
                        }
                    }
                }
            }
        }
        (probs, out)
    }

    #[test]
    fn forward_matches_the_definition_and_masked_keys_weigh_nothing() {
        let g = Heads {
            batch: 2,
            seq: 5,
            heads: 3,
            dim: 4,
        };
        let n = g.batch * g.seq * g.hidden();
        let (q, k, v) = (det(n, 0.0), det(n, 1.0), det(n, 2.0));
        let mut bias = vec![0.0f32; g.batch * g.seq];
        bias[g.seq + 4] = f32::MIN; // the second row's last token is padding
        let p = attention_probs(&q, &k, &bias, g);
        let out = attention_context(&p, &v, g);
        let (want_p, want_out) = reference(&q, &k, &v, &bias, g);
        for (a, b) in p.iter().zip(&want_p) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        for (a, b) in out.iter().zip(&want_out) {
            assert!((*a as f64 - b).abs() < 1e-5);
        }
        // The fused pass runs the same products in the same order: bit-identical.
        assert_eq!(attention(&q, &k, &v, &bias, g), out);
        for h in 0..g.heads {
            for i in 0..g.seq {
                assert_eq!(p[((g.heads + h) * g.seq + i) * g.seq + 4], 0.0);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let g = Heads {
            batch: 2,
            seq: 4,
            heads: 2,
            dim: 3,
        };
        let n = g.batch * g.seq * g.hidden();
        let (q, k, v, w) = (det(n, 0.3), det(n, 1.1), det(n, 2.2), det(n, 3.3));
        let bias = vec![0.0f32; g.batch * g.seq];
        // loss = Σ w ⊙ attention(q, k, v)
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let out = attention_context(&attention_probs(q, k, &bias, g), v, g);
            out.iter().zip(&w).map(|(o, w)| *o as f64 * *w as f64).sum()
        };
        let p = attention_probs(&q, &k, &bias, g);
        let (dp, dv) = attention_context_backward(&p, &v, &w, g);
        let (dq, dk) = attention_probs_backward(&q, &k, &p, &dp, g);
        let h = 1e-2f32;
        for (name, grad, which) in [("q", &dq, 0), ("k", &dk, 1), ("v", &dv, 2)] {
            for j in [0, 5, 13, 23] {
                let eval = |e: f32| {
                    let (mut q, mut k, mut v) = (q.clone(), k.clone(), v.clone());
                    [&mut q, &mut k, &mut v][which][j] += e;
                    loss(&q, &k, &v)
                };
                let numeric = (eval(h) - eval(-h)) / (2.0 * h as f64);
                assert!(
                    (grad[j] as f64 - numeric).abs() < 1e-3,
                    "d{name}[{j}]: {} vs {numeric}",
                    grad[j]
                );
            }
        }
    }
}
