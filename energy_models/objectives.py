"""Estimation objectives for any energy: a Keras layer that maps x [n, D] to log p~(x) [n].

The grid Gaussian and the deep energy model have their own trainers (`estimators/`); these are the same
objectives for a model a user writes, with `EnergyEstimator` as the Keras model that trains it by `fit`:

* NCE (Gutmann and Hyvarinen 2012): with G(x) = log p~(x) + c - log p_n(x) - log nu,
      J = E_data[softplus(-G(x))] + nu E_noise[softplus(G(y))],
  c learns -log Z. The noise p_n is any normalised tfp distribution the user can sample (near the data:
  a Gaussian with the data's mean and covariance is the usual choice, the default here).
* cNCE (Ceylan and Gutmann 2018): y = x + epsilon u, u ~ N(0, I), symmetric, so with
  G = log p~(x) - log p~(y), J = 2 E[softplus(-G)]; log Z cancels.
* Sliced score matching (Song et al. 2019), for energies without a closed-form Laplacian: with
  s(x) = grad_x log p~(x) and v ~ N(0, I),
      J = E_{x, v}[ v^T (d s / dx) v + (v^T s(x))^2 / 2 ],
  whose expectation over v is Hyvarinen's E[tr(d s / dx) + ||s||^2 / 2]; the Hessian-vector product is
  one more gradient.
* Contrastive divergence: negatives by `langevin_steps` steps of unadjusted Langevin dynamics from the
  data batch, x <- x + eta / 2 grad log p~(x) + sqrt(eta) u, and the surrogate
      J = E_data[-log p~(x)] - E_neg[-log p~(x-)]
  whose gradient is the CD estimate of the negative log-likelihood gradient.
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.estimators.cnce import cnce_loss
from energy_models.estimators.nce import nce_loss

OBJECTIVES = ("nce", "cnce", "ssm", "cd")


def sliced_score_matching_loss(log_p, x, v):
    """Sliced score matching J for log_p: x [n, D] -> [n], at x with projections v [n, D]."""
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            log_px = log_p(x)
        score = inner.gradient(log_px, x)
        projected = tf.reduce_sum(score * v, axis=-1)
    hvp = outer.gradient(projected, x)  # (d s / dx) v, per row
    return tf.reduce_mean(tf.reduce_sum(v * hvp, axis=-1) + 0.5 * projected ** 2)


def langevin_negatives(log_p, x, steps, step_size, seed):
    """`steps` unadjusted Langevin steps from x (stateless `seed` [2]); no gradient flows through them."""
    seeds = tf.random.experimental.stateless_split(seed, steps)
    for k in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_px = log_p(x)
        x = x + 0.5 * step_size * tape.gradient(log_px, x) + tf.sqrt(step_size) * tf.random.stateless_normal(
            tf.shape(x), seeds[k])
    return tf.stop_gradient(x)


def contrastive_divergence_loss(log_p_data, log_p_negatives):
    """E_data[-log p~] - E_neg[-log p~]: its gradient is the CD estimate of the NLL gradient."""
    return tf.reduce_mean(log_p_negatives) - tf.reduce_mean(log_p_data)


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
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
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
        from energy_models.ais import base_gaussian
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
