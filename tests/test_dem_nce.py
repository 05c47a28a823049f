"""NCE for the deep energy model against a known answer: with V = 0 the model is a Gaussian whose log Z is
analytic, so the learnt c = -log Z and the learnt b can be checked exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem.energy import DEMEnergy, softplus
from energy_models.dem.nce import DEMNoiseContrastive


def analytic_log_z(energy, dim):
    """log Z of -||x||^2/(2 sigma^2) + b^T x + sum_k S(w_k^T g + c_k) with V = 0 (g = s(0) = 1/2)."""
    sigma = energy.sigma
    b, W, c = (np.asarray(w, np.float64) for w in (energy.b, energy.W, energy.c))
    constant = np.sum(softplus(tf.constant(0.5 * W.sum(axis=1) + c)).numpy())
    return 0.5 * dim * np.log(2 * np.pi * sigma ** 2) + 0.5 * sigma ** 2 * b @ b + constant


def test_nce_recovers_b_and_log_z_of_a_gaussian_deep_energy_model():
    dim = 16
    rng = np.random.default_rng(0)
    b_true = rng.normal(scale=0.5, size=dim)
    x = (b_true + rng.normal(size=(20_000, dim))).astype(np.float32)  # N(sigma^2 b, sigma^2 I), sigma = 1.
    # Noise: a Gaussian fitted to the data, then widened, so that the classification is not trivial.
    mean, cov = x.mean(0), 1.5 * np.cov(x.T)
    chol = np.linalg.cholesky(np.linalg.inv(cov))
    keras.utils.set_random_seed(1)
    energy = DEMEnergy(4, 3, 1.0)
    model = DEMNoiseContrastive(energy, mean, chol, nu=2, dim=dim, mcmc="langevin", mcmc_steps=1, seed=3)
    energy.V.assign(np.zeros((4, dim), np.float32))
    energy.V.trainable = False
    model.c.assign(model.initial_c(x[:2000]))
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    model.fit(x, batch_size=500, epochs=12, verbose=0, shuffle=True)
    np.testing.assert_allclose(np.asarray(energy.b), b_true, atol=0.06)
    assert model.log_z == pytest.approx(analytic_log_z(energy, dim), abs=0.1)
    # The noise log-density is the Gaussian's own.
    from scipy.stats import multivariate_normal

    np.testing.assert_allclose(model.noise_log_prob(tf.constant(x[:5])).numpy(),
                               multivariate_normal(mean, cov).logpdf(x[:5]), rtol=1e-5)
    # log_prob is normalised by the learnt log Z: against the model's own Gaussian N(b, I) it is exact up to
    # the error of that log Z (V = 0, so every hidden unit adds the same constant).
    truth = multivariate_normal(np.asarray(energy.b), np.eye(dim)).logpdf(x[:5])
    np.testing.assert_allclose(model.log_prob(x[:5]), truth, atol=0.1)
    np.testing.assert_allclose(model.log_prob(x[:5]), model.unnormalized_log_prob(x[:5]) - model.log_z, rtol=1e-12)


def test_nce_rejects_bad_nu_and_shapes():
    energy = DEMEnergy(4, 3, 1.0)
    with pytest.raises(ValueError, match="nu must be a positive integer"):
        DEMNoiseContrastive(energy, np.zeros(8), np.eye(8), nu=0, dim=8)
    with pytest.raises(ValueError, match=r"noise mean and Cholesky factor must be \[8\]"):
        DEMNoiseContrastive(energy, np.zeros(7), np.eye(8), dim=8)
