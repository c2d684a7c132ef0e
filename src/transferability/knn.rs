//! Leave-one-out k-nearest-neighbour accuracy on the features: each sample is classified by
//! its `k` most cosine-similar other samples, votes weighted by `exp(similarity / T)` (the
//! weighted k-NN of DINO's evaluation, k = 20, T = 0.07). Higher is better.

use rayon::prelude::*;

use crate::kernels::linear::linear_forward;

/// Neighbours that vote (DINO's default).
pub const K: usize = 20;
/// The temperature `T` of the votes' weights `exp(similarity / T)` (DINO's default).
pub const TEMPERATURE: f32 = 0.07;
/// The cost is quadratic in the samples (60,000 would be 4.6 TFLOP): beyond this many, an evenly
/// spaced subset of the rows is scored.
pub const MAX_SAMPLES: usize = 10_000;

/// The leave-one-out accuracy of features `x` (row-major `(n, d)`) for labels `y` (on
/// [`MAX_SAMPLES`] evenly spaced rows when there are more).
pub fn knn_accuracy(x: &[f32], y: &[usize], d: usize, classes: usize) -> f64 {
    if y.len() > MAX_SAMPLES {
        let rows: Vec<usize> = (0..MAX_SAMPLES)
            .map(|i| i * y.len() / MAX_SAMPLES)
            .collect();
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
            .collect();
        let ys: Vec<usize> = rows.iter().map(|&i| y[i]).collect();
        return knn_accuracy(&xs, &ys, d, classes);
    }
    let n = y.len();
    if n < 2 {
        return f64::NAN;
    }
    let mut unit = x.to_vec();
    unit.par_chunks_mut(d.max(1)).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    });
    const BLOCK: usize = 512;
    let k = K.min(n - 1);
    let correct: usize = (0..n)
        .step_by(BLOCK)
        .map(|start| {
            let end = (start + BLOCK).min(n);
            // Similarities of this block of rows to every row: (block, n).
            let sims = linear_forward(&unit[start * d..end * d], &unit, None, end - start, d, n);
            sims.par_chunks(n)
                .enumerate()
                .filter(|(r, row)| {
                    let i = start + r;
                    let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                    let kth = k - 1;
                    order.select_nth_unstable_by(kth, |&a, &b| row[b].total_cmp(&row[a]));
                    let mut votes = vec![0f64; classes];
                    for &j in &order[..k] {
                        votes[y[j]] += ((row[j] / TEMPERATURE) as f64).exp();
                    }
                    let best = (0..classes)
                        .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
                        .unwrap_or(0);
                    best == y[i]
                })
                .count()
        })
        .sum();
    correct as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well separated clusters: every sample's neighbours share its class. Above the cap the
    /// score is that of the evenly spaced subset (same answer here, and it returns).
    #[test]
    fn separated_clusters_score_one_and_large_inputs_are_capped() {
        let n = MAX_SAMPLES + 500;
        let y: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let x: Vec<f32> = y
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| {
                let j = (i % 7) as f32 * 0.01;
                if c == 0 { [1.0, j] } else { [j, 1.0] }
            })
            .collect();
        assert_eq!(knn_accuracy(&x[..200], &y[..100], 2, 2), 1.0);
        assert_eq!(knn_accuracy(&x, &y, 2, 2), 1.0);
    }
}
