"""`energy_models.objectives`: NCE, cNCE, sliced score matching and CD train a small user-written energy
(a Keras layer, not one of the library's models) to the known parameters of the data's distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from energy_models.energy_estimator import EnergyEstimator
from energy_models.objectives import sliced_score_matching_loss

D = 3
TRUE_PRECISION = np.array([[4.0, 1.5, 0.0], [1.5, 3.0, -1.0], [0.0, -1.0, 2.0]])
TRUE_MEAN = np.array([0.5, -1.0, 2.0])


class QuadraticEnergy(keras.layers.Layer):
    """log p~(x) = -(x - b)^T L L^T (x - b) / 2 with L lower triangular: what a user might write."""

    def build(self, input_shape):
        self.tril = self.add_weight(name="tril", shape=(D, D), initializer="identity")
        self.b = self.add_weight(name="b", shape=(D,), initializer="zeros")

    def precision(self):
        lower = tf.linalg.band_part(self.tril, -1, 0)
        return tf.matmul(lower, lower, transpose_b=True)

    def call(self, x):
        centred = x - self.b
        return -0.5 * tf.reduce_sum(centred * tf.matmul(centred, self.precision()), -1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.multivariate_normal(TRUE_MEAN, np.linalg.inv(TRUE_PRECISION), size=20_000).astype(np.float32)


@pytest.mark.parametrize("objective, settings, epochs, tolerance", [
    ("nce", {"nu": 4.0}, 40, 0.08),
    ("cnce", {"epsilon": 0.3}, 40, 0.08),
    ("ssm", {}, 40, 0.08),
    ("cd", {"langevin_steps": 30, "step_size": 0.02}, 40, 0.15),
])
def test_each_objective_recovers_the_precision_of_a_user_written_energy(data, objective, settings, epochs,
                                                                       tolerance):
    tf.keras.utils.set_random_seed(1)
    energy = QuadraticEnergy()
    model = EnergyEstimator(energy, objective, seed=2, **settings)
    if objective == "nce":
        model.adapt(data)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    history = model.fit(data, batch_size=500, epochs=epochs, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    precision = energy.precision().numpy()
    error = np.linalg.norm(precision - TRUE_PRECISION) / np.linalg.norm(TRUE_PRECISION)
    assert error < tolerance, (objective, error, precision)
    np.testing.assert_allclose(energy.b.numpy(), TRUE_MEAN, atol=0.1)
    if objective == "nce":  # c learns -log Z of the model's own precision
        true_log_z = 0.5 * D * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(precision.astype(np.float64))[1]
        assert model.log_z == pytest.approx(true_log_z, abs=0.1)


def test_sliced_score_matching_averages_to_hyvarinen_s_objective():
    """For a Gaussian energy, E_v[SSM] = tr(-P) + ||P (x - b)||^2 / 2 exactly (Hutchinson: E[v v^T] = I)."""
    energy = QuadraticEnergy()
    energy.build((None, D))
    energy.tril.assign(np.linalg.cholesky(TRUE_PRECISION).astype(np.float32))
    x = tf.constant(np.random.default_rng(3).normal(size=(4, D)), tf.float32)
    rows = tf.repeat(x, 100_000, axis=0)  # each row with 100,000 projections, in one call
    sliced = sliced_score_matching_loss(energy, rows, tf.random.stateless_normal(tf.shape(rows), [0, 1])).numpy()
    score = -x.numpy() @ TRUE_PRECISION  # b = 0
    exact = np.mean(-np.trace(TRUE_PRECISION) + 0.5 * np.sum(score ** 2, -1))
    assert sliced == pytest.approx(exact, rel=0.03)


def test_bad_settings_are_named():
    energy = QuadraticEnergy()
    for kwargs, message in ((dict(objective="mle"), "objective must be one of nce, cnce, ssm, cd"),
                            (dict(objective="cnce", epsilon=0.0), "epsilon must be > 0"),
                            (dict(objective="cd", langevin_steps=0), "langevin_steps must be >= 1")):
        with pytest.raises(ValueError, match=message):
            EnergyEstimator(energy, **kwargs)
    model = EnergyEstimator(energy, "nce")
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="needs a noise distribution"):
        model.fit(np.zeros((8, D), np.float32), epochs=1, verbose=0)
