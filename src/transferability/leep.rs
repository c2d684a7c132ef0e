//! Scores from the source model's own classifier: LEEP (Nguyen et al., "LEEP: A New Measure to
//! Evaluate Transferability of Learned Representations", ICML 2020) and NCE (Tran et al.,
//! "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019), as
//! thuml/LogME's `LEEP.py` and `NCE.py` compute them.

/// LEEP: the mean log-likelihood of the target labels under the "empirical predictor"
/// `p(y|x) = Σ_z p(y|z) θ(x)_z`, with `θ(x)` the source softmax (row-major `(n, source)`) and
/// `p(y|z)` the empirical conditional of target given source label. Higher is better (≤ 0).
pub fn leep(source_probs: &[f32], source: usize, y: &[usize], classes: usize) -> f64 {
    let n = y.len();
    let mut joint = vec![0.0f64; classes * source];
    for (i, &c) in y.iter().enumerate() {
        for z in 0..source {
            joint[c * source + z] += source_probs[i * source + z] as f64 / n as f64;
        }
    }
    let p_z: Vec<f64> = (0..source)
        .map(|z| (0..classes).map(|c| joint[c * source + z]).sum())
        .collect();
    let mut total = 0.0;
    for (i, &c) in y.iter().enumerate() {
        let p: f64 = (0..source)
            .map(|z| {
                let cond = if p_z[z] > 0.0 {
                    joint[c * source + z] / p_z[z]
                } else {
                    0.0
                };
                source_probs[i * source + z] as f64 * cond
            })
            .sum();
        total += p.ln();
    }
    total / n as f64
}

/// NCE: minus the conditional entropy `H(Y | Z)` of the target labels given the source model's
/// arg-max labels. Higher is better (≤ 0).
pub fn nce(source_labels: &[usize], source: usize, y: &[usize], classes: usize) -> f64 {
    let n = y.len() as f64;
    let mut joint = vec![0.0f64; classes * source];
    for (&z, &c) in source_labels.iter().zip(y) {
        joint[c * source + z] += 1.0 / n;
    }
    let mut h = 0.0;
    for z in 0..source {
        let p_z: f64 = (0..classes).map(|c| joint[c * source + z]).sum();
        if p_z == 0.0 {
            continue;
        }
        for c in 0..classes {
            let p = joint[c * source + z];
            if p > 0.0 {
                h -= p * (p / p_z).ln();
            }
        }
    }
    -h
}
