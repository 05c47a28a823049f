"""`GridGaussian`: the Gaussian p(x) = exp(-(x - mu)^T Lambda (x - mu) / 2) / Z with a grid precision."""

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

from energy_models.errors import check_static_rows
from energy_models.gaussian.layer import GridPrecision
from energy_models.linalg.positive_definite import checked_cholesky

LOG_2PI = float(np.log(2.0 * np.pi))


@keras.saving.register_keras_serializable(package="energy_models")
class GridGaussian(keras.Model):
    """Gaussian with mean mu and grid-structured precision Lambda.

        log p(x) = -(x - mu)^T Lambda (x - mu) / 2 - log Z,
        log Z    = D/2 log(2 pi) - 1/2 log det Lambda  (= D/2 log(2 pi) + 1/2 log |Sigma|).

    Calling the model returns the unnormalised log density -(x - mu)^T Lambda (x - mu) / 2, which is all the
    estimators need; `log_normalizer`, `log_prob` and `sample` need a positive-definite Lambda and raise
    `NotPositiveDefiniteError` otherwise.

    Sampling draws x = mu + A eps, eps ~ N(0, I), with A = L^-T for the Cholesky factor Lambda = L L^T:
    Cov(x) = A A^T = L^-T L^-1 = (L L^T)^-1 = Lambda^-1. A differs from the symmetric square root
    Lambda^(-1/2) by an orthogonal factor (A = Lambda^(-1/2) Q), which leaves the distribution unchanged and
    costs one triangular solve instead of an eigendecomposition. The draw is done by tensorflow-probability's
    `MultivariateNormalPrecisionFactorLinearOperator` with precision factor L.

    Args:
      height, width, neighbourhood: the grid (see `GridPrecision`).
      diagonal_init: initial diagonal of Lambda.
      channels: C values per pixel (3 for RGB: Lambda has 3 x 3 blocks on the grid; `energy_models.linalg.grid`).
    """

    def __init__(self, height=28, width=28, neighbourhood=4, diagonal_init=1.0, channels=1, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.neighbourhood = int(height), int(width), int(neighbourhood)
        self.diagonal_init = float(diagonal_init)
        self.channels = int(channels)
        self.precision_layer = GridPrecision(height, width, neighbourhood, diagonal_init, channels,
                                             name="precision")
        self.precision_layer.build((None, self.dim))
        self.mu = self.add_weight(name="mean", shape=(self.dim,), initializer="zeros",
                                  trainable=False)
        self.built = True  # Every weight exists now (subclasses add theirs in __init__ too).

    @property
    def dim(self):
        return self.height * self.width * self.channels

    @property
    def pattern(self):
        return self.precision_layer.pattern

    def call(self, x):
        return self.unnormalized_log_prob(x)

    def unnormalized_log_prob(self, x):
        """-(x - mu)^T Lambda (x - mu) / 2 for x [n, D]: shape [n]. ValueError for another shape."""
        x = check_static_rows(tf.convert_to_tensor(x, dtype=self.compute_dtype), self.dim)
        return -self.precision_layer(x - self.mu)

    def set_mean(self, mean):
        self.mu.assign(np.asarray(mean, dtype=np.float32).reshape(self.dim))

    def precision_dense(self):
        """Lambda as a float64 numpy [D, D] array."""
        return self.precision_layer.dense()

    def smallest_eigenvalue(self):
        return float(np.linalg.eigvalsh(self.precision_dense())[0])

    def precision_cholesky(self):
        """L with Lambda = L L^T (float64 numpy), or `NotPositiveDefiniteError`."""
        return checked_cholesky(self.precision_dense())

    def log_normalizer(self):
        """log Z = D/2 log(2 pi) - 1/2 log det Lambda, in float64 from the Cholesky factor."""
        chol = self.precision_cholesky()
        # 1/2 log det Lambda = sum log diag(L): a sum of logs, no under/overflow of det itself.
        return 0.5 * self.dim * LOG_2PI - float(np.sum(np.log(np.diag(chol))))

    def log_prob(self, x):
        """Normalised log density, float64 numpy [n]."""
        log_z = self.log_normalizer()
        return np.asarray(self.unnormalized_log_prob(x), dtype=np.float64) - log_z

    def distribution(self):
        """The fitted Gaussian as a tensorflow-probability distribution (float32)."""
        import tensorflow_probability as tfp  # TFP imports tf_keras: only pay for it when sampling.

        chol = tf.constant(self.precision_cholesky(), dtype=tf.float32)
        factor = tf.linalg.LinearOperatorLowerTriangular(chol, is_non_singular=True)
        return tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
            loc=tf.convert_to_tensor(self.mu), precision_factor=factor)

    def sample(self, n, seed=0):
        """n samples x = mu + L^-T eps, float32 numpy [n, D]; `seed` is an int (stateless draw)."""
        return self.distribution().sample(int(n), seed=tf.constant([int(seed), 0], tf.int32)).numpy()

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width, neighbourhood=self.neighbourhood,
                      diagonal_init=self.diagonal_init, channels=self.channels)
        return config


def average_log_likelihood(model, x, batch_size=10_000):
    """Mean normalised log-likelihood (nats per example) of rows x [n, D] under `model`."""
    total = 0.0
    log_z = model.log_normalizer()
    for start in range(0, len(x), batch_size):
        total += float(np.sum(np.asarray(model.unnormalized_log_prob(x[start:start + batch_size]),
                                         dtype=np.float64)))
    return total / len(x) - log_z


def expected_log_likelihood(model, covariance):
    """Exact average log-likelihood of data with mean mu and covariance S under `model`:

        E[log p(x)] = -D/2 log(2 pi) + 1/2 log det Lambda - 1/2 tr(S Lambda).

    For MNIST with fresh noise, S = Cov(pixels / 255) + noise_std^2 I integrates the noise out, so this is
    the training log-likelihood free of any particular noise draw.
    """
    return -model.log_normalizer() - 0.5 * float(np.sum(np.asarray(covariance) * model.precision_dense()))


def full_covariance_log_likelihood(x, mean, covariance, batch_size=10_000):
    """Mean log N(x; mu, S) (nats per row) of rows x under the unconstrained Gaussian with covariance S.

    The baseline the grid precision is compared with: it is the maximum-likelihood Gaussian when S is
    the training covariance, so no grid-structured precision can do better on the training data.
    """
    chol = checked_cholesky(covariance, what="the full covariance")
    d = chol.shape[0]
    log_z = 0.5 * d * LOG_2PI + float(np.sum(np.log(np.diag(chol))))
    total = 0.0
    for start in range(0, len(x), batch_size):
        centred = np.asarray(x[start:start + batch_size], np.float64) - mean
        # ||L^-1 (x - mu)||^2 = (x - mu)^T S^-1 (x - mu), by a triangular solve (no explicit inverse).
        solved = scipy.linalg.solve_triangular(chol, centred.T, lower=True, check_finite=False)
        total += float(np.sum(solved ** 2))
    return -0.5 * total / len(x) - log_z
