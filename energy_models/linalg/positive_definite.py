"""Positive-definiteness tools for grid precisions: a checked Cholesky, the banded test, the smallest
eigenvalue and the diagonal shift into the cone.

Row-major pixel numbering makes every grid precision a band matrix (half-bandwidth W + 1, times C with C
channels), so positive definiteness is decided by a banded Cholesky in O(D u^2).
"""

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from energy_models.errors import NotPositiveDefiniteError


def checked_cholesky(precision, what="the precision matrix"):
    """Lower Cholesky factor L (Lambda = L L^T) of a dense float64 matrix, or a clear error.

    Raises:
      NotPositiveDefiniteError: naming the smallest eigenvalue when Lambda is not positive definite.
    """
    precision = np.asarray(precision, dtype=np.float64)
    if not np.all(np.isfinite(precision)):
        raise NotPositiveDefiniteError(f"{what} has non-finite entries: the fit diverged; lower the "
                                       f"learning rate or use exact maximum likelihood (estimator mle)")
    try:
        return np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(precision)[0])
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite (smallest eigenvalue {smallest:.4g}), so it has no "
            f"normaliser and cannot be sampled or exported; refit with a positive-definite safeguard "
            f"or use exact maximum likelihood (estimator mle)") from None


def smallest_eigenvalue_sparse(dense):
    """lambda_min(Lambda) by Lanczos on the sparse Lambda (scipy `eigsh`, which="SA").

    Used only after a Cholesky test has failed, so lambda_min is the extremal negative (or tiny)
    eigenvalue, where Lanczos converges in few iterations, far faster than the dense `eigvalsh`
    (BENCHMARKS.md, "energy_models/linalg/positive_definite.py: eigensolvers").
    """
    sparse = scipy.sparse.csr_matrix(dense)
    try:
        return float(scipy.sparse.linalg.eigsh(sparse, k=1, which="SA", tol=1e-6,
                                               return_eigenvectors=False)[0])
    except scipy.sparse.linalg.ArpackNoConvergence:
        return float(np.linalg.eigvalsh(dense)[0])


def band_is_positive_definite(pattern, diag, couplings, floor):
    """Whether the grid matrix (diag [H, W], couplings [n_offsets, H, W]) minus floor I is PD.

    Row-major pixel numbering makes every grid precision a band matrix of half-bandwidth u = W + 1
    (the farthest neighbour, down-right, is W + 1 pixels on), so a banded Cholesky (LAPACK pbtrf via
    `scipy.linalg.cholesky_banded`, O(D u^2)) of the matrix minus floor I decides it. It succeeds exactly
    when the matrix is positive definite.
    """
    u = max(pattern.bandwidth, pattern.width + 1)  # W + 1; (W + 1) C with C channels.
    band = np.zeros((u + 1, pattern.dim))
    # Upper banded storage band[u + i - j, j] = A[i, j], i <= j; pattern.rows < pattern.cols always.
    band[u] = np.asarray(diag, dtype=np.float64).reshape(-1) - floor
    band[u + pattern.rows - pattern.cols, pattern.cols] = pattern.couplings_to_edges(couplings)
    if not np.all(np.isfinite(band)):
        return False
    try:
        scipy.linalg.cholesky_banded(band, lower=False, check_finite=False)
        return True
    except np.linalg.LinAlgError:
        return False


def lowest_eigenpairs(pattern, diag, edges, start):
    """The k lowest eigenpairs of the grid matrix (diagonal [D], edge values [E]): LOBPCG on the sparse
    matrix from `start` [D, k] (warm-started, far faster than the banded LAPACK eigensolver; BENCHMARKS.md,
    "energy_models/linalg/positive_definite.py: eigensolvers"), or the dense solver on small grids, where
    LOBPCG needs D >> k.
    """
    d, k = start.shape
    if d < 5 * k:
        lam, vec = np.linalg.eigh(pattern.dense(diag.reshape(pattern.map_shape), pattern.edges_to_couplings(edges)))
        return lam[:k], vec[:, :k]
    matrix = scipy.sparse.csr_matrix(
        (np.concatenate([diag, edges, edges]),
         (np.concatenate([np.arange(d), pattern.rows, pattern.cols]),
          np.concatenate([np.arange(d), pattern.cols, pattern.rows]))), shape=(d, d))
    # Residual tolerance 1e-4: an eigenvalue's error is of the order of the squared residual (~1e-8, far
    # below any floor's margin); a tighter tolerance does not converge within the iteration limit and only
    # costs time (BENCHMARKS.md, "NCE and cNCE from their default commands (issue 15)"). LOBPCG's
    # "not reaching the tolerance" warnings are noise for the guard, which tests the result by a Cholesky.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return scipy.sparse.linalg.lobpcg(matrix, start, largest=False, tol=1e-4, maxiter=40)
