"""The block-tridiagonal Newton-CG maximum-likelihood solver against dense linear algebra and the dense
Newton solver."""

import numpy as np
import pytest

from energy_models.gaussian import mle_newton_cg
from energy_models.gaussian.mle import fit_grid_mle
from energy_models.gaussian.mle_newton_cg import fit_grid_mle_newton_cg, pattern_covariance
from energy_models.linalg import grid
from tests.test_mle import known_precision


@pytest.mark.parametrize("height, width, neighbourhood, channels", [(7, 6, 4, 1), (5, 8, 8, 1), (4, 3, 4, 3)])
def test_selected_inverse_and_its_derivative_equal_the_dense_ones(height, width, neighbourhood, channels):
    rng = np.random.default_rng(height)
    pattern = grid.grid_pattern(height, width, neighbourhood, channels)
    structure = mle_newton_cg._BlockTridiagonal(pattern)
    d, p = pattern.dim, len(structure.i)
    theta = np.concatenate([rng.uniform(2.0, 3.0, d), rng.uniform(-0.3, 0.3, p - d)])
    lam = structure.sparse(theta).toarray()
    assert np.linalg.eigvalsh(lam)[0] > 0
    factor = mle_newton_cg._Factor(*structure.blocks(theta))
    sigma = np.linalg.inv(lam)
    assert factor.logdet == pytest.approx(np.linalg.slogdet(lam)[1], abs=1e-10)
    np.testing.assert_allclose(structure.gather(factor.sigma_diag, factor.sigma_super),
                               sigma[structure.i, structure.j], atol=1e-13)
    delta = rng.normal(size=p)
    big_delta = structure.sparse(delta).toarray()
    np.testing.assert_allclose(structure.gather(*factor.derivative(*structure.blocks(delta))),
                               -(sigma @ big_delta @ sigma)[structure.i, structure.j], atol=1e-12)


def test_a_precision_that_is_not_positive_definite_is_refused_by_the_factor():
    pattern = grid.grid_pattern(4, 4, 4)
    structure = mle_newton_cg._BlockTridiagonal(pattern)
    theta = np.concatenate([np.ones(16), np.full(len(structure.i) - 16, -0.6)])  # 1 - 0.6 * 4 < 0
    assert np.linalg.eigvalsh(structure.sparse(theta).toarray())[0] < 0
    with pytest.raises(np.linalg.LinAlgError):
        mle_newton_cg._Factor(*structure.blocks(theta))


def test_pattern_covariance_streams_the_pattern_entries_of_the_covariance():
    rng = np.random.default_rng(1)
    pattern = grid.grid_pattern(5, 4, 8, channels=2)
    x = rng.normal(size=(300, pattern.dim)) @ rng.normal(size=(pattern.dim, pattern.dim)) + 3.0
    mean, s_pattern = pattern_covariance(np.array_split(x, 7), pattern)
    structure = mle_newton_cg._BlockTridiagonal(pattern)
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(s_pattern, np.cov(x.T, bias=True)[structure.i, structure.j], atol=1e-10)
    with pytest.raises(ValueError, match=r"\[N, 40\]"):
        pattern_covariance([x[:, :10]], pattern)
    with pytest.raises(ValueError, match="no rows"):
        pattern_covariance([], pattern)


@pytest.mark.parametrize("height, width, neighbourhood, channels", [(12, 16, 4, 1), (10, 9, 8, 1), (5, 4, 4, 3)])
def test_newton_cg_reaches_the_dense_solvers_optimum(height, width, neighbourhood, channels):
    rng = np.random.default_rng(height + neighbourhood)
    pattern = grid.grid_pattern(height, width, neighbourhood, channels)
    if channels == 1:
        lam_true = known_precision(pattern, rng)
    else:  # any positive-definite covariance: the MLE exists whatever the truth
        a = rng.normal(size=(pattern.dim, pattern.dim))
        lam_true = np.linalg.inv(a @ a.T / pattern.dim + np.eye(pattern.dim))
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
    assert banded.covariance is None
    assert banded.max_abs_residual < 1e-6 and lam[0, pattern.dim - 1] == 0.0
    # Only the pattern entries of S are needed.
    structure = mle_newton_cg._BlockTridiagonal(pattern)
    from_entries = fit_grid_mle_newton_cg(s[structure.i, structure.j], pattern)
    np.testing.assert_allclose(from_entries.precision.toarray(), lam, atol=1e-12)
    objectives = [a[1] for a in iterates]
    assert all(b >= a for a, b in zip(objectives, objectives[1:]))  # ascent at every Newton step
    # The banded log det used by the solver is the dense one.
    assert banded.objective == pytest.approx(np.linalg.slogdet(lam)[1] - np.sum(s * lam), abs=1e-8)


def test_newton_cg_refuses_a_wrong_shape_and_a_zero_variance():
    pattern = grid.grid_pattern(3, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        fit_grid_mle_newton_cg(np.eye(8), pattern)
    with pytest.raises(ValueError, match="21 pattern entries"):
        fit_grid_mle_newton_cg(np.ones(20), pattern)
    s = np.eye(9)
    s[4, 4] = 0.0
    with pytest.raises(ValueError, match="positive diagonal"):
        fit_grid_mle_newton_cg(s, pattern)
