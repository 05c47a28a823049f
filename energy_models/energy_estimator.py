"""`EnergyEstimator`: trains any energy layer (x [n, D] -> log p~(x) [n]) by Keras `fit` with one of the
objectives in `energy_models.objectives`: NCE, cNCE, sliced score matching or contrastive divergence."""

import keras
import numpy as np
import tensorflow as tf

from energy_models.errors import check_choice
from energy_models.objectives import (
    OBJECTIVES,
    cnce_loss,
    contrastive_divergence_loss,
    langevin_negatives,
    nce_loss,
    sliced_score_matching_loss,
)


class EnergyEstimator(keras.Model):
    """Trains any energy layer (x [n, D] -> log p~(x) [n]) with one of OBJECTIVES by Keras `fit`.

    Args:
      energy: the Keras layer; its trainable weights are the model's.
      objective: "nce", "cnce", "ssm" or "cd".
      noise: NCE's normalised noise, a tfp distribution over [D] (default: set by `adapt(x)` to a
        Gaussian with x's mean and covariance).
      nu: NCE's noise-to-data ratio.
      epsilon: cNCE's noise scale.
      langevin_steps, step_size: CD's negatives.
      seed: seed of every noise draw (stateless, one stream per step).

    After `fit`, `log_z` is NCE's estimate of log Z (-c); the other objectives leave c at 0.
    """

    def __init__(self, energy, objective, noise=None, nu=10.0, epsilon=0.1, langevin_steps=20, step_size=0.01,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        check_choice("objective", objective, OBJECTIVES)
        for name, value in (("nu", nu), ("epsilon", epsilon), ("step_size", step_size)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be > 0; got {value!r}")
        if int(langevin_steps) < 1:
            raise ValueError(f"langevin_steps must be >= 1; got {langevin_steps!r}")
        self.energy, self.objective, self.noise = energy, objective, noise
        self.nu, self.epsilon = float(nu), float(epsilon)
        self.langevin_steps, self.step_size = int(langevin_steps), float(step_size)
        self.c = self.add_weight(name="c", shape=(), initializer="zeros", trainable=objective == "nce")
        self.step_seed = tf.Variable([int(seed), 0], dtype=tf.int64, trainable=False, name="step_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def adapt(self, x):
        """NCE's default noise: N(mean of x, covariance of x + 1e-6 I)."""
        from energy_models.evaluation.ais import base_gaussian
        from energy_models.whitening import mean_and_covariance

        mean, covariance = mean_and_covariance(x)
        self.noise = base_gaussian(mean, covariance + 1e-6 * np.eye(len(mean)))
        return self

    @property
    def log_z(self):
        return -float(self.c.numpy())

    def call(self, x):
        return self.energy(x)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _next_seed(self):
        seed = tf.cast(self.step_seed, tf.int32)
        self.step_seed.assign_add(tf.constant([0, 1], tf.int64))
        return seed

    def objective_loss(self, x):
        """The objective at batch x (differentiable with respect to the energy's weights and log_z)."""
        seed = self._next_seed()
        if self.objective == "nce":
            if self.noise is None:
                raise ValueError("objective 'nce' needs a noise distribution: pass noise= or call adapt(x) first")
            y = tf.cast(self.noise.sample(tf.shape(x)[0] * int(self.nu), seed=seed), x.dtype)
            return nce_loss(self.energy(x), self.noise.log_prob(x), self.energy(y), self.noise.log_prob(y),
                            self.c, self.nu)[0]
        if self.objective == "cnce":
            y = x + self.epsilon * tf.random.stateless_normal(tf.shape(x), seed)
            return cnce_loss(self.energy(x), self.energy(y)[None])[0]
        if self.objective == "ssm":
            return sliced_score_matching_loss(self.energy, x, tf.random.stateless_normal(tf.shape(x), seed))
        negatives = langevin_negatives(self.energy, x, self.langevin_steps, self.step_size, seed)
        return contrastive_divergence_loss(self.energy(x), self.energy(negatives))

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = self.objective_loss(x)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}
