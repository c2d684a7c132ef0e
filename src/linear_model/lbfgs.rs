//! Limited-memory BFGS (Nocedal & Wright, algorithm 7.4/7.5) for smooth convex objectives of a
//! few thousand to a few million variables: the two-loop recursion over the last `memory`
//! steps, a backtracking line search with the Armijo condition, and SciPy's stopping rules
//! (projected gradient `pgtol`, relative decrease `ftol`) so that a fit to convergence means
//! what it means in scikit-learn's `LogisticRegression(solver="lbfgs")`.
//!
//! Hand-written rather than taken from `argmin`: the objective evaluates in one fused pass over
//! the data (loss and gradient together) and the solver is forty lines; argmin would add its own
//! math backend and error types for no numerical gain.

use std::collections::VecDeque;

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Curvature pairs kept.
    pub memory: usize,
    /// Iteration limit (scikit-learn's `max_iter`); reaching it is not convergence.
    pub max_iter: usize,
    /// Stop when `max |g_i| <= gtol`.
    pub gtol: f64,
    /// Stop when `(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`.
    pub ftol: f64,
}

impl Default for Settings {
    /// scikit-learn's `LogisticRegression` defaults: `tol=1e-4` on the projected gradient,
    /// SciPy's `ftol` of `64 · f64::EPSILON`, 10 pairs; graft allows more iterations (sklearn's
    /// 100 stops most fits on raw features before convergence, with a warning).
    fn default() -> Self {
        Settings {
            memory: 10,
            max_iter: 1000,
            gtol: 1e-4,
            ftol: 64.0 * f64::EPSILON,
        }
    }
}

/// What the solver did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Final objective.
    pub value: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// Objective + gradient evaluations (line-search trials included).
    pub evaluations: usize,
    /// A stopping rule was met (not the iteration limit, not a failed line search).
    pub converged: bool,
}

/// Minimises `f` from `x` (updated in place). `f(x, grad)` returns the objective and writes the
/// gradient into `grad`.
pub fn minimize(
    x: &mut [f64],
    settings: Settings,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
) -> Outcome {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(x, &mut g);
    let mut evaluations = 1;
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(settings.memory);
    let mut d = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut alpha = vec![0.0; settings.memory];
    for iteration in 0..settings.max_iter {
        if max_abs(&g) <= settings.gtol {
            return Outcome {
                value: fx,
                iterations: iteration,
                evaluations,
                converged: true,
            };
        }
        // d = -H g by the two-loop recursion, H0 = (sᵀy / yᵀy) I.
        for (di, gi) in d.iter_mut().zip(&g) {
            *di = -gi;
        }
        for (k, (s, y, rho)) in pairs.iter().enumerate().rev() {
            alpha[k] = rho * dot(s, &d);
            axpy(-alpha[k], y, &mut d);
        }
        if let Some((s, y, _)) = pairs.back() {
            let gamma = dot(s, y) / dot(y, y);
            d.iter_mut().for_each(|v| *v *= gamma);
        }
        for (k, (s, y, rho)) in pairs.iter().enumerate() {
            let beta = rho * dot(y, &d);
            axpy(alpha[k] - beta, s, &mut d);
        }
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            pairs.clear();
            for (di, gi) in d.iter_mut().zip(&g) {
                *di = -gi;
            }
            slope = dot(&g, &d);
        }
        // The first step has no curvature to scale it: keep it short, as SciPy does.
        let mut t = if pairs.is_empty() {
            (1.0 / norm1(&g)).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            for ((xn, xi), di) in x_new.iter_mut().zip(x.iter()).zip(&d) {
                *xn = xi + t * di;
            }
            let f_new = f(&x_new, &mut g_new);
            evaluations += 1;
            let armijo = f_new <= fx + 1e-4 * t * slope;
            // Hager & Zhang's approximate Wolfe conditions: near the optimum an f32 objective
            // cannot show a decrease below its rounding, but its directional derivative still
            // can (it is computed, not differenced).
            let d_new = dot(&g_new, &d);
            let approx_wolfe = f_new <= fx + 1e-6 * fx.abs()
                && d_new >= 0.9 * slope
                && d_new <= (2.0 * 1e-4 - 1.0) * slope;
            if f_new.is_finite() && (armijo || approx_wolfe) {
                accepted = Some(f_new);
                break;
            }
            t *= 0.5;
        }
        let Some(f_new) = accepted else {
            // No decrease along a descent direction: the gradient is at round-off level.
            return Outcome {
                value: fx,
                iterations: iteration,
                evaluations,
                converged: false,
            };
        };
        let mut s = if pairs.len() == settings.memory {
            pairs.pop_front().map(|p| p.0).unwrap_or_default()
        } else {
            vec![0.0; n]
        };
        s.resize(n, 0.0);
        let mut y = vec![0.0; n];
        for i in 0..n {
            s[i] = x_new[i] - x[i];
            y[i] = g_new[i] - g[i];
        }
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y) {
            pairs.push_back((s, y, 1.0 / sy));
        }
        x.copy_from_slice(&x_new);
        std::mem::swap(&mut g, &mut g_new);
        let decrease = (fx - f_new) / fx.abs().max(f_new.abs()).max(1.0);
        fx = f_new;
        if (0.0..=settings.ftol).contains(&decrease) {
            return Outcome {
                value: fx,
                iterations: iteration + 1,
                evaluations,
                converged: true,
            };
        }
    }
    Outcome {
        value: fx,
        iterations: settings.max_iter,
        evaluations,
        converged: max_abs(&g) <= settings.gtol,
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn norm1(a: &[f64]) -> f64 {
    a.iter()
        .map(|v| v.abs())
        .sum::<f64>()
        .max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rosenbrock function in 10 dimensions: minimum 0 at (1, ..., 1), a curved valley
    /// that plain gradient descent crawls along.
    #[test]
    fn finds_the_rosenbrock_minimum() {
        let mut x = vec![-1.2; 10];
        let out = minimize(
            &mut x,
            Settings {
                gtol: 1e-8,
                ..Settings::default()
            },
            |x, g| {
                let mut f = 0.0;
                g.iter_mut().for_each(|v| *v = 0.0);
                for i in 0..x.len() - 1 {
                    let a = x[i + 1] - x[i] * x[i];
                    let b = 1.0 - x[i];
                    f += 100.0 * a * a + b * b;
                    g[i] += -400.0 * a * x[i] - 2.0 * b;
                    g[i + 1] += 200.0 * a;
                }
                f
            },
        );
        assert!(out.converged, "{out:?}");
        for v in &x {
            assert!((v - 1.0).abs() < 1e-5, "{x:?}");
        }
    }

    /// A quadratic with condition number 1e4 converges in far fewer iterations than variables
    /// times the condition number (what a first-order method would need).
    #[test]
    fn ill_conditioned_quadratic() {
        let n = 50;
        let scale: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(4.0 * i as f64 / (n - 1) as f64))
            .collect();
        let mut x = vec![1.0; n];
        let out = minimize(
            &mut x,
            Settings {
                gtol: 1e-9,
                ..Settings::default()
            },
            |x, g| {
                let mut f = 0.0;
                for i in 0..x.len() {
                    f += 0.5 * scale[i] * x[i] * x[i];
                    g[i] = scale[i] * x[i];
                }
                f
            },
        );
        // Gradient descent would need ~cond · ln(1/tol) ≈ 2e5 iterations.
        assert!(out.converged && out.iterations < 1000, "{out:?}");
        assert!(x.iter().all(|v| v.abs() < 1e-6), "{x:?}");
    }
}
