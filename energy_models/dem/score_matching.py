"""Score matching for the deep energy model: exact (Hyvarinen 2005) and denoising (Vincent 2011).

For log p~(u) = -||u||^2 / (2 sigma^2) + b^T u + sum_k S(h_k), h = W g + c, g = s(a), a = V u + d,
the score psi(u) = grad_u log p~(u) has the closed form

    psi(u) = -u / sigma^2 + b + V^T (s'(a) * q),     q = W^T s(h),   s'(a) = g (1 - g),

and so has the Laplacian (the trace of the Hessian), with s''(a) = s'(a) (1 - 2 g):

    Delta log p~(u) = -D / sigma^2 + sum_j s''(a_j) q_j ||v_j||^2 + sum_k s'(h_k) ||sum_j W_kj s'(a_j) v_j||^2.

Neither needs the normalising constant or MCMC. The objectives, per batch of whitened patches u:

    sm   J = mean_n [ Delta log p~(u_n) + ||psi(u_n)||^2 / 2 ]                    (exact score matching)
    dsm  J = mean_n ||s psi(u_n + s eps_n) + eps_n||^2 / 2,  eps_n ~ N(0, I)       (denoising, noise std s)

Denoising score matching fits the density of the data convolved with N(0, s^2 I); it is the default
because exact score matching of this model let V grow without bound on whitened patches (the Laplacian
rewards large ||v_j|| where s''(a) q < 0), while the denoising objective is bounded below by the noise.
Multiplying by s^2 keeps the loss of order D/2 whatever s (Song and Ermon's weighting).

The trainer is a `DeepEnergyModel` (whitening, seed counter, trackers, sampling, export) and draws no
chains. Logged: loss, energy_data (-log p~ of the batch in
pixel space), energy_negatives (of the noisy batch for dsm; of the batch for sm), grad_norm.

References: Hyvarinen, "Estimation of non-normalized statistical models by score matching", JMLR (2005);
Vincent, "A connection between score matching and denoising autoencoders", Neural Computation (2011);
Koster and Hyvarinen, "A two-layer model of natural stimuli estimated with score matching", Neural
Computation (2010).
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.dem.energy import sigmoid
from energy_models.dem.model import DeepEnergyModel

SM_METRICS = ("loss", "energy_data", "energy_negatives", "grad_norm")


def score(u, V, W, b, c, sigma, d=None):
    """psi(u) = grad_u log p~(u) [n, D] in closed form (module docstring)."""
    a = tf.matmul(u, V, transpose_b=True)
    g = sigmoid(a if d is None else a + d)
    q = tf.matmul(sigmoid(tf.matmul(g, W, transpose_b=True) + c), W)  # [n, hidden]
    return -u / sigma ** 2 + b + tf.matmul(g * (1.0 - g) * q, V)


def laplacian(u, V, W, b, c, sigma, d=None):
    """Delta log p~(u) [n], the trace of the Hessian of log p~ (module docstring).

    The second sum is a quadratic form in the Gram matrix G = V V^T: ||sum_j A_kj v_j||^2 = A_k G A_k^T
    with A_kj = W_kj s'(a_j), so it costs n K hidden^2 rather than n K hidden D.
    """
    a = tf.matmul(u, V, transpose_b=True)
    g = sigmoid(a if d is None else a + d)
    ds = g * (1.0 - g)  # s'(a)
    h_sig = sigmoid(tf.matmul(g, W, transpose_b=True) + c)  # s(h) [n, K]
    q = tf.matmul(h_sig, W)  # [n, hidden]
    gram = tf.matmul(V, V, transpose_b=True)  # [hidden, hidden]
    first = tf.reduce_sum(ds * (1.0 - 2.0 * g) * q * tf.linalg.diag_part(gram), axis=-1)
    A = W[None] * ds[:, None, :]  # [n, K, hidden]
    quad = tf.reduce_sum(tf.matmul(A, gram) * A, axis=-1)  # [n, K]
    second = tf.reduce_sum(h_sig * (1.0 - h_sig) * quad, axis=-1)
    dim = tf.cast(tf.shape(u)[-1], u.dtype)
    return -dim / sigma ** 2 + first + second


@keras.saving.register_keras_serializable(package="energy_models")
class DEMScoreMatching(DeepEnergyModel):
    """Trains a `DEMEnergy` by exact (`noise_std=0`) or denoising score matching (module docstring).

    Args:
        energy: the `DEMEnergy` layer.
        noise_std: s, the std of the denoising noise in model (whitened) units; 0 for exact score matching.
        **kwargs: passed to `DeepEnergyModel` (dim, whitening, the MCMC settings used by `sample`, seed...).

    Raises:
        ValueError: noise_std is negative or not finite.
    """

    METRIC_NAMES = SM_METRICS

    def __init__(self, energy, noise_std=0.3, **kwargs):
        super().__init__(energy, **kwargs)
        if not (np.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a number >= 0, got noise_std={noise_std!r}")
        self.noise_std = float(noise_std)

    def objective(self, u, seed):
        """(J, log p~ of u, log p~ of the noisy u) for model-space rows u [n, D] (module docstring)."""
        params = self.energy.params
        if self.noise_std == 0:
            psi = score(u, *params)
            loss = tf.reduce_mean(laplacian(u, *params) + 0.5 * tf.reduce_sum(tf.square(psi), axis=-1))
            return loss, self.energy(u), self.energy(u)
        eps = tf.random.stateless_normal(tf.shape(u), seed=seed)
        noisy = u + self.noise_std * eps
        residual = self.noise_std * score(noisy, *params) + eps
        loss = 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(residual), axis=-1))
        return loss, self.energy(u), self.energy(noisy)

    def _report_sm(self, loss, log_p_u, log_p_noisy, grad_norm):
        log_det = self._log_det()
        return self._track({"loss": loss, "energy_data": -tf.reduce_mean(log_p_u) - log_det,
                            "energy_negatives": -tf.reduce_mean(log_p_noisy) - log_det, "grad_norm": grad_norm})

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        seed = self._next_seeds(1)[0]
        u = self.to_model_space(x)
        values, grad_norm = self._descend(lambda: self.objective(u, seed), self.energy.trainable_weights)
        return self._report_sm(*values, grad_norm)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, log_p_u, log_p_noisy = self.objective(self.to_model_space(x), self._next_seeds(1)[0])
        return self._report_sm(loss, log_p_u, log_p_noisy, tf.constant(np.nan, tf.float32))

    def get_config(self):
        return {**super().get_config(), "noise_std": self.noise_std}
