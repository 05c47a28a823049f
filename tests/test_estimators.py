"""Tests for NCE, cNCE and score matching: losses against NumPy, finiteness, the PD guard, the flags, and
each estimator against the exact MLE on samples from a known (well-specified) 6x6 grid Gaussian."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from energy_models.errors import UserError
from energy_models.experiments.gaussian_config import GaussianConfig
from energy_models.gaussian import pd_guard
from energy_models.gaussian.cnce import CNCEGaussian, choose_epsilon
from energy_models.gaussian.mle import fit_grid_mle
from energy_models.gaussian.model import GridGaussian
from energy_models.gaussian.nce import NCEGaussian
from energy_models.gaussian.score_matching import ScoreMatchingGaussian
from energy_models.gaussian.sm_optimum import score_matching_optimum
from energy_models.objectives import nce_loss
from energy_models.training.optimizers import make_optimizer

H = W = 6
N = 20_000


def true_model():
    """A PD 6x6 grid Gaussian with 4 neighbours, couplings of both signs, mean 0.5."""
    rng = np.random.default_rng(0)
    model = GridGaussian(H, W, 4)
    couplings = rng.uniform(-0.6, 0.3, size=(2, H, W))
    model.precision_layer.set_precision(rng.uniform(2.0, 3.0, size=(H, W)), couplings)
    model.set_mean(np.full(H * W, 0.5))
    assert model.smallest_eigenvalue() > 0.3
    return model


@pytest.fixture(scope="module")
def well_specified():
    """(samples [N, 36], their mean, exact grid MLE of them)."""
    x = true_model().sample(N, seed=1).astype(np.float32)
    mean = x.mean(0)
    s = np.cov(x.T, bias=True)
    mle = fit_grid_mle(s, true_model().pattern).precision
    return x, mean, s, mle


def train(estimator, x, mean, epochs, lr=0.05, batch=500, start_c=False):
    estimator.set_mean(mean)
    estimator.set_scales(x.var(0))  # The moment-matched start: Lambda~ = I, Lambda = diag(1 / var).
    estimator.precision_layer.diagonal.assign(np.ones((H, W), np.float32))
    if start_c:
        estimator.set_c(-estimator.log_normalizer())
    steps = epochs * (len(x) // batch)
    estimator.compile(optimizer=make_optimizer("adam", lr, steps))
    guard = pd_guard.PositiveDefiniteGuard(floor=1e-2, every=10)
    estimator.fit(x, batch_size=batch, epochs=epochs, verbose=0, shuffle=True, callbacks=[guard])
    return estimator


def relative_distance(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# With N = 20,000 samples the MLE itself is about 4% (relative Frobenius) from the true Lambda; NCE, cNCE
# and SM are consistent too but less efficient, and stochastic optimisation stops short of their exact
# optimum, so 10% from the MLE is "the same estimate up to sampling and optimisation noise" while a
# wrong loss (sign, factor 2, missing Laplacian) lands far outside it.
TOLERANCE = 0.10


def test_mle_reference_is_close_to_truth(well_specified):
    x, mean, s, mle = well_specified
    assert relative_distance(mle, true_model().precision_dense()) < 0.06


def test_score_matching_reaches_mle(well_specified):
    x, mean, s, mle = well_specified
    model = train(ScoreMatchingGaussian(H, W, 4), x, mean, epochs=15)
    assert relative_distance(model.precision_dense(), mle) < TOLERANCE


def test_cnce_reaches_mle(well_specified):
    x, mean, s, mle = well_specified
    model = CNCEGaussian(H, W, 4, kappa=2, seed=0)
    model.set_mean(mean)
    model.set_scales(x.var(0))
    model.epsilon.assign(choose_epsilon(model, x[:1000]))
    model = train(model, x, mean, epochs=15)
    assert relative_distance(model.precision_dense(), mle) < TOLERANCE


def test_nce_reaches_mle_and_log_z(well_specified):
    x, mean, s, mle = well_specified
    model = NCEGaussian(H, W, 4, nu=5.0, noise="full", seed=0)
    model.set_noise(s)
    model = train(model, x, mean, epochs=15, start_c=True)
    assert relative_distance(model.precision_dense(), mle) < TOLERANCE
    # log Z of a 36-d model: the estimate -c should match D/2 log 2 pi - 1/2 log det Lambda to ~0.1 nat.
    assert abs(model.log_z_estimate() - model.log_normalizer()) < 0.15


def test_score_matching_closed_form_is_the_stationary_point(well_specified):
    x, mean, s, mle = well_specified
    pattern = true_model().pattern
    lam = score_matching_optimum(s, pattern)
    # Gradient of J = tr(Lambda S Lambda) / 2 - tr(Lambda) over all symmetric matrices, read on the
    # pattern (edges count twice): zero at the constrained stationary point.
    grad = 0.5 * (s @ lam + lam @ s) - np.eye(len(s))
    diag, couplings = pattern.from_dense(grad)
    assert np.max(np.abs(diag)) < 1e-8 and np.max(np.abs(couplings)) < 1e-8
    # Well specified: SM and ML are both consistent, so they agree up to sampling noise.
    assert relative_distance(lam, mle) < 0.05


def test_score_matching_trainer_reaches_closed_form(well_specified):
    x, mean, s, mle = well_specified
    model = train(ScoreMatchingGaussian(H, W, 4), x, mean, epochs=8)
    assert relative_distance(model.precision_dense(), score_matching_optimum(s, true_model().pattern)) < 0.03


def tiny_lambda():
    model = GridGaussian(2, 2, 4)
    model.precision_layer.set_precision([[2.0, 3.0], [1.5, 2.5]], [[[-0.5, 0], [0.4, 0]],
                                                                 [[0.3, -0.2], [0, 0]]])
    return model


def test_nce_loss_against_numpy():
    lp_x, ln_x = np.array([-1.0, -3.0]), np.array([-2.0, -0.5])
    lp_y, ln_y = np.array([-4.0, -1.0, 0.5]), np.array([-1.0, -1.5, -2.0])
    c, nu = 0.7, 3.0
    g_x, g_y = lp_x + c - ln_x - np.log(nu), lp_y + c - ln_y - np.log(nu)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    expected = -np.mean(np.log(sig(g_x))) - nu * np.mean(np.log(1 - sig(g_y)))
    accuracy = (np.mean(g_x > 0) + nu * np.mean(g_y < 0)) / (1 + nu)
    loss, _, _, acc = nce_loss(*(tf.constant(a, tf.float32) for a in (lp_x, ln_x, lp_y, ln_y)), c, nu)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(acc), accuracy, rtol=1e-6)


def test_nce_noise_log_prob_matches_scipy():
    model = NCEGaussian(2, 2, 4, noise="full")
    s = np.array([[2, .5, .1, 0], [.5, 1, .2, .1], [.1, .2, 1.5, .3], [0, .1, .3, 1]])
    model.set_noise(s)
    x = np.array([[0.1, -0.3, 0.5, 1.0]], np.float32)
    reference = stats.multivariate_normal(np.zeros(4), s)
    np.testing.assert_allclose(model.noise_distribution().log_prob(x).numpy(), reference.logpdf(x),
                               rtol=1e-5)
    # The training path: a triangular solve for data, ||eps||^2 for the draws (no solve).
    np.testing.assert_allclose(model.noise_log_prob(x).numpy(), reference.logpdf(x), rtol=1e-5)
    y, log_pn_y = model.noise_sample(3)
    np.testing.assert_allclose(log_pn_y.numpy(), reference.logpdf(y.numpy()), rtol=1e-4)


def test_cnce_loss_against_numpy():
    model = tiny_lambda()
    cnce = CNCEGaussian(2, 2, 4, kappa=2, epsilon=0.3)
    cnce.precision_layer.set_dense(model.precision_dense())
    x = np.array([[0.1, -0.2, 0.3, 0.4], [1.0, 0.0, -0.5, 0.2]], np.float32)
    u = np.random.default_rng(0).normal(size=(2, 2, 4)).astype(np.float32)
    lam = model.precision_dense()
    log_phi = lambda v: -0.5 * np.einsum("...i,ij,...j->...", v, lam, v)  # noqa: E731
    g = log_phi(x)[None] - log_phi(x[None] + 0.3 * u)
    expected = 2 / 2 * np.sum(np.mean(np.log1p(np.exp(-g)), axis=1))
    np.testing.assert_allclose(float(cnce.loss_terms(x, u)["loss"]), expected, rtol=1e-5)


def test_score_matching_loss_against_numpy():
    model = ScoreMatchingGaussian(2, 2, 4)
    model.precision_layer.set_dense(tiny_lambda().precision_dense())
    mean = np.array([0.1, 0.2, 0.3, 0.4])
    model.set_mean(mean)
    x = np.array([[0.1, -0.2, 0.3, 0.4], [1.0, 0.0, -0.5, 0.2]], np.float32)
    lam = model.precision_dense()
    score = -(x - mean) @ lam
    expected = np.mean(0.5 * np.sum(score ** 2, axis=1)) - np.trace(lam)
    np.testing.assert_allclose(float(model.loss_terms(x)["loss"]), expected, rtol=1e-5)


def test_losses_finite_when_densities_underflow():
    x = np.full((3, 4), 1e4, np.float32)  # phi(x) and p_n(x) are exp(-1e8 or so): 0 in any float.
    model = NCEGaussian(2, 2, 4, nu=100.0, noise="diagonal")
    model.set_noise(np.eye(4) * 0.01)
    terms = model.loss_terms(x)
    assert np.isfinite(float(terms["loss"]))
    # Data far out under the noise and the model alike: also when the noise draws are far out.
    lp = model.unnormalized_log_prob(x)
    # Noise draws where the model is far above the noise (G = -lp ~ 2e8): softplus(G) = G, no overflow.
    loss = nce_loss(lp, model.noise_log_prob(x), lp * 2, lp * 3, 0.0, 100.0)[0]
    assert np.isfinite(float(loss)) and float(loss) > 0
    cnce = CNCEGaussian(2, 2, 4, epsilon=1e3)
    assert np.isfinite(float(cnce.loss_terms(x)["loss"]))


def test_ensure_positive_definite_shifts_an_indefinite_precision():
    model = GridGaussian(2, 2, 4)
    model.precision_layer.set_precision(np.ones((2, 2)), np.full((2, 2, 2), 2.0))
    couplings = np.asarray(model.precision_layer.couplings)
    assert model.smallest_eigenvalue() < 0
    assert pd_guard.ensure_positive_definite(model, 0.05) > 0
    assert 0.05 <= model.smallest_eigenvalue() < 0.06
    np.testing.assert_array_equal(np.asarray(model.precision_layer.couplings), couplings)


def test_pd_guard_backtracks_the_step_and_keeps_the_learning_rate():
    model = ScoreMatchingGaussian(2, 2, 4)
    model.precision_layer.set_dense(tiny_lambda().precision_dense())
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    good = model.precision_dense()
    guard = pd_guard.PositiveDefiniteGuard(floor=0.05, every=1, mode="backtrack")
    guard.set_model(model)
    guard.on_train_begin()
    bad_couplings = np.full((2, 2, 2), 5.0, np.float32)
    model.precision_layer.couplings.assign(bad_couplings)  # A step far out of the cone.
    bad = model.precision_dense()
    assert model.smallest_eigenvalue() < 0
    guard.on_train_batch_end(0)
    assert guard.failures == 1 and guard.halvings >= 1
    # The iterate lies on the segment good -> bad at t = 2^-k, just inside the cone (t doubled is not).
    t = 0.5 ** guard.halvings
    np.testing.assert_allclose(model.precision_dense(), good + t * (bad - good), rtol=1e-5, atol=1e-6)
    assert model.smallest_eigenvalue() >= 0.05
    assert np.linalg.eigvalsh(good + 2 * t * (bad - good))[0] < 0.05
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.1)  # Untouched.
    guard.on_train_batch_end(1)  # PD now: left alone.
    assert guard.failures == 1


def test_pd_guard_projects_a_bad_step_onto_the_boundary():
    model = ScoreMatchingGaussian(4, 4, 4)
    model.compile(optimizer=keras.optimizers.SGD(0.1))  # SGD: the projection metric is Euclidean.
    guard = pd_guard.PositiveDefiniteGuard(floor=0.05, every=1)
    guard.set_model(model)
    guard.on_train_begin()  # Lambda~ = I: feasible.
    model.precision_layer.couplings.assign(np.full((2, 4, 4), -0.4, np.float32))  # lambda_min < 0.
    assert model.smallest_eigenvalue() < 0
    guard.on_train_batch_end(0)
    assert guard.failures == 1 and guard.projections >= 1 and guard.halvings == 0
    # On the boundary, not pulled back to the start: lambda_min between floor and floor (1 + margin).
    assert 0.05 <= model.smallest_eigenvalue() <= 0.05 * 1.06
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.1)


def test_pd_guard_tests_the_standardised_precision():
    model = ScoreMatchingGaussian(2, 2, 4)
    model.set_scales([100.0, 100.0, 100.0, 100.0])  # Lambda = Lambda~ / 100: lambda_min 0.01 * that.
    model.precision_layer.set_dense(tiny_lambda().precision_dense())
    smallest = np.linalg.eigvalsh(tiny_lambda().precision_dense())[0]
    assert pd_guard.is_positive_definite(model, 0.9 * smallest)
    assert not pd_guard.is_positive_definite(model, 1.1 * smallest)
    np.testing.assert_allclose(model.smallest_eigenvalue(), smallest / 100, rtol=1e-5)


def test_pd_guard_leaves_a_pd_precision_alone():
    model = tiny_lambda()
    before = model.precision_dense()
    assert pd_guard.ensure_positive_definite(model, 0.01) == 0.0
    np.testing.assert_array_equal(model.precision_dense(), before)


@pytest.mark.parametrize("field, value, message", [
    ("nu", 0.0, "--nu must be > 0, got 0.0"),
    ("nu", -1.0, "--nu must be > 0, got -1.0"),
    ("epsilon", 0.0, "--epsilon must be > 0, got 0.0"),
    ("kappa", 0, "--kappa must be an integer >= 1, got 0"),
    ("pd_floor", 0.0, "--pd-floor must be > 0, got 0.0"),
    ("noise_samples", 0, "--noise-samples must be a positive integer, got 0"),
])
def test_bad_flags_raise_user_error(field, value, message):
    with pytest.raises(UserError, match=message):
        GaussianConfig(estimator="nce", **{field: value}).resolve()


def test_balanced_c_makes_the_nce_loss_stationary_in_c(well_specified):
    """At balanced_c, dJ/dc = 0 on the same rows and noise draws (checked by autodiff)."""
    import tensorflow as tf

    from energy_models.gaussian.nce import balanced_c
    from energy_models.objectives import nce_loss

    x, mean, s, _ = well_specified
    model = NCEGaussian(H, W, 4, nu=3.0, noise="diagonal", seed=1)
    model.set_mean(mean)
    model.set_scales(x.var(0))
    model.set_noise(s)
    rows = x[:2000]
    c_star = balanced_c(model, rows, num_noise=2000)
    # Re-draw the same noise: a fresh generator with the same seed gives the same draws.
    twin = NCEGaussian(H, W, 4, nu=3.0, noise="diagonal", seed=1)
    twin.set_mean(mean)
    twin.set_scales(x.var(0))
    twin.set_noise(s)
    y, log_pn_y = twin.noise_sample(2000)
    c = tf.Variable(c_star, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = nce_loss(model.unnormalized_log_prob(rows), model.noise_log_prob(rows),
                        model.unnormalized_log_prob(y), log_pn_y, c, 3.0)[0]
    assert abs(float(tape.gradient(loss, c))) < 1e-3


def test_noise_model_gives_the_saved_gaussians_covariance_and_bad_models_one_line(tmp_path):
    """--noise-model: NCE's full noise takes Lambda^-1 of a Gaussian SavedModel; other folders are refused."""
    from energy_models import savedmodel
    from energy_models.data.arrays import ArrayData
    from energy_models.gaussian import export
    from energy_models.gaussian.model import GridGaussian
    from energy_models.gaussian.nce import noise_covariance

    model = GridGaussian(28, 28, 4)
    diag = np.linspace(20.0, 40.0, 784).reshape(28, 28).astype(np.float32)
    couplings = np.full((2, 28, 28), -3.0, np.float32)
    model.precision_layer.set_precision(diag, couplings)
    savedmodel.save_atomically(export.gaussian_module(model, {}), tmp_path / "gaussian")
    data = ArrayData(np.random.default_rng(0).random((50, 784)).astype(np.float32),
                     np.zeros((5, 784), np.float32))
    config = GaussianConfig(estimator="nce", noise="full", noise_model=str(tmp_path / "gaussian")).resolve()
    covariance = noise_covariance(config, data)
    np.testing.assert_allclose(covariance @ model.precision_dense(), np.eye(784), atol=2e-4)
    np.testing.assert_array_equal(noise_covariance(GaussianConfig(estimator="nce", noise="full").resolve(), data),
                                  data.covariance())
    with pytest.raises(UserError, match="cannot load a SavedModel from"):
        noise_covariance(GaussianConfig(estimator="nce", noise="full", noise_model=str(tmp_path / "nowhere")),
                         data)
    with pytest.raises(UserError, match="--noise-model applies to --estimator nce with --noise full"):
        GaussianConfig(estimator="cnce", noise_model=str(tmp_path / "gaussian")).resolve()
