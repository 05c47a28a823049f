"""cNCE's own optimum on fixed pairs, constrained to positive definiteness: the cNCE trainer's reference.

With the symmetric conditional noise y = x + epsilon u, the cNCE log-ratio of the grid Gaussian,
log phi(x) - log phi(y) = -(q(x~) - q(y~)) / 2 with q(v) = v^T Lambda~ v, is LINEAR in the parameters
theta = (Lambda~_ii, Lambda~_ij on the edges):

    G_n(theta) = f_n . theta,   f_n = -1/2 (x~_i^2 - y~_i^2  for every pixel i;
                                           2 (x~_i x~_j - y~_i y~_j)  for every edge (i, j)),
    J(theta)   = 2 mean_n softplus(-G_n(theta)),

a logistic regression without intercept, so J is convex. Its unconstrained minimiser need not be a
density (on noisy MNIST at the epsilon rule's 0.0106 it has lambda_min -6.4), and when the pairs are
separable (epsilon >= 0.03 there) it does not exist. The reference is therefore the minimiser over the
convex set {Lambda~ - floor I >= 0}, the set the trainers' positive-definiteness guard keeps, approached
by the log barrier

    phi_t(theta) = J(theta) - t log det(Lambda~(theta) - floor I),     t -> 0,

whose minimiser is within t D of the constrained optimum in J. Each phi_t is minimised by damped Newton
steps (Armijo backtracking; a trial outside the set has phi = +inf, so iterates never leave it). The
barrier's Hessian is exact (the covariance-selection map of `mle`); J's Hessian
2 mean_n s_n (1 - s_n) f_n f_n^T, s_n = sigmoid(G_n), is formed on a fixed subsample of `hessian_rows`
pairs while the gradient uses every pair: the fixed point is still phi_t's exact minimiser (the
Hessian only shapes the step), at a fraction of the cost of the full P x P product per step.
"""

import dataclasses

import numpy as np
import scipy.linalg
import scipy.special

from energy_models.gaussian import mle
from energy_models.gaussian.nce_optimum import _pair_products


@dataclasses.dataclass
class CNCEOptimum:
    """diag [D] and edges [E] of Lambda~ at the optimum; J there; Newton steps taken; the last barrier
    weight t; lambda_min(Lambda~)."""

    diag: np.ndarray
    edges: np.ndarray
    objective: float
    iterations: int
    barrier: float
    smallest_eigenvalue: float


def cnce_features(x_std, y_std, pattern):
    """f_n for pairs of standardised rows x~, y~ (float [n, D] each): float32 [n, D + E], so that
    G_n = f_n . theta is log phi(x_n) - log phi(y_n) for theta = (Lambda~ diagonal, Lambda~ edges)."""
    x_std = np.asarray(x_std, np.float32)
    y_std = np.asarray(y_std, np.float32)
    squares = -0.5 * (x_std * x_std - y_std * y_std)
    pairs = -(_pair_products(x_std, pattern) - _pair_products(y_std, pattern))
    return np.concatenate([squares, pairs], axis=1)


def cnce_objective(features, theta):
    """(J, dJ/dtheta) of the cNCE loss J = 2 mean softplus(-f . theta), float64."""
    g = (features @ theta.astype(np.float32)).astype(np.float64)
    value = 2.0 * np.mean(np.logaddexp(0.0, -g))
    a = (-2.0 / len(g)) * scipy.special.expit(-g)  # dJ/dG_n
    return float(value), (a.astype(np.float32) @ features).astype(np.float64)


def _solve_psd(matrix, rhs):
    """matrix^-1 rhs for a symmetric positive semi-definite matrix; a ridge of 1e-10 of its mean diagonal
    when the Cholesky fails (pairs the model separates well have weights s (1 - s) near 0, and a small
    barrier weight then leaves directions with almost no curvature)."""
    try:
        return scipy.linalg.solve(matrix, rhs, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        ridge = 1e-10 * np.mean(np.diag(matrix))
        return scipy.linalg.solve(matrix + ridge * np.eye(len(matrix)), rhs, assume_a="sym",
                                  check_finite=False)


def cnce_constrained_optimum(features, pattern, floor=1e-3, barriers=tuple(10.0 ** -k for k in range(3, 11)),
                             hessian_rows=20_000, tol=1e-10, max_steps=50, seed=0, callback=None):
    """Minimises J over {Lambda~ - floor I >= 0} by the log-barrier Newton method (module docstring).

    Args:
      features: float32 [n, D + E], `cnce_features` of the fixed pairs.
      pattern: the `GridPattern` of Lambda~.
      floor: the smallest eigenvalue of Lambda~ kept (the trainers' --pd-floor).
      barriers: the decreasing barrier weights t.
      hessian_rows: pairs used for J's Hessian (all of them when n is smaller).
      tol: a barrier stage ends when the Newton decrement / 2 falls below it.
      max_steps: Newton steps per barrier stage at most.
      callback: optional callable(t, step, J, decrement), called after each Newton step.

    Returns:
      A `CNCEOptimum`, starting from Lambda~ = I.
    """
    d = pattern.dim
    i, j, w = mle._pattern_indices(pattern)
    neg_hessian = mle._newton_matrix_fn(i, j, w)
    rows = np.random.default_rng(seed).permutation(len(features))[:hessian_rows]
    sub = features[rows]
    shift = np.concatenate([np.full(d, floor), np.zeros(pattern.num_edges)])
    theta = np.concatenate([np.ones(d), np.zeros(pattern.num_edges)])

    def phi(theta, t):
        try:
            chol = scipy.linalg.cholesky(mle._assemble(theta - shift, i, j, d), lower=True,
                                         check_finite=False)
        except np.linalg.LinAlgError:
            return np.inf, None, None, None
        value, grad = cnce_objective(features, theta)
        return value - 2.0 * t * np.sum(np.log(np.diag(chol))), chol, value, grad

    steps = 0
    for t in barriers:
        value, chol, j_value, j_grad = phi(theta, t)
        for _ in range(max_steps):
            sigma = scipy.linalg.cho_solve((chol, True), np.eye(d), check_finite=False)
            grad = j_grad - t * 2.0 * w * sigma[i, j]
            g_sub = (sub @ theta.astype(np.float32)).astype(np.float64)
            s = scipy.special.expit(g_sub)
            weights = (2.0 / len(sub)) * s * (1.0 - s)
            hess = (sub.T @ (sub * weights[:, None].astype(np.float32))).astype(np.float64)
            hess += t * neg_hessian(sigma)
            step = -_solve_psd(hess, grad)
            decrement = -grad @ step
            steps += 1
            if decrement / 2.0 < tol:
                break
            size = 1.0
            while size > 1e-10:  # Armijo; a trial outside the set has phi = inf and is rejected.
                trial = phi(theta + size * step, t)
                if trial[0] <= value - 0.25 * size * decrement:
                    break
                size *= 0.5
            else:
                break  # No decrease along the (approximate) Newton direction: phi_t is minimised.
            theta = theta + size * step
            value, chol, j_value, j_grad = trial
            if callback is not None:
                callback(t, steps, j_value, decrement)
            if size < 1e-3:
                # Armijo passes only for a tiny fraction of the step: J's float32 passes (relative
                # error ~1e-7) no longer resolve the decrease, so phi_t is as minimised as it can be.
                break
    lam = mle._assemble(theta, i, j, d)
    return CNCEOptimum(theta[:d], theta[d:], float(j_value), steps, float(barriers[-1]),
                       float(np.linalg.eigvalsh(lam)[0]))
