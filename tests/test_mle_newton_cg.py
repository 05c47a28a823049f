"""The banded Newton-CG maximum-likelihood solver against the dense Newton solver and a known model."""

import numpy as np
import pytest

from energy_models import grid
from energy_models.estimators.mle import fit_grid_mle
from energy_models.estimators.mle_newton_cg import fit_grid_mle_newton_cg
from tests.test_mle import known_precision


@pytest.mark.parametrize("height, width, neighbourhood", [(12, 16, 4), (10, 9, 8)])
def test_newton_cg_reaches_the_dense_solvers_optimum(height, width, neighbourhood):
    rng = np.random.default_rng(height + neighbourhood)
    pattern = grid.grid_pattern(height, width, neighbourhood)
    lam_true = known_precision(pattern, rng)
    x = rng.multivariate_normal(np.zeros(pattern.dim), np.linalg.inv(lam_true), size=3 * pattern.dim)
    s = x.T @ x / len(x)
    dense = fit_grid_mle(s, pattern)
    iterates = []
    banded = fit_grid_mle_newton_cg(s, pattern, callback=lambda *a: iterates.append(a))
    lam = banded.precision.toarray()
    np.testing.assert_allclose(lam, dense.precision, atol=1e-4 * np.abs(dense.precision).max())
    assert banded.objective == pytest.approx(dense.objective, abs=1e-7)
    # Optimality checked independently of the solver: Sigma = Lambda^-1 equals S on the pattern.
    i = np.concatenate([np.arange(pattern.dim), pattern.rows])
    j = np.concatenate([np.arange(pattern.dim), pattern.cols])
    np.testing.assert_allclose(np.linalg.inv(lam)[i, j], s[i, j], atol=1e-6)
    np.testing.assert_allclose(banded.covariance, np.linalg.inv(lam), atol=1e-8)
    assert banded.max_abs_residual < 1e-6 and lam[0, pattern.dim - 1] == 0.0
    objectives = [a[1] for a in iterates]
    assert all(b >= a for a, b in zip(objectives, objectives[1:]))  # ascent at every Newton step
    # The banded log det used by the solver is the dense one.
    assert banded.objective == pytest.approx(np.linalg.slogdet(lam)[1] - np.sum(s * lam), abs=1e-8)


def test_newton_cg_refuses_a_wrong_shape_and_a_zero_variance():
    pattern = grid.grid_pattern(3, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        fit_grid_mle_newton_cg(np.eye(8), pattern)
    s = np.eye(9)
    s[4, 4] = 0.0
    with pytest.raises(ValueError, match="positive diagonal"):
        fit_grid_mle_newton_cg(s, pattern)
