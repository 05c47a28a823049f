"""cNCE's constrained optimum on fixed pairs (`energy_models.gaussian.cnce_optimum`)."""

import numpy as np
import pytest

from energy_models.gaussian.cnce_optimum import cnce_constrained_optimum, cnce_features, cnce_objective
from energy_models.gaussian.model import GridGaussian
from energy_models.linalg import grid


def _pairs(n=20_000, epsilon=0.3, seed=0):
    """Data from a 4x4 grid Gaussian with Lambda_ii = 1.5, Lambda_ij = 0.3, and y = x + epsilon u."""
    pattern = grid.grid_pattern(4, 4, 4)
    lam = pattern.dense(np.full((4, 4), 1.5), pattern.edges_to_couplings(np.full(pattern.num_edges, 0.3)))
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(16), np.linalg.inv(lam), size=n)
    return pattern, lam, x, x + epsilon * rng.standard_normal(x.shape)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_features_give_the_log_ratio_of_the_grid_gaussian(neighbourhood):
    rng = np.random.default_rng(1)
    model = GridGaussian(5, 6, neighbourhood)
    pattern = model.pattern
    diag = rng.uniform(1.0, 2.0, (5, 6))
    edges = rng.uniform(-0.3, 0.3, pattern.num_edges)
    model.precision_layer.set_precision(diag, pattern.edges_to_couplings(edges))
    x, y = rng.standard_normal((2, 7, 30))
    expected = (np.asarray(model.unnormalized_log_prob(x.astype(np.float32)))
                - np.asarray(model.unnormalized_log_prob(y.astype(np.float32))))
    g = cnce_features(x, y, pattern) @ np.concatenate([diag.reshape(-1), edges]).astype(np.float32)
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-4)


def test_objective_gradient_matches_finite_differences():
    pattern, _, x, y = _pairs(n=2000)
    f = cnce_features(x, y, pattern)
    theta = np.concatenate([np.full(16, 1.2), np.full(pattern.num_edges, 0.1)])
    value, grad = cnce_objective(f, theta)
    assert value == pytest.approx(2 * np.mean(np.logaddexp(0, -(f.astype(np.float64) @ theta))), rel=1e-6)
    for i in (0, 7, 16, 30):
        step = np.zeros_like(theta)
        step[i] = 1e-3
        numeric = (cnce_objective(f, theta + step)[0] - cnce_objective(f, theta - step)[0]) / 2e-3
        assert grad[i] == pytest.approx(numeric, rel=2e-3, abs=1e-6)


def test_optimum_recovers_a_well_specified_grid_gaussian():
    """cNCE is consistent: 100,000 pairs recover Lambda to 0.1 per entry. Measured at 20,000 pairs: the
    largest of 40 errors was 0.15 (cNCE's variance is several times the MLE's); 100,000 pairs divide
    the standard error by 2.2, so 0.1 is about four of them."""
    pattern, lam, x, y = _pairs(n=100_000)
    opt = cnce_constrained_optimum(cnce_features(x, y, pattern), pattern, floor=1e-3)
    np.testing.assert_allclose(opt.diag, 1.5, atol=0.1)
    np.testing.assert_allclose(opt.edges, 0.3, atol=0.1)
    assert opt.smallest_eigenvalue > 0.1  # The constraint is inactive: the unconstrained optimum.


def test_an_active_floor_is_met_and_the_objective_is_optimal_on_the_boundary():
    """With the floor above the unconstrained optimum's lambda_min the optimum lies on the boundary: its
    lambda_min is the floor, and no feasible point along random directions has a lower J."""
    pattern, lam, x, y = _pairs(n=5000)
    f = cnce_features(x, y, pattern)
    free = cnce_constrained_optimum(f, pattern, floor=1e-3)
    floor = free.smallest_eigenvalue + 0.3
    opt = cnce_constrained_optimum(f, pattern, floor=floor)
    assert opt.smallest_eigenvalue == pytest.approx(floor, abs=1e-3)
    assert opt.objective > free.objective
    theta = np.concatenate([opt.diag, opt.edges])
    rng = np.random.default_rng(0)
    for _ in range(20):
        trial = theta + 0.02 * rng.standard_normal(theta.shape)
        if np.linalg.eigvalsh(pattern.dense(trial[:16].reshape(4, 4),
                                            pattern.edges_to_couplings(trial[16:])))[0] >= floor:
            assert cnce_objective(f, trial)[0] >= opt.objective - 1e-9
