"""`energy_models.gaussian.fitted.FittedGaussian`: the grid fit is the constrained MLE; log_prob is SciPy's."""


import numpy as np
import pytest

from energy_models.errors import UserError


def test_fitted_gaussian_is_the_constrained_grid_mle():
    """train.dem's fitted Gaussian: grid-patterned precision whose covariance equals the sample covariance
    (plus the ridge) on the pattern, and a log_prob equal to scipy's multivariate normal."""
    from scipy.stats import multivariate_normal

    from energy_models.gaussian.fitted import GAUSSIAN_RIDGE, FittedGaussian
    from energy_models.linalg import grid

    rng = np.random.default_rng(3)
    # Smooth-ish correlated rows: a running sum along each row makes neighbouring pixels covary.
    x = np.cumsum(rng.normal(size=(4000, 784)), axis=1) * 0.05 + rng.normal(size=(4000, 784))
    g = FittedGaussian.grid(x)
    pattern = grid.grid_pattern(28, 28, 4)
    on_pattern = np.eye(784, dtype=bool)
    on_pattern[pattern.rows, pattern.cols] = on_pattern[pattern.cols, pattern.rows] = True
    precision = g.precision
    assert np.abs(precision[~on_pattern]).max() < 1e-6 * np.abs(precision).max()
    sample_cov = np.cov(x.T, bias=True) + GAUSSIAN_RIDGE * np.eye(784)
    np.testing.assert_allclose(g.covariance[on_pattern], sample_cov[on_pattern], rtol=1e-5, atol=1e-6)
    assert np.abs(g.covariance - sample_cov)[~on_pattern].max() > 1e-3  # A constrained fit, not the full one.
    small = FittedGaussian.grid(x[:, :100])  # 10 x 10 patches: the grid follows the patch size.
    assert small.covariance.shape == (100, 100)
    with pytest.raises(UserError, match="99 pixels, not a square number"):
        FittedGaussian.grid(x[:, :99])
    rows = g.sample(5, 1)
    np.testing.assert_allclose(g.log_prob(rows), multivariate_normal(g.mean, g.covariance).logpdf(rows),
                               rtol=1e-8)
