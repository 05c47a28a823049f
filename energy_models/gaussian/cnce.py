"""Conditional noise-contrastive estimation (cNCE) of the grid Gaussian: the normaliser cancels."""

import keras
import numpy as np
import tensorflow as tf

from energy_models.gaussian.trainable import EstimatorGaussian, moment_matched_start
from energy_models.gaussian.trainer import fit_keras_estimator
from energy_models.objectives import cnce_loss

LOG_4 = float(2.0 * np.log(2.0))
# The epsilon rule's target: the loss of the starting model at the chosen epsilon, as a fraction of
# 2 log 2 (the loss at epsilon -> 0, where data and noise cannot be told apart).
TARGET_FRACTION = 0.5


@keras.saving.register_keras_serializable(package="energy_models")
class CNCEGaussian(EstimatorGaussian):
    """Grid Gaussian fitted by conditional NCE (Ceylan and Gutmann, 2018).

    Noise: y_k = x + epsilon u_k, u_k ~ N(0, I), k = 1..kappa, drawn fresh at every step. This noise is
    symmetric (p_c(y | x) = p_c(x | y)), so the conditional densities cancel in the log-ratio and
    G(x, y) = log phi(x) - log phi(y) (`cnce_loss`). As epsilon -> 0 the loss tends to 2 log 2 and its
    gradient carries no information; for large epsilon the pairs are trivially separated and the loss
    tends to 0: epsilon is chosen between the two (`choose_epsilon`).

    Args:
      kappa: noise samples per data point, >= 1.
      epsilon: noise scale, > 0.
      seed: seed of the noise draws.

    References:
      Ceylan and Gutmann, "Conditional noise-contrastive estimation of unnormalised models", ICML 2018.
    """

    REPORTED = ("loss", "accuracy")

    def __init__(self, height=28, width=28, neighbourhood=4, kappa=1, epsilon=0.1, **kwargs):
        super().__init__(height, width, neighbourhood, **kwargs)
        if int(kappa) < 1:
            raise ValueError(f"kappa must be >= 1, got kappa={kappa!r}")
        if not float(epsilon) > 0:
            raise ValueError(f"epsilon must be > 0, got epsilon={epsilon!r}")
        self.kappa = int(kappa)
        self.epsilon = self.add_weight(name="epsilon", shape=(), trainable=False,
                                       initializer=keras.initializers.Constant(float(epsilon)))

    def loss_terms(self, x, u=None):
        if u is None:
            u = tf.random.stateless_normal((self.kappa, tf.shape(x)[0], self.dim), seed=self.next_seed(),
                                           dtype=self.compute_dtype)
        y = x[None] + self.epsilon * u
        log_phi_noise = tf.reshape(self.unnormalized_log_prob(tf.reshape(y, [-1, self.dim])),
                                   [self.kappa, -1])
        loss, accuracy = cnce_loss(self.unnormalized_log_prob(x), log_phi_noise)
        return {"loss": loss, "accuracy": accuracy}

    def get_config(self):
        config = super().get_config()
        config.update(kappa=self.kappa, epsilon=float(self.epsilon.numpy()))
        return config


def choose_epsilon(model, x, seed=0, target=TARGET_FRACTION * LOG_4, lo=1e-4, hi=10.0, steps=30):
    """The epsilon rule: bisection (on log epsilon) for J(epsilon) = target with the starting model.

    J decreases from 2 log 2 (epsilon -> 0) towards 0 (epsilon -> inf) as epsilon grows; the rule picks
    the epsilon at which the starting model's loss on the batch x is `target` (default half of 2 log 2),
    i.e. neither close to 2 log 2 (epsilon too small) nor far below it (too large), following the advice
    of Ceylan and Gutmann (2018). The same u draws are used for every trial, so J(epsilon) is monotone
    in practice and the bisection is well defined.

    Returns:
      epsilon, a float.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    u = tf.random.stateless_normal((model.kappa, x.shape[0], model.dim), seed=[seed, 7])
    old = float(model.epsilon.numpy())
    log_lo, log_hi = np.log(lo), np.log(hi)
    for _ in range(steps):
        mid = 0.5 * (log_lo + log_hi)
        model.epsilon.assign(np.exp(mid))
        if float(model.loss_terms(x, u)["loss"]) > target:
            log_lo = mid  # Still too hard to tell apart: more noise.
        else:
            log_hi = mid
    model.epsilon.assign(old)
    return float(np.exp(0.5 * (log_lo + log_hi)))


def rule_epsilon(estimator, data, seed):
    """`choose_epsilon` on 1,024 noisy training rows drawn with `seed`, for the estimator at its start."""
    rng = np.random.default_rng(seed)
    batch = data.noisy_train(seed)[rng.choice(len(data.train_pixels), 1024)]
    return choose_epsilon(estimator, batch, seed)


def fit_cnce(settings, data, model, writer):
    """`--estimator cnce`: trains a `CNCEGaussian`; epsilon from --epsilon or `choose_epsilon`."""
    estimator = CNCEGaussian(model.height, model.width, settings.neighbourhood, kappa=settings.kappa,
                             seed=settings.seed, channels=model.channels)
    moment_matched_start(estimator, data)
    estimator.set_mean(data.mean)
    if settings.epsilon is None:
        epsilon = rule_epsilon(estimator, data, settings.seed)
    else:
        epsilon = float(settings.epsilon)
    estimator.epsilon.assign(epsilon)
    extras = fit_keras_estimator(settings, data, estimator, model, writer)
    return {**extras, "epsilon": epsilon, "epsilon_rule": settings.epsilon is None}
