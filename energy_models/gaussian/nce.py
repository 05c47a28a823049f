"""Noise-contrastive estimation (NCE) of the grid Gaussian: Lambda and c = -log Z learned together."""

import keras
import numpy as np
import tensorflow as tf

from energy_models.errors import check_choice
from energy_models.gaussian.trainable import EstimatorGaussian, moment_matched_start
from energy_models.gaussian.trainer import fit_keras_estimator
from energy_models.objectives import nce_loss

NOISES = ("isotropic", "diagonal", "full")
LOG_2PI = float(np.log(2.0 * np.pi))
# c = C_SCALE * c_raw: log Z is hundreds of nats and moves by ~200 from the start to the optimum on
# MNIST, while Adam moves each raw parameter by ~lr per step; the scale makes c move ~C_SCALE * lr.
C_SCALE = 100.0


def noise_scale(kind, covariance):
    """The noise p_n = N(mu, Sigma_n) as a scale: a [D] std vector (isotropic, diagonal) or the [D, D]
    lower Cholesky factor of Sigma_n (full).

    Args:
      kind: "isotropic" (Sigma_n = tr(S)/D I), "diagonal" (diag S) or "full" (S).
      covariance: the data covariance S, float [D, D].
    """
    s = np.asarray(covariance, dtype=np.float64)
    if kind == "isotropic":
        return np.full(len(s), np.sqrt(np.trace(s) / len(s)))
    if kind == "diagonal":
        return np.sqrt(np.diag(s))
    if kind == "full":
        return np.linalg.cholesky(s)
    check_choice("noise", kind, NOISES)
    raise AssertionError(kind)


@keras.saving.register_keras_serializable(package="energy_models")
class NCEGaussian(EstimatorGaussian):
    """Grid Gaussian fitted by noise-contrastive estimation (Gutmann and Hyvarinen, 2010, 2012).

    The model is log p_theta(x) = -(x - mu)^T Lambda (x - mu) / 2 + c with c a free parameter, so NCE
    learns the normaliser: log Z estimate = -c. c = C_SCALE * c_raw with c_raw the trainable weight, so
    that Adam's ~lr steps move c by ~C_SCALE lr nats (log Z is hundreds of nats). Noise
    p_n = N(mu, Sigma_n) with Sigma_n = A A^T (A: `noise_scale`, lower triangular or diagonal); noise
    draws y = mu + A eps have the known log density -||eps||^2 / 2 - log|det A| - D/2 log(2 pi) (no
    solve), data need one triangular solve A z = x - mu per batch. Each
    training step draws `noise_samples` fresh noise vectors, and nu enters only as the weight and the
    log nu offset of the loss (`nce_loss`): the noise expectation is a Monte-Carlo average whatever the
    number of draws, so a large nu costs nothing extra per step (its gradient is noisier instead).

    Args:
      nu: noise-to-data ratio, > 0.
      noise: "isotropic", "diagonal" or "full".
      noise_samples: noise draws per step (default: the data batch size).
      seed: seed of the noise draws.
      (others as `GridGaussian`)

    References:
      Gutmann and Hyvarinen, "Noise-contrastive estimation of unnormalized statistical models, with
      applications to natural image statistics", JMLR 2012.
    """

    REPORTED = ("loss", "data_term", "noise_term", "accuracy", "log_z_estimate")

    def __init__(self, height=28, width=28, neighbourhood=4, nu=10.0, noise="full", noise_samples=None,
                 **kwargs):
        super().__init__(height, width, neighbourhood, **kwargs)
        if not float(nu) > 0:
            raise ValueError(f"nu must be > 0, got nu={nu!r}")
        check_choice("noise", noise, NOISES)
        self.nu, self.noise, self.noise_samples = float(nu), noise, noise_samples
        self.c_raw = self.add_weight(name="c_raw", shape=(), initializer="zeros")
        shape = (self.dim, self.dim) if noise == "full" else (self.dim,)
        self.noise_scale = self.add_weight(name="noise_scale", shape=shape, initializer="ones",
                                           trainable=False)
        if noise == "full":
            self.noise_scale.assign(np.eye(self.dim, dtype=np.float32))
        self._noise_log_norm = -0.5 * self.dim * LOG_2PI  # log p_n normaliser, A = I until set_noise.

    @property
    def c(self):
        """c = C_SCALE * c_raw = -log Z estimate (a tensor)."""
        return C_SCALE * self.c_raw

    def set_c(self, value):
        self.c_raw.assign(float(value) / C_SCALE)

    def set_noise(self, covariance):
        scale = noise_scale(self.noise, covariance)
        self.noise_scale.assign(scale.astype(np.float32))
        diag = np.diag(scale) if scale.ndim == 2 else scale
        # log|det A| in float64 once: a sum of logs, no under/overflow of the determinant itself.
        self._noise_log_norm = -float(np.sum(np.log(diag))) - 0.5 * len(diag) * LOG_2PI

    def noise_log_prob(self, x):
        """log p_n(x) for data x [n, D]: one triangular solve (full) or a division (diagonal)."""
        r = tf.convert_to_tensor(x, self.compute_dtype) - self.mu
        if self.noise == "full":
            z = tf.transpose(tf.linalg.triangular_solve(self.noise_scale, tf.transpose(r), lower=True))
        else:
            z = r / self.noise_scale
        return -0.5 * tf.reduce_sum(tf.square(z), axis=-1) + self._noise_log_norm

    def noise_sample(self, m):
        """(y [m, D], log p_n(y) [m]): y = mu + A eps, whose log density needs only ||eps||^2."""
        eps = tf.random.stateless_normal((m, self.dim), seed=self.next_seed(), dtype=self.compute_dtype)
        if self.noise == "full":
            y = self.mu + tf.matmul(eps, self.noise_scale, transpose_b=True)
        else:
            y = self.mu + eps * self.noise_scale
        return y, -0.5 * tf.reduce_sum(tf.square(eps), axis=-1) + self._noise_log_norm

    def noise_distribution(self):
        """p_n as a tensorflow-probability distribution (for checks; training does not use it)."""
        import tensorflow_probability as tfp

        if self.noise == "full":
            return tfp.distributions.MultivariateNormalTriL(loc=self.mu, scale_tril=self.noise_scale)
        return tfp.distributions.MultivariateNormalDiag(loc=self.mu, scale_diag=self.noise_scale)

    def loss_terms(self, x):
        m = self.noise_samples or tf.shape(x)[0]
        y, log_pn_y = self.noise_sample(m)
        loss, data_term, noise_term, accuracy = nce_loss(
            self.unnormalized_log_prob(x), self.noise_log_prob(x), self.unnormalized_log_prob(y),
            log_pn_y, self.c, self.nu)
        return {"loss": loss, "data_term": data_term, "noise_term": noise_term, "accuracy": accuracy,
                "log_z_estimate": -self.c}

    def log_z_estimate(self):
        return -float(self.c.numpy())

    def get_config(self):
        config = super().get_config()
        config.update(nu=self.nu, noise=self.noise, noise_samples=self.noise_samples)
        return config


def fit_nce(settings, data, model, writer):
    """NCE against a fixed noise (`noise`: isotropic, diagonal or full): trains an `NCEGaussian` from the
    moment-matched start; Lambda goes into model. Adaptive noise, the default, is `nce_rounds`.
    """
    estimator = NCEGaussian(model.height, model.width, settings.neighbourhood, nu=settings.nu, noise=settings.noise,
                            noise_samples=settings.noise_samples, seed=settings.seed, channels=model.channels)
    start_nce(estimator, data, settings.seed, noise_precision(settings, data.dim))
    return fit_keras_estimator(settings, data, estimator, model, writer)


def start_nce(estimator, data, seed, precision=None):
    """Sets the noise and the start of an `NCEGaussian`: with a noise precision Lambda_n, the noise
    N(mu, Lambda_n^-1) and the start Lambda = Lambda_n; without, the data's noise (`--noise`) and the
    moment-matched start. c starts where the loss is stationary in c (`balanced_c`), on 4,096 noisy
    training rows drawn with `seed`.
    """
    variances = moment_matched_start(estimator, data)
    estimator.set_noise(data.covariance() if precision is None else covariance(precision))
    if precision is not None:
        # Start at the noise model itself (G is then constant): from the diagonal start, NCE with this noise
        # ends below even the full-covariance noise's fit (BENCHMARKS.md, "energy_models/gaussian/nce.py:
        # the start at the noise model").
        sigma = np.sqrt(variances)
        estimator.precision_layer.set_dense(precision * sigma[:, None] * sigma[None, :])
    # c starts where the NCE loss is stationary in c for the starting Lambda (see `balanced_c`): the
    # normalised start's c sits hundreds of nats from it on MNIST (every data point then looks like noise),
    # and Adam moves c only ~C_SCALE * lr per step.
    estimator.set_c(balanced_c(estimator, data.noisy_train(seed)[:4096]))


def noise_precision(settings, dim):
    """Lambda_n of the Gaussian SavedModel named by `settings.noise_model` (float64 [D, D]), or None.

    Raises:
      UserError: the model cannot be loaded, is not a Gaussian of `dim` pixels, or is not positive definite.
    """
    from energy_models.errors import UserError
    from energy_models.savedmodel import load_model

    if not settings.noise_model:
        return None
    loaded = load_model(settings.noise_model)
    if not hasattr(loaded.module, "precision") or loaded.dim != dim:
        raise UserError(f"--noise-model {settings.noise_model} is not a Gaussian model of {dim} pixels; pass "
                        "a folder written by python -m train.gaussian")
    precision = np.asarray(loaded.module.precision().numpy(), np.float64)
    try:
        np.linalg.cholesky(precision)  # Succeeds exactly when a finite Lambda_n is positive definite.
        positive_definite = bool(np.all(np.isfinite(precision)))
    except np.linalg.LinAlgError:
        positive_definite = False
    if not positive_definite:
        raise UserError(f"--noise-model {settings.noise_model}: its precision is not positive definite")
    return precision


def noise_covariance(settings, data, precision=None):
    """The covariance of the full noise: the data's S, or Lambda_n^-1 of `settings.noise_model` (pass its
    `precision` when already loaded)."""
    if precision is None:
        precision = noise_precision(settings, data.dim)
    if precision is None:
        return data.covariance()
    return covariance(precision)


def covariance(precision):
    """Lambda^-1 = L^-T L^-1 (Lambda = L L^T) of a positive definite precision, float64."""
    inverse = np.linalg.inv(np.linalg.cholesky(precision))
    return inverse.T @ inverse


def balanced_c(model, x, num_noise=4096):
    """The c at which dJ/dc = 0 for the current Lambda, on data rows x and fresh noise draws.

        dJ/dc = -E_data[sigmoid(-G(x))] + nu E_noise[sigmoid(G(y))] = 0,   G = log phi + c - log p_n - log nu,

    whose left side increases with c, so bisection on c finds the root. This is the best c for a fixed
    Lambda: starting there, the optimiser spends its steps on Lambda instead of on a c that is hundreds
    of nats off.
    """
    log_nu = np.log(model.nu)
    a = np.asarray(model.unnormalized_log_prob(x) - model.noise_log_prob(x), np.float64) - log_nu
    y, log_pn_y = model.noise_sample(num_noise)
    b = np.asarray(model.unnormalized_log_prob(y) - log_pn_y, np.float64) - log_nu
    return dj_dc_root(a, b, model.nu)


def dj_dc_root(a, b, nu):
    """The c where dJ/dc = -mean sigmoid(-(a + c)) + nu mean sigmoid(b + c) = 0, by bisection (the slope
    increases with c), for a = G(x) - c on data rows and b = G(y) - c on noise rows."""
    import scipy.special

    def slope(c):
        return -np.mean(scipy.special.expit(-(a + c))) + nu * np.mean(scipy.special.expit(b + c))

    lo, hi = -1e5, 1e5
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)
