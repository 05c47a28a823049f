"""Noise-contrastive estimation (NCE) of the deep energy model, with a fitted Gaussian as the noise.

The model is normalised by a learnt constant c = -log Z:

    log p_theta(x) = log p~(x) + c,          log p~ the `DEMEnergy` in raw pixel space (incl. log|det W|),

and trained as a classifier of data x against nu times as many noise draws y ~ p_n = N(m, Lambda^-1):

    G(x) = log p_theta(x) - log p_n(x) - log nu,
    J    = -mean_data log s(G(x)) - nu mean_noise log s(-G(y)).

J is minimised at p_theta = p_data when the family contains it (Gutmann and Hyvarinen, JMLR 2012), and c
then estimates -log Z of the unnormalised model, the number `train.score --ais-steps` estimates by AIS.

Why the fitted Gaussian as noise: it is the closest distribution we can both sample and evaluate in closed
form, so the classification is hard (G near 0) and every noise draw informs c. With `--whiten gaussian`
the whitening is the same Gaussian's, u = L^T (x - m): the noise is N(0, I) in model space and, with
sigma = 1, the model's Gaussian term cancels log p_n, leaving G = b^T u + sum_k S(w_k^T g(u) + c_k) + const.

The MCMC settings of the `DeepEnergyModel` serve `sample()` and export only.
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.dem.model import DeepEnergyModel
from energy_models.errors import check_positive_int
from energy_models.objectives import nce_loss

METRIC_NAMES = ("loss", "energy_data", "energy_negatives", "log_z", "accuracy", "grad_norm")


@keras.saving.register_keras_serializable(package="energy_models")
class DEMNoiseContrastive(DeepEnergyModel):
    """Trains a `DEMEnergy` by NCE against N(m, Lambda^-1) noise (module docstring).

    Args:
        energy: the `DEMEnergy` layer.
        noise_mean: m [D], the noise mean in raw pixels.
        noise_precision_cholesky: lower-triangular L [D, D] with Lambda = L L^T.
        nu: noise draws per data point (a positive integer).
        **kwargs: passed to `DeepEnergyModel` (dim, whitening, mcmc settings for sampling, seed...).

    Raises:
        ValueError: nu is not a positive integer, or the noise shapes do not match dim.
    """

    METRIC_NAMES = METRIC_NAMES

    def __init__(self, energy, noise_mean, noise_precision_cholesky, nu=1, **kwargs):
        super().__init__(energy, **kwargs)
        check_positive_int("nu", nu)
        chol = np.asarray(noise_precision_cholesky, np.float64)
        mean = np.asarray(noise_mean, np.float64)
        if chol.shape != (self.dim, self.dim) or mean.shape != (self.dim,):
            raise ValueError(f"noise mean and Cholesky factor must be [{self.dim}] and [{self.dim}, "
                             f"{self.dim}], got {mean.shape} and {chol.shape}")
        self.nu = int(nu)
        constant = lambda value: keras.initializers.Constant(np.asarray(value, np.float32))  # noqa: E731
        # y = m + A eps with A = L^-T has covariance A A^T = (L L^T)^-1 = Lambda^-1.
        factor = np.linalg.solve(chol.T, np.eye(self.dim))
        self.noise_mean = self.add_weight(name="noise_mean", shape=(self.dim,), trainable=False,
                                          initializer=constant(mean))
        self.noise_chol = self.add_weight(name="noise_chol", shape=(self.dim, self.dim), trainable=False,
                                          initializer=constant(chol))
        self.noise_factor = self.add_weight(name="noise_factor", shape=(self.dim, self.dim), trainable=False,
                                            initializer=constant(factor))
        # log p_n(x) = -||L^T (x - m)||^2 / 2 + sum log L_ii - D/2 log(2 pi).
        self.noise_log_norm = float(np.sum(np.log(np.diag(chol))) - 0.5 * self.dim * np.log(2 * np.pi))
        self.c = self.add_weight(name="c", shape=(), initializer="zeros")  # c = -log Z, trainable.

    @property
    def log_z(self):
        """The NCE estimate of log Z of the unnormalised model (pixel space): -c."""
        return -float(self.c.numpy())

    def noise_log_prob(self, x):
        """log p_n(x) for raw-pixel rows x [n, D]."""
        white = tf.matmul(x - self.noise_mean, self.noise_chol)  # Rows of L^T (x - m).
        return -0.5 * tf.reduce_sum(tf.square(white), axis=-1) + self.noise_log_norm

    def noise_draws(self, n, seed):
        """n rows of N(m, Lambda^-1) and their log p_n, from one stateless seed."""
        eps = tf.random.stateless_normal([n, self.dim], seed=seed)
        y = self.noise_mean + tf.matmul(eps, self.noise_factor, transpose_b=True)
        return y, -0.5 * tf.reduce_sum(tf.square(eps), axis=-1) + self.noise_log_norm

    def initial_c(self, x, n_noise=10_000, seed=0):
        """A starting c that makes G zero on average over data rows x and as many noise draws."""
        y, log_pn_y = self.noise_draws(n_noise, tf.constant([seed, 0xC0]))
        data = self.noise_log_prob(tf.constant(x, tf.float32)) - self.unnormalized_log_prob(x).astype(np.float32)
        noise = log_pn_y - self.unnormalized_log_prob(y.numpy()).astype(np.float32)
        return float(0.5 * (np.mean(data) + np.mean(noise)))

    def _objective(self, x, seed):
        """(J, log p~ of data, log p~ of noise, classification accuracy) on a data batch x: the grid
        Gaussian's `nce_loss`, with nu n noise draws for n data rows."""
        y, log_pn_y = self.noise_draws(tf.shape(x)[0] * self.nu, seed)
        log_p_x, log_p_y = self(x), self(y)
        loss, _, _, accuracy = nce_loss(log_p_x, self.noise_log_prob(x), log_p_y, log_pn_y, self.c,
                                        float(self.nu))
        return loss, log_p_x, log_p_y, accuracy

    def _report_nce(self, loss, log_p_x, log_p_y, accuracy, grad_norm):
        return self._track({"loss": loss, "energy_data": -tf.reduce_mean(log_p_x),
                            "energy_negatives": -tf.reduce_mean(log_p_y), "log_z": -self.c,
                            "accuracy": accuracy, "grad_norm": grad_norm})

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        seed = self._next_seeds(1)[0]
        values, grad_norm = self._descend(lambda: self._objective(x, seed), self.energy.trainable_weights + [self.c])
        return self._report_nce(*values, grad_norm)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, log_p_x, log_p_y, accuracy = self._objective(x, self._next_seeds(1)[0])
        return self._report_nce(loss, log_p_x, log_p_y, accuracy, tf.constant(np.nan, tf.float32))

    def get_config(self):
        return {**super().get_config(), "noise_mean": np.asarray(self.noise_mean).tolist(),
                "noise_precision_cholesky": np.asarray(self.noise_chol).tolist(), "nu": self.nu}
