"""AIS recovers known log normalisers; its standard error covers the error; forward <= reverse."""

import numpy as np
import pytest
import tensorflow as tf

from energy_models import ais


def test_forward_and_reverse_ais_on_a_gaussian_with_known_log_z():
    rng = np.random.default_rng(0)
    d = 30
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = 0.05 * a @ a.T + 0.01 * np.eye(d)
    prec = np.linalg.inv(cov).astype(np.float32)
    mu = rng.uniform(0, 1, d).astype(np.float32)

    def target(x):
        centred = x - mu
        return -0.5 * tf.reduce_sum(centred * tf.matmul(centred, prec), -1)

    true = 0.5 * d * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(cov)[1]
    # A base that differs from the target: isotropic, with the target's average variance.
    base = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d))
    fwd = ais.forward_ais(target, base, num_steps=300, num_chains=128, step_size=0.02, seed=(1, 2))
    exact = rng.multivariate_normal(mu, cov, size=128)
    rev = ais.reverse_ais(target, base, exact, num_steps=300, step_size=0.02, seed=(3, 4))
    assert abs(fwd.log_z - true) < 3 * fwd.stderr + 0.05, (fwd.log_z, fwd.stderr, true)
    assert abs(rev.log_z - true) < 3 * rev.stderr + 0.05, (rev.log_z, rev.stderr, true)
    assert 0.3 < fwd.acceptance <= 1.0


def test_forward_ais_on_a_non_gaussian_2d_energy_against_numerical_integration():
    def energy(x):
        return -0.25 * tf.reduce_sum(x ** 2, -1) ** 2 + x[..., 0] + 0.5 * tf.sin(3.0 * x[..., 1])

    grid = np.linspace(-6, 6, 1201)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    values = energy(tf.constant(np.stack([xx, yy], -1).reshape(-1, 2))).numpy()
    h = grid[1] - grid[0]
    true = np.log(np.sum(np.exp(values)) * h * h)  # Riemann sum: the integrand is smooth and ~0 at |x|=6.
    base = ais.base_gaussian(np.zeros(2), np.eye(2))
    est = ais.forward_ais(energy, base, num_steps=200, num_chains=512, step_size=0.3, seed=(5, 6))
    assert abs(est.log_z - true) < 3 * est.stderr + 0.02, (est.log_z, est.stderr, true)
    assert est.stderr < 0.05


def test_log_mean_exp_is_stable_for_huge_weights():
    log_z, stderr = ais._log_mean_exp_and_stderr(np.array([1e4, 1e4, 1e4 + np.log(4.0)]))
    assert log_z == pytest.approx(1e4 + np.log(2.0))
    assert np.isfinite(stderr)
