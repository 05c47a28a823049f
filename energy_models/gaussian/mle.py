"""Exact maximum likelihood for a zero-mean Gaussian with a grid-structured precision.

For centred data with covariance S, the average log-likelihood of N(0, Lambda^-1) is

    l(Lambda) = -D/2 log(2 pi) + 1/2 [ log det Lambda - tr(S Lambda) ],

and maximising it over the symmetric precisions with the grid pattern is Dempster's covariance selection
(1972): a concave problem whose optimum Sigma = Lambda^-1 matches S on the diagonal and on every grid edge,

    Sigma[i, j] = S[i, j]   for i = j and for all neighbours (i, j).

The solver is Newton's method on the free entries theta = (Lambda[i, i], Lambda[i, j] for edges i < j).
With E_p = e_i e_j^T + e_j e_i^T (E_p = e_i e_i^T on the diagonal) and Lambda = sum_p theta_p E_p,

    f(theta)    = log det Lambda - tr(S Lambda),
    grad_p      = tr((Sigma - S) E_p)      = 2 w_p (Sigma - S)[i_p, j_p],
    Hess_{p,q}  = -tr(Sigma E_p Sigma E_q) = -2 w_p w_q (Sigma[i_p, i_q] Sigma[j_p, j_q]
                                                       + Sigma[i_p, j_q] Sigma[j_p, i_q]),

with w_p = 1/2 on the diagonal and 1 on edges. Each step solves the dense P x P Newton system (P = D + E
free entries: 2,296 for 4 neighbours, 3,754 for 8 on 28 x 28) by Cholesky, with a backtracking line search
that keeps Lambda positive definite (log det is +inf outside, so the iterates never leave the cone).
Newton converges quadratically near the optimum, which is what makes a tolerance of 1e-6 on Sigma - S
reachable where first-order methods crawl: the MNIST optimum has eigenvalues from about 0.06 to 126.
"""

import dataclasses

import numpy as np
import scipy.linalg
import tensorflow as tf


@dataclasses.dataclass
class MLEResult:
    """The solution of `fit_grid_mle`.

    Attributes:
      precision: float64 [D, D], the optimal Lambda (zero off the pattern).
      covariance: float64 [D, D], Lambda^-1 (None from `mle_newton_cg`, which never forms it).
      iterations: Newton steps taken.
      max_abs_residual: max over the pattern of |Sigma - S|, the optimality condition.
      objective: log det Lambda - tr(S Lambda) at the optimum.
    """

    precision: np.ndarray
    covariance: np.ndarray
    iterations: int
    max_abs_residual: float
    objective: float


def _pattern_indices(pattern):
    d = pattern.dim
    i = np.concatenate([np.arange(d), pattern.rows])
    j = np.concatenate([np.arange(d), pattern.cols])
    w = np.concatenate([np.full(d, 0.5), np.ones(pattern.num_edges)])
    return i, j, w


def _newton_matrix_fn(i, j, w):
    """A compiled Sigma -> -Hess map for the pattern (i, j, w), float64.

    The four P x P gathers dominate a Newton step when done in NumPy; XLA fuses them with the products
    into one pass, several times faster. The Cholesky solve stays in LAPACK (scipy), which is faster than
    TensorFlow's on CPU (BENCHMARKS.md, "Exact grid Gaussian and the operator (issue 2)").
    """
    ti, tj = tf.constant(i), tf.constant(j)
    ww = tf.constant(2.0 * np.outer(w, w))

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None], tf.float64)])
    def neg_hessian(sigma):
        rows_i, rows_j = tf.gather(sigma, ti), tf.gather(sigma, tj)
        return ww * (tf.gather(rows_i, ti, axis=1) * tf.gather(rows_j, tj, axis=1)
                     + tf.gather(rows_i, tj, axis=1) * tf.gather(rows_j, ti, axis=1))

    return lambda sigma: neg_hessian(tf.constant(sigma)).numpy()


def _assemble(theta, i, j, d):
    out = np.zeros((d, d))
    out[i, j] = theta
    out[j, i] = theta
    return out


def _objective(lam, s):
    """(log det Lambda - tr(S Lambda), Cholesky factor), or (-inf, None) when Lambda is not PD."""
    try:
        chol = scipy.linalg.cholesky(lam, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return -np.inf, None
    # log det from the Cholesky diagonal: no overflow, unlike det() of a 784 x 784 matrix.
    return 2.0 * np.sum(np.log(np.diag(chol))) - np.sum(s * lam), chol


def armijo_step(evaluate, theta, f, step, slope):
    """Backtracking (Armijo) line search for an ascent direction: the first t = 1, 1/2, 1/4, ... with
    f(theta + t step) >= f + t slope / 4, as (theta + t step, its f, its state).

    `evaluate(theta)` returns (f, state), with f = -inf where Lambda is not positive definite, so such a
    trial is always rejected and the iterates never leave the cone.

    Raises:
      ValueError: when t falls below 1e-12 (S is not positive definite on the pattern, or round-off).
    """
    t = 1.0
    while True:
        trial = theta + t * step
        f_trial, state = evaluate(trial)
        if f_trial >= f + 0.25 * t * slope:
            return trial, f_trial, state
        t *= 0.5
        if t < 1e-12:
            raise ValueError("covariance selection line search failed; is S positive definite?")


def fit_grid_mle(s, pattern, tol=1e-9, max_iter=100, callback=None):
    """Solves max_Lambda log det Lambda - tr(S Lambda) over precisions with the grid pattern.

    Args:
      s: float [D, D] sample covariance of centred data (symmetric positive definite on the pattern).
      pattern: the `energy_models.linalg.grid.GridPattern`.
      tol: stop when the Newton decrement lambda^2 / 2 = grad^T (-Hess)^-1 grad / 2 (an upper bound on
        the remaining gain in f near the optimum) falls below it.
      max_iter: maximum number of Newton steps.
      callback: optional callable(iteration, objective, max_abs_residual), called at every iterate
        (iteration 0 is the starting point, the last one the optimum).

    Returns:
      An `MLEResult`.

    Raises:
      ValueError: if S has the wrong shape, or the iteration fails to converge in `max_iter` steps.
    """
    s = np.asarray(s, dtype=np.float64)
    d = pattern.dim
    if s.shape != (d, d):
        raise ValueError(f"S must have shape {(d, d)}, got {s.shape}")
    i, j, w = _pattern_indices(pattern)
    s_pattern = s[i, j]
    # Start from the diagonal MLE 1/S_ii: positive definite, and exact when there are no couplings.
    theta = np.concatenate([1.0 / np.diag(s), np.zeros(pattern.num_edges)])
    lam = _assemble(theta, i, j, d)
    f, chol = _objective(lam, s)
    if chol is None:
        raise ValueError("S must have a positive diagonal")
    neg_hessian = _newton_matrix_fn(i, j, w)

    def evaluate(trial):
        lam_trial = _assemble(trial, i, j, d)
        f_trial, chol_trial = _objective(lam_trial, s)
        return f_trial, (lam_trial, chol_trial)

    for iteration in range(1, max_iter + 1):
        sigma = scipy.linalg.cho_solve((chol, True), np.eye(d), check_finite=False)
        grad = 2.0 * w * (sigma[i, j] - s_pattern)
        if callback is not None:
            callback(iteration - 1, f, float(np.max(np.abs(sigma[i, j] - s_pattern))))
        factor = scipy.linalg.cho_factor(neg_hessian(sigma), lower=True, overwrite_a=True,
                                         check_finite=False)
        step = scipy.linalg.cho_solve(factor, grad, check_finite=False)
        del factor
        decrement = grad @ step
        if decrement / 2.0 < tol:
            steps = iteration - 1
            break
        theta, f, (lam, chol) = armijo_step(evaluate, theta, f, step, decrement)
    else:
        raise ValueError(f"covariance selection did not converge in {max_iter} Newton steps")
    residual = float(np.max(np.abs(sigma[i, j] - s_pattern)))
    return MLEResult(precision=lam, covariance=sigma, iterations=steps,
                     max_abs_residual=residual, objective=float(f))
