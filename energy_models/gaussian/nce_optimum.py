"""NCE's own optimum on fixed samples, by L-BFGS: what the NCE trainer converges to, without its noise.

For the grid Gaussian, log phi(x) = -x~^T Lambda~ x~ / 2 (x~ = (x - mu) / sigma) is LINEAR in the
parameters theta = (Lambda~_ii, Lambda~_ij on the edges, c), so

    G(u) = -q(u) / 2 + c - log p_n(u) - log nu,   q(u) = sum_i Lambda~_ii u~_i^2 + 2 sum_(i,j) Lambda~_ij u~_i u~_j,
    J(theta) = mean_data softplus(-G(x)) + nu mean_noise softplus(G(y))

is a logistic regression with features (-u~_i^2 / 2, -u~_i u~_j, 1) and offset -log p_n - log nu:
convex in theta, with the exact gradient

    dJ/dtheta = sum_n a_n dG_n/dtheta,   a = -sigmoid(-G) / n on data,  nu sigmoid(G) / m on noise.

Minimising it on one fixed draw of data and noise (scipy L-BFGS-B, float64 outer loop, float32 passes
over the samples) gives the NCE estimate for those samples, positive definite or not: the reference the
stochastic trainer (`nce.py`) is measured against, as `score_matching.py`'s exact optima are for score
matching. The analytic log Z and likelihoods need a positive definite Lambda; they are reported as None
when the optimum is not.
"""

import dataclasses

import numpy as np
import scipy.optimize
import scipy.special


@dataclasses.dataclass
class NCEOptimum:
    """diag [D] and edges [E] of Lambda~; c; the objective; L-BFGS's iteration count and gradient norm."""

    diag: np.ndarray
    edges: np.ndarray
    c: float
    objective: float
    iterations: int
    gradient_norm: float


def _pair_products(v, pattern):
    """u~_i u~_j for every edge (i, j) of `pattern`, [k, E] in the pattern's edge order, by slicing the
    [k, H, W] images once per offset, which is faster than a gather over the index pairs."""
    h, w = pattern.height, pattern.width
    images = v.reshape(len(v), h, w)
    out = []
    for dr, dc in pattern.offsets:
        # Valid pixels (r, c) with (r + dr, c + dc) on the grid, in row-major order (as `grid_pattern`).
        r0, r1 = max(0, -dr), h - max(0, dr)
        c0, c1 = max(0, -dc), w - max(0, dc)
        a = images[:, r0:r1, c0:c1]
        b = images[:, r0 + dr:r1 + dr, c0 + dc:c1 + dc]
        out.append((a * b).reshape(len(v), -1))
    return np.concatenate(out, axis=1)


def _objective(parts, pattern, chunk):
    """(J, dJ/dtheta) over `parts`, a list of (standardised rows float32 [k, D], sign, weight, offset [k]):
    sign +1 for data (term softplus(-G)), -1 for noise (softplus(G)); G = -q/2 + c + offset."""

    def value_and_grad(theta):
        d, e = pattern.dim, pattern.num_edges
        diag, edges, c = theta[:d].astype(np.float32), theta[d:d + e].astype(np.float32), theta[-1]
        total, g_diag, g_edges, g_c = 0.0, np.zeros(d), np.zeros(e), 0.0
        for rows, sign, weight, offset in parts:
            for start in range(0, len(rows), chunk):
                v = rows[start:start + chunk]
                pairs = _pair_products(v, pattern)
                squares = v * v
                q = squares @ diag + 2.0 * (pairs @ edges)
                g = -0.5 * q.astype(np.float64) + c + offset[start:start + chunk]
                total += weight * np.sum(np.logaddexp(0.0, -sign * g))
                a = (-sign * weight * scipy.special.expit(-sign * g)).astype(np.float32)  # dJ/dG per row
                g_diag += -0.5 * (a @ squares)
                g_edges += -(a @ pairs)
                g_c += float(np.sum(a))
        return total, np.concatenate([g_diag, g_edges, [g_c]])

    return value_and_grad


def nce_optimum(x_std, log_pn_x, y_std, log_pn_y, pattern, nu, c_start, max_iter=1000, tol=1e-9,
                chunk=4096):
    """Minimises J over (Lambda~, c) from Lambda~ = I and c = `c_start`.

    Args:
      x_std, y_std: standardised data and noise rows, float32 [n, D] and [m, D].
      log_pn_x, log_pn_y: log p_n of those rows (float64 [n], [m]).
      pattern: the `GridPattern` of Lambda~.
      nu: the noise-to-data weight (m need not equal nu n: each noise row has weight nu / m).
      c_start: the starting c (e.g. `nce.balanced_c` for Lambda~ = I).

    Returns:
      An `NCEOptimum`.
    """
    log_nu = np.log(nu)
    parts = [(x_std, 1.0, 1.0 / len(x_std), -np.asarray(log_pn_x, np.float64) - log_nu),
             (y_std, -1.0, nu / len(y_std), -np.asarray(log_pn_y, np.float64) - log_nu)]
    value_and_grad = _objective(parts, pattern, chunk)
    theta0 = np.concatenate([np.ones(pattern.dim), np.zeros(pattern.num_edges), [float(c_start)]])
    result = scipy.optimize.minimize(value_and_grad, theta0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-7})
    theta = result.x
    return NCEOptimum(theta[:pattern.dim], theta[pattern.dim:-1], float(theta[-1]), float(result.fun),
                      int(result.nit), float(np.max(np.abs(result.jac))))
