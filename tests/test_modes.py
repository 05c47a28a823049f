"""Mode search (energy_models.evaluation.modes): L-BFGS reaches the mode of a badly conditioned Gaussian with log p
rising at every iteration, where SGD at the old learning rate diverges; non-finite log p is one line.
(train.score --modes end to end is in test_score.py.)"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from energy_models import figures
from energy_models.errors import UserError
from energy_models.evaluation import modes
from energy_models.gaussian.model import GridGaussian


def _ill_conditioned_gaussian(dim=100, largest=6000.0, seed=0):
    """log p(x) = -(x - m)^T P (x - m) / 2 with P = Q diag(1 .. 6000) Q^T (Q a random rotation), the
    curvature range of a ZCA-whitened model in pixel space; returns (log_prob_fn, m, P)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    precision = (rotation * np.geomspace(1.0, largest, dim)) @ rotation.T
    mean = rng.uniform(0, 1, dim)
    p, m = tf.constant(precision, tf.float32), tf.constant(mean, tf.float32)

    def log_prob(x):
        r = x - m
        return -0.5 * tf.reduce_sum(r * tf.matmul(r, p), axis=1)

    return log_prob, mean, precision


def test_lbfgs_reaches_the_mean_of_a_badly_conditioned_gaussian_where_sgd_diverges():
    log_prob, mean, precision = _ill_conditioned_gaussian()
    start = np.random.default_rng(1).normal(0.5, 1.0, size=(6, len(mean))).astype(np.float32)
    search = modes.find_modes(log_prob, start, max_steps=2000, tol=0.0)  # tol 0: to float32 precision.
    assert search.steps < 2000 and np.all(search.converged | search.stalled)
    np.testing.assert_allclose(search.end, np.broadcast_to(mean, search.end.shape), atol=1e-4)
    r = search.end - mean
    assert np.all(0.5 * np.einsum("nd,de,ne->n", r, precision, r) < 1e-6)  # log p(m) - log p(end), nats.
    # Every row's log p rises at every iteration (up to float32 round-off of log p).
    rises = np.diff(search.rows, axis=0)
    assert search.rows.shape == (search.steps + 1, 6) and np.all(rises >= -1e-5 * np.abs(search.rows[:-1]))
    assert search.monotonic and np.all(search.log_p_end > search.log_p_start + 1000)
    # Gradient ascent at 1e-3: the error along the 6000-eigenvector grows by |1 - 1e-3 * 6000| = 5 a step.
    with pytest.raises(UserError) as error:
        modes.find_modes(log_prob, start, optimizer="sgd", learning_rate=1e-3, max_steps=2000)
    message = str(error.value)
    assert "\n" not in message and "is non-finite after step" in message
    assert "keras sgd at learning rate 0.001 diverged; use --mode-optimizer lbfgs" in message
    step = int(message.split("after step ")[1].split()[0])
    assert step < 100  # 5^t overflows float32 within ~60 steps from an error of ~1.


def test_default_tolerance_stops_within_a_nat_per_mille_of_the_mode():
    """The default rule (an iteration gains < 1e-3 nats) stops short of float32 precision, but near."""
    log_prob, mean, precision = _ill_conditioned_gaussian(seed=2)
    start = np.random.default_rng(3).normal(0.5, 1.0, size=(4, len(mean))).astype(np.float32)
    search = modes.find_modes(log_prob, start)
    assert np.all(search.converged) and search.monotonic
    r = search.end - mean
    assert np.all(0.5 * np.einsum("nd,de,ne->n", r, precision, r) < 0.05)


@pytest.mark.parametrize("optimizer, learning_rate", [("lbfgs", None), ("sgd", 1e-3)])
def test_mode_of_a_well_conditioned_gaussian_is_its_mean(optimizer, learning_rate):
    """Precision 100 I: SGD at 1e-3 is stable here (1e-3 * 100 < 2), and both reach the mean."""
    model = GridGaussian(28, 28, 4, diagonal_init=100.0)
    model.set_mean(np.full(784, 0.5))
    start = np.random.default_rng(0).uniform(0, 1, size=(6, 784)).astype(np.float32)
    search = modes.find_modes(model.unnormalized_log_prob, start, optimizer=optimizer,
                              learning_rate=learning_rate, max_steps=500)
    assert search.monotonic and np.all(search.log_p_end > search.log_p_start)
    # The mode of a Gaussian is its mean, where the unnormalised log density is 0.
    np.testing.assert_allclose(search.end, 0.5, atol=1e-2)
    assert search.steps < 500 and np.all(search.converged | search.stalled)


@pytest.mark.parametrize("log_prob, where", [
    (lambda x: 0.5 * tf.reduce_sum(x * x, axis=1), "after L-BFGS iteration"),  # No mode: log p -> inf.
    (lambda x: tf.reduce_sum(x, axis=1) * np.nan, "at the starting points"),
])
def test_non_finite_log_p_stops_with_one_line(log_prob, where):
    start = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    with pytest.raises(UserError) as error:
        modes.find_modes(log_prob, start, max_steps=200)
    message = str(error.value)
    assert message.startswith("mode search stopped: ") and where in message and "\n" not in message
    assert "for 4 of 4 starts; " in message and "check the model" in message


def test_lbfgs_takes_no_learning_rate():
    with pytest.raises(ValueError, match="L-BFGS has no learning rate"):
        modes.find_modes(lambda x: -tf.reduce_sum(x * x, axis=1), np.zeros((1, 3)), learning_rate=1e-3)


def test_monotonic_looks_at_every_row():
    rows = np.array([[0.0, 5.0], [1.0, 4.0], [2.0, 6.0]])  # The mean rises; row 2 falls once.
    search = modes.ModeSearch(start=None, end=None, log_p_start=rows[0], log_p_end=rows[-1],
                              trajectory=rows.mean(1), steps=2, rows=rows)
    assert not search.monotonic
    assert dataclasses.replace(search, rows=None).monotonic


def test_pair_grid_puts_each_start_beside_its_mode_on_the_pair_s_own_scale():
    left = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 10.0, 10.0, 10.0]])
    right = np.array([[2.0, 2.0, 2.0, 2.0], [10.0, 12.0, 14.0, 18.0]])
    grid = figures.pair_grid(left, right, cols=2, size=2, pad=1, gap=3)
    assert grid.shape == (2 + 3 + 3, 2 * (2 * 2 + 1 + 3) + 3)
    # Pair 0 at columns 3-4 | 6-7, scaled by its range [0, 3]; pair 1 at 11-12 | 14-15, range [10, 18].
    np.testing.assert_allclose(grid[3:5, 3:5], [[0, 1 / 3], [2 / 3, 1]])
    np.testing.assert_allclose(grid[3:5, 6:8], 2 / 3)
    np.testing.assert_allclose(grid[3:5, 11:13], 0)
    np.testing.assert_allclose(grid[3:5, 14:16], [[0, 0.25], [0.5, 1]])
    assert np.all(grid[:, 5] == 1) and np.all(grid[:3] == 1)  # White pad and gap.
