"""Exact grid-Gaussian maximum likelihood for large images: Newton-CG on banded Cholesky factors.

The problem is `mle.fit_grid_mle`'s, maximise f(theta) = log det Lambda - tr(S Lambda) over the P free
entries theta of a precision with the grid pattern, but without its P x P Hessian: on 64 x 64 patches
P = 12,160 (4 neighbours) and the Hessian alone is 1.2 GB, on 128 x 128 P = 48,896 and 19 GB. Here

* Lambda in row-major pixel order is a band matrix of half-bandwidth w = width (4 neighbours) or
  width + 1 (8): its Cholesky factor has the same band (no fill-in outside it), so the positive-definiteness
  test and log det Lambda = 2 sum log diag(L) cost O(D w^2) (`scipy.linalg.cholesky_banded`), and
  Sigma = Lambda^-1 comes from banded solves (`cho_solve_banded`), O(D^2 w);
* the Newton system (-Hess) s = grad is solved by conjugate gradients, which needs only products with
  the Hessian. For a direction delta with Delta = sum_q delta_q E_q (sparse, the grid pattern),

      (Hess delta)_p = -tr(Sigma Delta Sigma E_p) = -2 w_p (Sigma Delta Sigma)[i_p, j_p],

  one sparse-times-dense product Sigma Delta (about 5 D^2 flops) and P row dot products; CG is
  preconditioned by the Hessian's diagonal 2 w_p^2 (Sigma_ii Sigma_jj + Sigma_ij^2);
* CG stops at a relative residual min(0.5, sqrt(|grad|)) (an inexact Newton method, superlinear near
  the optimum), and the step is backtracked (Armijo) until Lambda is positive definite and f rises.

It stops when the optimality condition max over the pattern of |Sigma - S| is below `tol` (1e-6 by
default, the dense solver's accuracy at 28 x 28) and returns an `mle.MLEResult` whose precision is a
scipy sparse matrix and whose covariance is the dense Sigma.
"""

import numpy as np
import scipy.linalg
import scipy.sparse

from energy_models.estimators.mle import MLEResult, _pattern_indices


def _band(lam, bandwidth):
    """Upper banded storage [bandwidth + 1, D] of a symmetric sparse matrix (scipy's cholesky_banded)."""
    d = lam.shape[0]
    ab = np.zeros((bandwidth + 1, d))
    coo = scipy.sparse.triu(lam).tocoo()
    ab[bandwidth + coo.row - coo.col, coo.col] = coo.data
    return ab


def _factor(theta, i, j, d, bandwidth):
    """(sparse Lambda, banded Cholesky factor or None when Lambda is not positive definite)."""
    lam = scipy.sparse.coo_matrix((np.concatenate([theta, theta[d:]]),
                                   (np.concatenate([i, j[d:]]), np.concatenate([j, i[d:]]))), shape=(d, d)).tocsr()
    try:
        return lam, scipy.linalg.cholesky_banded(_band(lam, bandwidth), lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return lam, None


def _objective(theta, chol, s_pattern, w):
    """log det Lambda - tr(S Lambda), with tr(S Lambda) = sum_p 2 w_p S[i_p, j_p] theta_p over the pattern."""
    return 2.0 * np.sum(np.log(chol[-1])) - np.sum(2.0 * w * s_pattern * theta)


def _rows_dot(a, b, i, j, chunk=2048):
    """[sum_k a[i_p, k] b[j_p, k] for every p], in chunks so no [P, D] temporary is held whole."""
    out = np.empty(len(i))
    for start in range(0, len(i), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("pk,pk->p", a[i[start:stop]], b[j[start:stop]])
    return out


def fit_grid_mle_newton_cg(s, pattern, tol=1e-6, max_iter=100, max_cg=500, callback=None):
    """Solves max log det Lambda - tr(S Lambda) over the grid pattern; same answer as `mle.fit_grid_mle`.

    Args:
      s: float [D, D] sample covariance of centred data.
      pattern: the `energy_models.grid.GridPattern` (row-major pixels, so Lambda is banded).
      tol: stop when max over the pattern of |Sigma - S| is below it.
      max_iter: Newton steps; max_cg: conjugate-gradient steps per Newton step.
      callback: optional callable(iteration, objective, max_abs_residual) at every iterate.

    Returns:
      `mle.MLEResult` (precision as a scipy CSR matrix, covariance dense).

    Raises:
      ValueError: wrong shape, a non-positive diagonal, or no convergence in `max_iter` steps.
    """
    s = np.asarray(s, dtype=np.float64)
    d = pattern.dim
    if s.shape != (d, d):
        raise ValueError(f"S must have shape {(d, d)}, got {s.shape}")
    if np.any(np.diag(s) <= 0):
        raise ValueError("S must have a positive diagonal")
    i, j, w = _pattern_indices(pattern)
    bandwidth = int(np.max(np.abs(i - j))) or 1
    s_pattern = s[i, j]
    theta = np.concatenate([1.0 / np.diag(s), np.zeros(pattern.num_edges)])
    lam, chol = _factor(theta, i, j, d, bandwidth)
    f = _objective(theta, chol, s_pattern, w)
    for iteration in range(max_iter + 1):
        sigma = scipy.linalg.cho_solve_banded((chol, False), np.eye(d), check_finite=False)
        residual = sigma[i, j] - s_pattern
        worst = float(np.max(np.abs(residual)))
        if callback is not None:
            callback(iteration, f, worst)
        if worst < tol:
            return MLEResult(precision=lam, covariance=sigma, iterations=iteration,
                             max_abs_residual=worst, objective=float(f))
        if iteration == max_iter:
            break
        grad = 2.0 * w * residual
        step = _newton_cg(sigma, grad, i, j, w, d, max_cg)
        slope = grad @ step
        t = 1.0
        while True:
            trial = theta + t * step
            lam_trial, chol_trial = _factor(trial, i, j, d, bandwidth)
            if chol_trial is not None:
                f_trial = _objective(trial, chol_trial, s_pattern, w)
                if f_trial >= f + 0.25 * t * slope:
                    break
            t *= 0.5
            if t < 1e-12:
                raise ValueError("covariance selection line search failed; is S positive definite?")
        theta, lam, chol, f = trial, lam_trial, chol_trial, f_trial
    raise ValueError(f"covariance selection did not converge in {max_iter} Newton steps "
                     f"(max |Sigma - S| {worst:.2e} on the pattern)")


def _newton_cg(sigma, grad, i, j, w, d, max_cg):
    """Preconditioned CG for (-Hess) s = grad, to relative residual min(0.5, sqrt(|grad|))."""
    def neg_hess(delta):
        big_delta = scipy.sparse.coo_matrix((np.concatenate([delta, delta[d:]]),
                                             (np.concatenate([i, j[d:]]), np.concatenate([j, i[d:]]))),
                                            shape=(d, d)).tocsr()
        a = (big_delta @ sigma).T  # Sigma Delta (both symmetric)
        return 2.0 * w * _rows_dot(a, sigma, i, j)

    precondition = 1.0 / (2.0 * w ** 2 * (np.diag(sigma)[i] * np.diag(sigma)[j] + sigma[i, j] ** 2))
    norm = np.linalg.norm(grad)
    target = min(0.5, np.sqrt(norm)) * norm
    x = np.zeros_like(grad)
    r = grad.copy()
    z = precondition * r
    p = z.copy()
    rz = r @ z
    for _ in range(max_cg):
        hp = neg_hess(p)
        alpha = rz / (p @ hp)
        x += alpha * p
        r -= alpha * hp
        if np.linalg.norm(r) <= target:
            break
        z = precondition * r
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return x
