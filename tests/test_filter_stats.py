"""filter_stats against closed forms: localisation of random and of local rows, excess kurtosis of
Gaussian, Laplace and mixed responses, and the summary's ratio."""

import numpy as np
import pytest

from energy_models.evaluation import filter_stats


def test_localisation_of_random_rows_is_the_top_decile_share_of_chi_square_one():
    # E[z^2 ; z^2 above its 90th percentile] = 2 (q phi(q) + 0.05), q = 1.6449: 0.4390 of E[z^2] = 1.
    q = 1.6448536269514722
    expected = 2 * (q * np.exp(-q * q / 2) / np.sqrt(2 * np.pi) + 0.05)
    rows = np.random.default_rng(0).standard_normal((400, 784))
    assert np.median(filter_stats.localisation(rows)) == pytest.approx(expected, abs=0.01)


def test_localisation_of_local_rows():
    rows = np.zeros((3, 784))
    rows[0, 5] = -2.0                # One pixel: all its weight in the top 79.
    rows[1, :79] = 1.0               # Exactly 79 equal pixels.
    rows[2, :158] = 1.0              # 158 equal pixels: half in the top 79.
    np.testing.assert_allclose(filter_stats.localisation(rows), [1.0, 1.0, 0.5])
    assert filter_stats.localisation(np.zeros((1, 10)))[0] == 0.0  # No weight: 0, not NaN.


def test_response_kurtosis_of_gaussian_laplace_and_scale_mixture():
    rng = np.random.default_rng(1)
    n = 400_000
    u = np.stack([rng.standard_normal(n), rng.laplace(size=n),
                  rng.standard_normal(n) * np.where(rng.random(n) < 0.5, 1.0, 3.0)], axis=1)
    kurtosis = filter_stats.response_kurtosis(np.eye(3), u)
    # Excess kurtosis: Gaussian 0, Laplace 3, equal mixture of N(0,1) and N(0,9): 3 E[s^4]/E[s^2]^2 - 3 = 1.92.
    np.testing.assert_allclose(kurtosis, [0.0, 3.0, 3 * 41 / 25 - 3], atol=0.1)
    # A row mixing the coordinates responds to their sum: kurtosis of the sum, not of any one.
    mixed = filter_stats.response_kurtosis(np.ones((1, 3)), u)[0]
    var = np.array([1.0, 2.0, 5.0])  # E[S^4] = sum E[x_i^4] + 6 sum_{i<j} var_i var_j for the sum S.
    fourth = np.array([3.0, 24.0, 0.5 * 3 + 0.5 * 3 * 81])  # E[x^4]: N(0,1), Laplace(1), the mixture.
    expected = (fourth.sum() + 6 * (var[0] * var[1] + var[0] * var[2] + var[1] * var[2])) / var.sum() ** 2 - 3
    assert mixed == pytest.approx(expected, abs=0.05)


def test_summary_reports_the_ratio_to_random_rows():
    rng = np.random.default_rng(2)
    u = rng.laplace(size=(100_000, 20)) / np.sqrt(2)  # Independent unit-variance Laplace coordinates.
    local = np.eye(20)[:8]
    result = filter_stats.summary(local, u, seed=3)
    assert result["filter_localisation"] == 1.0
    assert result["filter_kurtosis"] == pytest.approx(3.0, abs=0.15)
    # A random row sums 20 independent Laplace responses: excess kurtosis 3 sum w^4 / (sum w^2)^2, ~ 3 / 7.
    assert 0.1 < result["random_kurtosis"] < 1.0
    assert result["kurtosis_ratio"] == pytest.approx(result["filter_kurtosis"] / result["random_kurtosis"])
