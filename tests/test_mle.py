"""Exact constrained maximum likelihood (covariance selection) on data from a known grid Gaussian."""

import numpy as np
import pytest

from energy_models.gaussian.mle import fit_grid_mle
from energy_models.linalg import grid


def known_precision(pattern, rng):
    """A positive-definite grid precision that is NOT diagonally dominant (like the MNIST optimum)."""
    diag = rng.uniform(1.0, 2.0, size=(pattern.height, pattern.width))
    couplings = rng.uniform(-0.6, -0.2, size=pattern.masks.shape) * pattern.masks
    lam = pattern.dense(diag, couplings)
    lam += (0.3 - np.linalg.eigvalsh(lam)[0]) * np.eye(pattern.dim)  # Smallest eigenvalue 0.3.
    return lam


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_mle_matches_covariance_on_pattern_and_recovers_truth(neighbourhood):
    rng = np.random.default_rng(neighbourhood)
    pattern = grid.grid_pattern(5, 6, neighbourhood)
    lam_true = known_precision(pattern, rng)
    off_diagonal = np.abs(lam_true - np.diag(np.diag(lam_true)))
    assert np.any(np.diag(lam_true) < off_diagonal.sum(1)), "the truth should not be diagonally dominant"
    n = 200_000
    x = rng.multivariate_normal(np.zeros(pattern.dim), np.linalg.inv(lam_true), size=n)
    s = x.T @ x / n
    result = fit_grid_mle(s, pattern)
    lam = result.precision
    # Optimality (Dempster 1972): Sigma = S on the diagonal and the edges, to solver tolerance.
    sigma = np.linalg.inv(lam)
    i = np.concatenate([np.arange(pattern.dim), pattern.rows])
    j = np.concatenate([np.arange(pattern.dim), pattern.cols])
    np.testing.assert_allclose(sigma[i, j], s[i, j], atol=1e-6)
    assert result.max_abs_residual < 1e-6
    # Zero off the pattern, symmetric, positive definite.
    off = np.ones_like(lam, bool)
    off[i, j] = off[j, i] = False
    assert np.all(lam[off] == 0) and np.array_equal(lam, lam.T)
    assert np.linalg.eigvalsh(lam)[0] > 0
    # Consistency: with n = 2e5 samples the entries' standard errors are ~ |Lambda| sqrt(2/n) ~ 5e-3;
    # 0.05 is ten of those, so a wrong estimator fails while sampling error never does.
    np.testing.assert_allclose(lam, lam_true, atol=0.05)


def test_mle_beats_any_other_pattern_precision():
    """The optimum's objective log det L - tr(S L) is larger than at random perturbations on the pattern."""
    rng = np.random.default_rng(7)
    pattern = grid.grid_pattern(4, 4, 4)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    s = x.T @ x / 500
    result = fit_grid_mle(s, pattern)

    def objective(lam):
        return np.linalg.slogdet(lam)[1] - np.sum(s * lam)

    assert abs(objective(result.precision) - result.objective) < 1e-9
    for _ in range(20):
        d, c = rng.normal(size=(4, 4)), rng.normal(size=pattern.masks.shape) * pattern.masks
        perturbed = result.precision + 1e-3 * pattern.dense(d, c)
        assert objective(perturbed) < result.objective


def test_mle_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"S must have shape \(9, 9\)"):
        fit_grid_mle(np.eye(4), grid.grid_pattern(3, 3))
