"""The exact score-matching optimum of a grid Gaussian: normal equations over the pattern, unconstrained and
under lambda_min >= floor."""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg


def score_matching_system(s, pattern):
    """The normal equations H theta = b of score matching over a grid pattern (float64, sparse H).

    theta = (Lambda_11, ..., Lambda_DD, Lambda_ij for the edges i < j of `pattern`), P = D + E entries,
    Lambda = sum_p theta_p E_p with E_p = e_i e_i^T (diagonal) or e_i e_j^T + e_j e_i^T (edge). Then

        J(theta) = tr(Lambda S Lambda) / 2 - tr(Lambda) = theta^T H theta / 2 - b^T theta,
        tr(Lambda S Lambda) = sum_i Lambda[i, N(i)] S[N(i), N(i)] Lambda[i, N(i)]^T,

    where N(i) = {i} and the neighbours of i (the non-zeros of row i). With B the 0/1 map from theta to
    the stacked rows Lambda[i, N(i)] (D + 2E entries) and K = blockdiag_i S[N(i), N(i)], H = B^T K B
    (positive semi-definite: J is a convex quadratic) and b_p = tr(E_p) = 1 on the diagonal, 0 on edges.

    Args:
      s: [D, D] data covariance about mu.
      pattern: a `GridPattern`.

    Returns:
      (H as a scipy.sparse CSR [P, P] matrix, b [P]).
    """
    import scipy.sparse

    d, e = pattern.dim, pattern.num_edges
    # Every non-zero (row i, column j) of Lambda and the parameter it reads.
    rows = np.concatenate([np.arange(d), pattern.rows, pattern.cols])
    cols = np.concatenate([np.arange(d), pattern.cols, pattern.rows])
    param = np.concatenate([np.arange(d), d + np.arange(e), d + np.arange(e)])
    order = np.lexsort((cols, rows))
    rows, cols, param = rows[order], cols[order], param[order]
    n = len(rows)
    b_map = scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), param)), shape=(n, d + e))
    # K couples entries in the same row i: K[(i, j), (i, k)] = S[j, k].
    starts = np.searchsorted(rows, np.arange(d))
    ends = np.searchsorted(rows, np.arange(d), side="right")
    ki, kj, kv = [], [], []
    for i in range(d):
        idx = np.arange(starts[i], ends[i])
        a, c = np.meshgrid(idx, idx, indexing="ij")
        ki.append(a.ravel())
        kj.append(c.ravel())
        kv.append(np.asarray(s)[cols[a.ravel()], cols[c.ravel()]])
    k = scipy.sparse.csr_matrix((np.concatenate(kv), (np.concatenate(ki), np.concatenate(kj))),
                                shape=(n, n))
    h = (b_map.T @ k @ b_map).tocsr()
    b = np.concatenate([np.ones(d), np.zeros(e)])
    return h, b


def score_matching_optimum(s, pattern):
    """The unconstrained score-matching optimum over the pattern, solved exactly: Lambda, dense float64.

    Solves H theta = b (`score_matching_system`) with a sparse direct solver. The result need not be
    positive definite: on MNIST (4 neighbours) its smallest eigenvalue is negative, so it is not a
    density, and the trainers (`ScoreMatchingGaussian`) find the optimum over {Lambda >= floor I} instead.
    """

    h, b = score_matching_system(s, pattern)
    theta = scipy.sparse.linalg.spsolve(h.tocsc(), b)
    d = pattern.dim
    return pattern.dense(theta[:d].reshape(pattern.map_shape),
                         pattern.edges_to_couplings(theta[d:]))


def score_matching_constrained_optimum(s, pattern, floor=1e-3, barriers=(1.0, 1e-1, 1e-2, 1e-3, 1e-4,
                                                                        1e-5, 1e-6, 1e-7)):
    """The score-matching optimum over {Lambda on the pattern : Lambda~ - floor I >= 0}, by a barrier.

    Lambda~ = diag(sigma) Lambda diag(sigma), sigma_i^2 = S_ii, as the trainers' guard uses, so the set
    is {Lambda - F >= 0} with F = floor diag(1 / S_ii). For a decreasing sequence of barrier weights t,
    Newton's method (with a line search that keeps Lambda - F positive definite) minimises

        phi_t(theta) = theta^T H theta / 2 - b^T theta - t log det(Lambda(theta) - F),

    whose minimiser tends to the constrained optimum as t -> 0 (J is convex and the set is convex, so
    the optimum is unique; the gap in J is at most t D). The log det Hessian is the MLE solver's map
    Sigma -> tr(Sigma E_p Sigma E_q), Sigma = (Lambda - F)^-1.

    Returns:
      Lambda, dense float64 [D, D].
    """
    import scipy.linalg

    from energy_models.gaussian import mle

    s = np.asarray(s, np.float64)
    d = pattern.dim
    h, b = score_matching_system(s, pattern)
    h = h.toarray()
    i, j, w = mle._pattern_indices(pattern)
    neg_hessian = mle._newton_matrix_fn(i, j, w)
    f_shift = np.concatenate([floor / np.diag(s), np.zeros(pattern.num_edges)])
    theta = np.concatenate([1.0 / np.diag(s), np.zeros(pattern.num_edges)])  # PD: Lambda - F > 0.

    def phi(theta, t):
        try:
            chol = scipy.linalg.cholesky(mle._assemble(theta - f_shift, i, j, d), lower=True,
                                         check_finite=False)
        except np.linalg.LinAlgError:
            return np.inf, None
        return 0.5 * theta @ h @ theta - b @ theta - 2.0 * t * np.sum(np.log(np.diag(chol))), chol

    for t in barriers:
        value, chol = phi(theta, t)
        for _ in range(50):
            sigma = scipy.linalg.cho_solve((chol, True), np.eye(d), check_finite=False)
            grad = h @ theta - b - t * 2.0 * w * sigma[i, j]
            hess = h + t * neg_hessian(sigma)
            step = -scipy.linalg.solve(hess, grad, assume_a="pos", check_finite=False)
            decrement = -grad @ step
            if decrement / 2.0 < 1e-10:
                break
            size = 1.0
            while True:  # Armijo; a trial outside the cone has phi = inf and is rejected.
                trial_value, trial_chol = phi(theta + size * step, t)
                if trial_value <= value - 0.25 * size * decrement:
                    break
                size *= 0.5
            theta, value, chol = theta + size * step, trial_value, trial_chol
    return mle._assemble(theta, i, j, d)
