"""Tests for LinearWhitening: identity covariance, log|det W| against scipy, inverse, .keras round trip."""

import keras
import numpy as np
import pytest
from scipy import stats

from energy_models.errors import NotPositiveDefiniteError, UserError
from energy_models.whitening import LinearWhitening, mean_and_covariance

D = 8


def correlated_gaussian(n, seed=0):
    """n samples (drawn with `seed`) of one fixed N(mu, Sigma), Sigma badly conditioned; (x, mu, Sigma)."""
    model = np.random.default_rng(42)
    factor = model.normal(size=(D, D)) * np.logspace(0, -2, D)
    mu = model.uniform(0.2, 0.8, size=D)
    sigma = factor @ factor.T
    return np.random.default_rng(seed).multivariate_normal(mu, sigma, size=n), mu, sigma


def random_precision(seed=1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D))
    return a @ a.T + 0.1 * np.eye(D)


def numpy_of(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def test_chunked_covariance_matches_numpy():
    x, _, _ = correlated_gaussian(1000)
    mean, sigma = mean_and_covariance(x.astype(np.float32), chunk_size=77)
    np.testing.assert_allclose(mean, x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32).T, bias=True), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("constructor", [LinearWhitening.zca, LinearWhitening.pca])
def test_whitened_data_has_identity_covariance(constructor):
    n = 20_000
    x, _, _ = correlated_gaussian(n, seed=0)
    layer = constructor(x, epsilon=1e-12, dtype="float64")
    # On the fitting data W Sigma W^T = diag(lambda / (lambda + eps)) = I up to eps / lambda_min.
    _, sigma = mean_and_covariance(x)
    w = keras.ops.convert_to_numpy(layer.matrix)
    np.testing.assert_allclose(w @ sigma @ w.T, np.eye(D), atol=1e-6)
    # On fresh data the covariance of z is I within sampling error: entries of a sample covariance of
    # n unit-variance values have standard deviation <= sqrt(2 / n), from both the fit and the test set.
    fresh, _, _ = correlated_gaussian(n, seed=1)
    z = numpy_of(layer, fresh)
    tolerance = 5 * np.sqrt(2 / n + 2 / n)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(D), atol=tolerance)
    assert np.abs(z.mean(0)).max() <= 5 * np.sqrt(2 / n)


def test_pca_rows_sorted_by_decreasing_eigenvalue():
    x, _, sigma = correlated_gaussian(5000)
    w = keras.ops.convert_to_numpy(LinearWhitening.pca(x, epsilon=1e-9, dtype="float64").matrix)
    # Row i is u_i^T / sqrt(lambda_i): orthogonal rows of norm 1/sqrt(lambda_i), increasing with i.
    row_norms = np.linalg.norm(w, axis=1)
    assert np.all(np.diff(row_norms) > 0)
    np.testing.assert_allclose(w @ w.T, np.diag(row_norms ** 2), atol=1e-8 * row_norms.max() ** 2)


def test_zca_is_symmetric_and_closest_to_the_input():
    x, mu, _ = correlated_gaussian(5000)
    zca = LinearWhitening.zca(x, epsilon=1e-9, dtype="float64")
    w = keras.ops.convert_to_numpy(zca.matrix)
    np.testing.assert_array_equal(w, w.T)
    assert np.all(np.linalg.eigvalsh(w) > 0)
    # Among whitening matrices ZCA minimises E||z - (x - mu)||^2 (Kessy et al. 2018): it beats PCA and
    # a random rotation of itself.
    centred = x - x.mean(0)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(D, D)))
    distance = {name: np.mean(np.sum((z - centred) ** 2, axis=1)) for name, z in [
        ("zca", numpy_of(zca, x)),
        ("pca", numpy_of(LinearWhitening.pca(x, epsilon=1e-9, dtype="float64"), x)),
        ("rotated", centred @ (rotation @ w).T)]}
    assert distance["zca"] < distance["pca"] and distance["zca"] < distance["rotated"]


def test_gaussian_whitening_from_precision_cholesky():
    precision = random_precision()
    cholesky = np.linalg.cholesky(precision)
    mu = np.linspace(-1, 1, D)
    layer = LinearWhitening.from_precision_cholesky(mu, cholesky, dtype="float64")
    w = keras.ops.convert_to_numpy(layer.matrix)
    np.testing.assert_allclose(w @ np.linalg.inv(precision) @ w.T, np.eye(D), atol=1e-6)
    np.testing.assert_allclose(layer.log_abs_det, 0.5 * np.linalg.slogdet(precision)[1], rtol=1e-12)


@pytest.mark.parametrize("kind", ["zca", "pca", "gaussian"])
def test_change_of_variables_matches_scipy_density(kind):
    x, mu, _ = correlated_gaussian(3000)
    if kind == "gaussian":
        layer = LinearWhitening.from_precision_cholesky(mu, np.linalg.cholesky(random_precision()),
                                                        dtype="float64")
    else:
        layer = getattr(LinearWhitening, kind)(x, epsilon=1e-4, dtype="float64")
    w = keras.ops.convert_to_numpy(layer.matrix)
    mean = keras.ops.convert_to_numpy(layer.mean)
    w_inv = np.linalg.inv(w)
    points = x[:50]
    # log p_x(x) = log N(W (x - mu); 0, I) + log|det W| must equal the density of N(mu, W^-1 W^-T).
    whitened = stats.multivariate_normal(np.zeros(D), np.eye(D)).logpdf(numpy_of(layer, points))
    expected = stats.multivariate_normal(mean, w_inv @ w_inv.T).logpdf(points)
    np.testing.assert_allclose(whitened + layer.log_abs_det, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["zca", "pca", "gaussian"])
def test_inverse_maps_back_to_pixels(kind):
    x, mu, _ = correlated_gaussian(2000)
    if kind == "gaussian":
        layer = LinearWhitening.from_precision_cholesky(mu, np.linalg.cholesky(random_precision()))
    else:
        layer = getattr(LinearWhitening, kind)(x, epsilon=1e-4)
    points = x[:100].astype(np.float32)
    back = keras.ops.convert_to_numpy(layer.inverse(layer(points)))
    np.testing.assert_allclose(back, points, atol=1e-4)


def test_keras_file_round_trip(tmp_path):
    x, _, _ = correlated_gaussian(2000)
    layer = LinearWhitening.zca(x, epsilon=1e-3, name="whiten")
    model = keras.Sequential([keras.Input((D,)), layer])
    path = tmp_path / "whitening.keras"
    model.save(path)
    restored = keras.saving.load_model(path).get_layer("whiten")
    assert isinstance(restored, LinearWhitening) and restored.get_config() == layer.get_config()
    points = x[:20].astype(np.float32)
    np.testing.assert_array_equal(numpy_of(restored, points), numpy_of(layer, points))
    assert restored.log_abs_det == layer.log_abs_det
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.inverse(points)),
                                  keras.ops.convert_to_numpy(layer.inverse(points)))


@pytest.mark.parametrize("epsilon", [0, -1e-3, float("nan"), float("inf"), "1e-3", None])
def test_epsilon_must_be_positive(epsilon):
    x, _, _ = correlated_gaussian(100)
    with pytest.raises(UserError, match=r"whitening epsilon must be a positive "
                                        r"number, got .*; pass e.g. 1e-3"):
        LinearWhitening.zca(x, epsilon=epsilon)


def test_argument_errors_name_the_problem():
    layer = LinearWhitening(D)
    with pytest.raises(ValueError, match=f"X has 5 features, but the whitening expects {D}"):
        layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        LinearWhitening(0)
    with pytest.raises(ValueError, match="cholesky must be lower triangular"):
        LinearWhitening.from_precision_cholesky(np.zeros(D), random_precision())
    singular = np.linalg.cholesky(random_precision())
    singular[3, 3] = 0.0
    with pytest.raises(NotPositiveDefiniteError, match="zero on its diagonal"):
        LinearWhitening.from_precision_cholesky(np.zeros(D), singular)
    with pytest.raises(ValueError, match="matrix is singular"):
        LinearWhitening.from_arrays(np.zeros(2), np.ones((2, 2)))


def test_identity_layer_before_fitting():
    layer = LinearWhitening(3)
    points = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(numpy_of(layer, points), points)
    assert layer.log_abs_det == 0.0
