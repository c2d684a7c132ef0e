//! Linear models fitted to convergence on fixed features: multinomial logistic regression by
//! L-BFGS (`logistic`, the default linear probe) and the solver itself (`lbfgs`).

pub mod lbfgs;
pub mod logistic;

use crate::error::{Error, Result};

/// How a linear probe's head is trained (the `probe` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSolver {
    /// `lbfgs`: multinomial logistic regression on standardised features, full batch, to
    /// convergence, its L2 strength chosen on the validation split (`probe_l2`).
    Lbfgs,
    /// `sgd`: mini-batch training of the head with the run's optimizer, epochs and schedule.
    Sgd,
}

impl std::str::FromStr for ProbeSolver {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lbfgs" => Ok(Self::Lbfgs),
            "sgd" => Ok(Self::Sgd),
            other => Err(Error::invalid(format!(
                "--probe must be lbfgs or sgd, got `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for ProbeSolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lbfgs => "lbfgs",
            Self::Sgd => "sgd",
        })
    }
}

crate::text_setting!(ProbeSolver);

/// The L2 strength λ of the L-BFGS probe (the `probe_l2` setting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeL2 {
    /// `auto`: the best of a logarithmic path on the validation split.
    Auto,
    /// A fixed λ ≥ 0.
    Fixed(f64),
}

impl std::str::FromStr for ProbeL2 {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(Self::Fixed(v)),
            _ => Err(Error::invalid(format!(
                "--probe-l2 must be auto or a number >= 0 (e.g. 1e-4), got `{s}`"
            ))),
        }
    }
}

impl std::fmt::Display for ProbeL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(v) => write!(f, "{v:e}"),
        }
    }
}

crate::text_setting!(ProbeL2);
