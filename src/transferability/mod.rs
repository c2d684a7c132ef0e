//! Transferability estimation: how well a frozen backbone's features will serve a labelled
//! target task, scored from the features alone (no training), to choose a backbone before
//! fine-tuning any (`graft rank`).
//!
//! - [`logme`]: LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear
//!   regression from the features to each one-hot class, maximised over its prior and noise
//!   precisions by MacKay's fixed point (thuml/LogME's `_fit_fixed_point`); higher is better.
//! - [`knn`]: leave-one-out k-nearest-neighbour accuracy on cosine similarity (DINO's weighted
//!   vote); Sorkhei et al. (2025) found it as good a predictor as the dedicated scores.
//! - [`hscore`]: H-score (Bao et al. 2019), `tr(cov(f)⁺ cov(E[f|y]))`.
//! - [`leep`]: LEEP (Nguyen et al. 2020) and NCE (Tran et al. 2019) from the source head's
//!   predictions: they need the pretrained classifier, so random-init candidates have none.

pub mod hscore;
pub mod knn;
pub mod leep;
pub mod logme;

pub(crate) mod linalg;

use crate::error::{Error, Result};

/// A transferability score (the `--metric` of `graft rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// LogME: log marginal evidence of a Bayesian linear model (`logme`).
    LogMe,
    /// Leave-one-out weighted k-NN accuracy (`knn`).
    Knn,
    /// H-score: `tr(cov(f)⁺ cov(E[f|y]))` (`hscore`).
    HScore,
    /// LEEP, from the source head's predictions (`leep`).
    Leep,
    /// NCE, from the source head's predicted labels (`nce`).
    Nce,
}

impl Estimator {
    /// Every estimator, in the order `graft rank` reports them.
    pub const ALL: [Estimator; 5] = [Self::LogMe, Self::Knn, Self::HScore, Self::Leep, Self::Nce];

    /// Does it need the source (ImageNet) head's predictions?
    pub fn needs_source_head(self) -> bool {
        matches!(self, Self::Leep | Self::Nce)
    }
}

impl std::str::FromStr for Estimator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "logme" => Ok(Self::LogMe),
            "knn" => Ok(Self::Knn),
            "hscore" | "h-score" => Ok(Self::HScore),
            "leep" => Ok(Self::Leep),
            "nce" => Ok(Self::Nce),
            other => Err(Error::invalid(format!(
                "unknown transferability metric `{other}` (known: logme, knn, hscore, leep, nce)"
            ))),
        }
    }
}

impl std::fmt::Display for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LogMe => "logme",
            Self::Knn => "knn",
            Self::HScore => "hscore",
            Self::Leep => "leep",
            Self::Nce => "nce",
        })
    }
}

/// Kendall's τ-b between two score lists (ties in either handled as scipy's `kendalltau`);
/// `None` with fewer than two items or no variation.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let da = (a[i] - a[j]).partial_cmp(&0.0)? as i64;
            let db = (b[i] - b[j]).partial_cmp(&0.0)? as i64;
            match (da, db) {
                (0, 0) => {}
                (0, _) => ties_a += 1,
                (_, 0) => ties_b += 1,
                _ if da == db => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let denom =
        (((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) as f64).sqrt();
    (denom > 0.0).then(|| (concordant - discordant) as f64 / denom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_matches_scipy() {
        // scipy.stats.kendalltau([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) = 0.4; with ties,
        // kendalltau([1, 2, 2, 3], [1, 3, 2, 4]) = 0.912870929175277 and
        // kendalltau([1, 2, 2, 3], [1, 2, 2, 4]) = 1 (a pair tied in both counts in neither).
        assert!(
            (kendall_tau(&[1., 2., 3., 4., 5.], &[3., 1., 2., 5., 4.]).unwrap() - 0.4).abs()
                < 1e-12
        );
        let t = kendall_tau(&[1., 2., 2., 3.], &[1., 3., 2., 4.]).unwrap();
        assert!((t - 0.912870929175277).abs() < 1e-12, "{t}");
        let t = kendall_tau(&[1., 2., 2., 3.], &[1., 2., 2., 4.]).unwrap();
        assert!((t - 1.0).abs() < 1e-12, "{t}");
        assert_eq!(kendall_tau(&[1.0], &[2.0]), None);
    }
}
