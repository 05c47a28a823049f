"""Exact grid-Gaussian maximum likelihood for large images: Newton-CG on the block-tridiagonal precision.

The problem is `mle.fit_grid_mle`'s, maximise f(theta) = log det Lambda - tr(S Lambda) over the P free
entries theta of a precision with the grid pattern, but without its P x P Hessian (on 128 x 128 patches
P = 48,896 and the Hessian alone is 19 GB) and without any D x D matrix. In row-major pixel order with
m = width * channels values per image row, every grid edge joins a row to itself or to the next one, so
Lambda is block tridiagonal: n = height diagonal blocks A_k and super-diagonal blocks B_k (m x m).

* Block LDL^T: S_0 = A_0, S_k = A_k - B_{k-1}^T S_{k-1}^-1 B_{k-1}. Lambda is positive definite iff every
  Schur complement S_k is (each is Cholesky-factored), and log det Lambda = sum_k log det S_k.
* Selected inversion (Takahashi et al. 1973): with C_k = S_k^-1 B_k, the blocks of Sigma = Lambda^-1 on and
  next to the diagonal, which hold every pattern entry, follow backwards from Sigma_{n-1,n-1} = S_{n-1}^-1:

      Sigma_{k,k+1} = -C_k Sigma_{k+1,k+1},    Sigma_{k,k} = S_k^-1 - Sigma_{k,k+1} C_k^T.

  Both passes cost O(n m^3) = O(D w^2), against O(D^3) for the dense inverse.
* The gradient is grad_p = 2 w_p (Sigma - S)[i_p, j_p] (w_p = 1/2 on the diagonal, 1 on edges). The Newton
  system (-Hess) s = grad is solved by conjugate gradients. A Hessian-vector product is a directional
  derivative, (-Hess delta)_p = 2 w_p (Sigma Delta Sigma)[i_p, j_p] = -2 w_p dSigma[Delta][i_p, j_p], and
  dSigma on the two block diagonals is the forward-mode derivative of the two passes above: again
  O(D w^2), with no far-off-diagonal block of Sigma ever formed.
* CG is preconditioned by the Hessian's diagonal, 2 w_p^2 (Sigma_ii Sigma_jj + Sigma_ij^2), read off the
  selected inverse. The pattern block of the inverse of the unrestricted Hessian, tr(Lambda E_p Lambda E_q),
  does no better overall on photograph patches, so the simpler diagonal is kept (BENCHMARKS.md, "Issue 17:
  MCMC health, image mosaics, exact MLE on large patches").
* CG stops at a relative residual min(0.5, sqrt(|grad|)) (inexact Newton, superlinear near the optimum)
  and the step is backtracked (`mle.armijo_step`) until Lambda is positive definite and f rises enough.

It stops when max over the pattern of |Sigma - S| is below `tol`. Memory is O(D w): the data enter only
through S on the pattern (`pattern_covariance` accumulates it from batches of patches).
"""

import numpy as np
import scipy.sparse

from energy_models.gaussian.mle import MLEResult, _pattern_indices, armijo_step


class _BlockTridiagonal:
    """Scatter between the pattern's free entries theta and the blocks (A [n, m, m], B [n - 1, m, m])."""

    def __init__(self, pattern):
        self.m = pattern.width * pattern.channels
        self.n = pattern.height
        self.i, self.j, self.w = _pattern_indices(pattern)
        lo, hi = np.minimum(self.i, self.j), np.maximum(self.i, self.j)
        self.block, self.r, self.c = lo // self.m, lo % self.m, hi % self.m
        self.diagonal = hi // self.m == self.block
        if np.any(hi // self.m - self.block > 1):  # cannot happen for a grid pattern in row-major order
            raise ValueError("the pattern is not block tridiagonal in row-major order")
        self.dim = pattern.dim

    def blocks(self, theta):
        a = np.zeros((self.n, self.m, self.m), dtype=theta.dtype)
        b = np.zeros((max(self.n - 1, 0), self.m, self.m), dtype=theta.dtype)
        d = self.diagonal
        a[self.block[d], self.r[d], self.c[d]] = theta[d]
        a[self.block[d], self.c[d], self.r[d]] = theta[d]
        b[self.block[~d], self.r[~d], self.c[~d]] = theta[~d]
        return a, b

    def gather(self, diag_blocks, super_blocks):
        """The pattern entries [P] of a symmetric matrix given by its two block diagonals."""
        d = self.diagonal
        out = np.empty(len(self.i))
        out[d] = diag_blocks[self.block[d], self.r[d], self.c[d]]
        out[~d] = super_blocks[self.block[~d], self.r[~d], self.c[~d]]
        return out

    def sparse(self, theta):
        """Lambda as a scipy CSR matrix."""
        off = self.i != self.j
        return scipy.sparse.coo_matrix(
            (np.concatenate([theta, theta[off]]),
             (np.concatenate([self.i, self.j[off]]), np.concatenate([self.j, self.i[off]]))),
            shape=(self.dim, self.dim)).tocsr()


class _Factor:
    """Block LDL^T of Lambda and the selected inverse: Sigma's diagonal and super-diagonal blocks."""

    def __init__(self, a, b):
        # NumPy only: scipy's LAPACK calls run on a second OpenBLAS thread pool, and alternating them with
        # NumPy's products slows every block operation down many times (BENCHMARKS.md, "Issue 17: MCMC
        # health, image mosaics, exact MLE on large patches").
        n = len(a)
        self.s_inv = np.empty_like(a)
        self.c = np.empty_like(b)
        self.logdet = 0.0
        schur = a[0]
        for k in range(n):
            chol = np.linalg.cholesky(schur)  # LinAlgError when Lambda is not positive definite
            self.logdet += 2.0 * float(np.sum(np.log(np.diag(chol))))
            chol_inv = np.linalg.inv(chol)
            self.s_inv[k] = chol_inv.T @ chol_inv
            if k + 1 < n:
                self.c[k] = self.s_inv[k] @ b[k]
                schur = a[k + 1] - b[k].T @ self.c[k]
        self.sigma_diag = np.empty_like(a)
        self.sigma_super = np.empty_like(b)
        self.sigma_diag[-1] = self.s_inv[-1]
        for k in range(n - 2, -1, -1):
            self.sigma_super[k] = -self.c[k] @ self.sigma_diag[k + 1]
            self.sigma_diag[k] = self.s_inv[k] - self.sigma_super[k] @ self.c[k].T

    def derivative(self, da, db):
        """d(Sigma's two block diagonals) along d(Lambda) = (da, db): forward mode of both passes."""
        n = len(da)
        d_s_inv, d_c = np.empty_like(da), np.empty_like(db)
        d_schur = da[0]
        for k in range(n):
            d_s_inv[k] = -self.s_inv[k] @ d_schur @ self.s_inv[k]
            if k + 1 < n:
                c = self.c[k]
                d_c[k] = self.s_inv[k] @ (db[k] - d_schur @ c)
                # d(B^T S^-1 B) = dB^T C + C^T dB - C^T dS C
                d_schur = da[k + 1] - db[k].T @ c - c.T @ db[k] + c.T @ d_schur @ c
        d_diag, d_super = np.empty_like(da), np.empty_like(db)
        d_diag[-1] = d_s_inv[-1]
        for k in range(n - 2, -1, -1):
            d_super[k] = -d_c[k] @ self.sigma_diag[k + 1] - self.c[k] @ d_diag[k + 1]
            d_diag[k] = d_s_inv[k] - d_super[k] @ self.c[k].T - self.sigma_super[k] @ d_c[k].T
        return d_diag, d_super


def pattern_covariance(batches, pattern):
    """(mean [D], S on the pattern [P]) of the rows of `batches`, an iterable of [N_b, D] arrays.

    S[i_p, j_p] = mean(x_i x_j) - mean(x_i) mean(x_j) in `mle._pattern_indices` order, accumulated in
    float64 without the D x D matrix (2.1 GB at 128 x 128).
    """
    i, j, _ = _pattern_indices(pattern)
    total, products, count = 0.0, 0.0, 0
    for x in batches:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != pattern.dim:
            raise ValueError(f"batches must be [N, {pattern.dim}] arrays, got shape {x.shape}")
        total = total + x.sum(0)
        # In chunks of pattern entries: x[:, i] whole would be [N_b, P], 2 GB for 5,000 rows at 128 x 128.
        sums = np.concatenate([np.einsum("np,np->p", x[:, i[k:k + 2048]], x[:, j[k:k + 2048]])
                               for k in range(0, len(i), 2048)])
        products = products + sums
        count += len(x)
    if count == 0:
        raise ValueError("no rows to estimate the covariance from")
    mean = total / count
    return mean, products / count - mean[i] * mean[j]


def fit_grid_mle_newton_cg(s, pattern, tol=1e-6, max_iter=100, max_cg=500, callback=None):
    """Solves max log det Lambda - tr(S Lambda) over the grid pattern; same answer as `mle.fit_grid_mle`.

    Args:
      s: sample covariance of centred data, either dense [D, D] or its pattern entries [P] in
        `mle._pattern_indices` order (from `pattern_covariance`).
      pattern: the `energy_models.linalg.grid.GridPattern` (row-major pixels, so Lambda is block tridiagonal).
      tol: stop when max over the pattern of |Sigma - S| is below it.
      max_iter: Newton steps; max_cg: conjugate-gradient steps per Newton step.
      callback: optional callable(iteration, objective, max_abs_residual) at every iterate.

    Returns:
      `mle.MLEResult` with the precision as a scipy CSR matrix and `covariance` None (Sigma is dense;
      its pattern entries equal S's to `tol`).

    Raises:
      ValueError: wrong shape, a non-positive diagonal, or no convergence in `max_iter` steps.
    """
    s = np.asarray(s, dtype=np.float64)
    structure = _BlockTridiagonal(pattern)
    i, j, w, d = structure.i, structure.j, structure.w, pattern.dim
    if s.shape == (d, d):
        s = s[i, j]
    elif s.shape != (len(i),):
        raise ValueError(f"S must have shape {(d, d)} or be its {len(i)} pattern entries, got {s.shape}")
    if np.any(s[:d] <= 0):
        raise ValueError("S must have a positive diagonal")

    def evaluate(theta):
        try:
            factor = _Factor(*structure.blocks(theta))
        except np.linalg.LinAlgError:
            return -np.inf, None
        return factor.logdet - np.sum(2.0 * w * s * theta), factor

    theta = np.concatenate([1.0 / s[:d], np.zeros(len(i) - d)])
    f, factor = evaluate(theta)
    for iteration in range(max_iter + 1):
        residual = structure.gather(factor.sigma_diag, factor.sigma_super) - s
        worst = float(np.max(np.abs(residual)))
        if callback is not None:
            callback(iteration, f, worst)
        if worst < tol:
            return MLEResult(precision=structure.sparse(theta), covariance=None, iterations=iteration,
                             max_abs_residual=worst, objective=float(f))
        if iteration == max_iter:
            break
        grad = 2.0 * w * residual
        step = _newton_cg(structure, factor, grad, max_cg)
        theta, f, factor = armijo_step(evaluate, theta, f, step, grad @ step)
    raise ValueError(f"covariance selection did not converge in {max_iter} Newton steps "
                     f"(max |Sigma - S| {worst:.2e} on the pattern)")


def _newton_cg(structure, factor, grad, max_cg):
    """Preconditioned CG for (-Hess) s = grad, to relative residual min(0.5, sqrt(|grad|))."""
    w = structure.w
    sigma = structure.gather(factor.sigma_diag, factor.sigma_super)
    variances = sigma[:structure.dim]  # the pattern starts with the D diagonal entries
    inverse_diagonal = 1.0 / (2.0 * w ** 2 * (variances[structure.i] * variances[structure.j] + sigma ** 2))

    def neg_hess(delta):
        return -2.0 * w * structure.gather(*factor.derivative(*structure.blocks(delta)))

    def precondition(g):
        return inverse_diagonal * g

    norm = np.linalg.norm(grad)
    target = min(0.5, np.sqrt(norm)) * norm
    x = np.zeros_like(grad)
    r = grad.copy()
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    for _ in range(max_cg):
        hp = neg_hess(p)
        alpha = rz / (p @ hp)
        x += alpha * p
        r -= alpha * hp
        if np.linalg.norm(r) <= target:
            break
        z = precondition(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return x
