"""NCE's exact optimum on fixed samples (`energy_models.gaussian.nce_optimum`)."""

import numpy as np
import pytest

from energy_models.gaussian.nce_optimum import _objective, _pair_products, nce_optimum
from energy_models.linalg import grid


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_pair_products_follow_the_pattern_edge_order(neighbourhood):
    pattern = grid.grid_pattern(5, 6, neighbourhood)
    v = np.random.default_rng(0).standard_normal((3, 30)).astype(np.float32)
    np.testing.assert_array_equal(_pair_products(v, pattern), v[:, pattern.rows] * v[:, pattern.cols])


def _known_model(n=20_000, m=100_000, nu=5.0, seed=0):
    """Data from a 4x4 grid Gaussian with Lambda_ii = 1.5, Lambda_ij = 0.3; noise N(0, I)."""
    pattern = grid.grid_pattern(4, 4, 4)
    lam = pattern.dense(np.full((4, 4), 1.5), pattern.edges_to_couplings(np.full(pattern.num_edges, 0.3)))
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(16), np.linalg.inv(lam), size=n).astype(np.float32)
    y = rng.standard_normal((m, 16)).astype(np.float32)
    log_pn = lambda u: -0.5 * np.sum(u.astype(np.float64) ** 2, axis=1) - 8 * np.log(2 * np.pi)  # noqa: E731
    return pattern, lam, x, log_pn(x), y, log_pn(y), nu


def test_objective_gradient_matches_finite_differences():
    pattern, _, x, lx, y, ly, nu = _known_model(n=2000, m=4000)
    f = _objective([(x, 1.0, 1 / len(x), -lx - np.log(nu)), (y, -1.0, nu / len(y), -ly - np.log(nu))],
                   pattern, chunk=512)
    theta = np.concatenate([np.full(16, 1.2), np.full(pattern.num_edges, 0.1), [-10.0]])
    _, grad = f(theta)
    for i in (0, 7, 16, 30, len(theta) - 1):
        step = np.zeros_like(theta)
        step[i] = 1e-4
        numeric = (f(theta + step)[0] - f(theta - step)[0]) / 2e-4
        assert grad[i] == pytest.approx(numeric, rel=2e-3, abs=1e-5)


def test_optimum_recovers_a_well_specified_grid_gaussian_and_its_log_z():
    """20,000 data points: the standard error of each precision entry is ~0.01-0.02, so 0.06 is about
    four of them; log Z to 0.05 nats (its standard error here is ~0.01)."""
    pattern, lam, x, lx, y, ly, nu = _known_model()
    opt = nce_optimum(x, lx, y, ly, pattern, nu, c_start=0.0)
    assert opt.gradient_norm < 1e-4
    np.testing.assert_allclose(opt.diag, 1.5, atol=0.06)
    np.testing.assert_allclose(opt.edges, 0.3, atol=0.06)
    log_z = 8 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(lam)[1]
    assert -opt.c == pytest.approx(log_z, abs=0.05)
