"""`GaussianModule`: a fitted Gaussian N(mu, Lambda^-1) as a SavedModel that keeps the contract of
`energy_models.savedmodel` (with `precision()` besides), written by `energy_models.savedmodel.save_atomically`.
"""

import json

import numpy as np
import tensorflow as tf

from energy_models.gaussian.model import LOG_2PI
from energy_models.linalg.positive_definite import checked_cholesky


class GaussianModule(tf.Module):
    """A fitted Gaussian N(mu, Lambda^-1) as a self-contained `tf.Module` (dense float32 constants).

    Scoring uses the dense precision: one [n, 784] x [784, 784] matrix product, the fastest form on CPU
    and GPU for D = 784. Sampling solves L^T a = eps with the Cholesky factor Lambda = L L^T, so that
    Cov(mu + a) = L^-T L^-1 = Lambda^-1 (see `energy_models.gaussian.model.GridGaussian`).
    """

    def __init__(self, mean, precision, info, name="grid_gaussian"):
        super().__init__(name=name)
        precision = np.asarray(precision, dtype=np.float64)
        chol = checked_cholesky(precision)
        dim = precision.shape[0]
        log_z = 0.5 * dim * LOG_2PI - float(np.sum(np.log(np.diag(chol))))
        self._dim = dim
        self._mean = tf.Variable(np.asarray(mean, np.float32), trainable=False, name="mean")
        self._precision = tf.Variable(precision.astype(np.float32), trainable=False, name="precision")
        self._chol = tf.Variable(chol.astype(np.float32), trainable=False, name="cholesky")
        self._log_z = tf.Variable(np.float32(log_z), trainable=False, name="log_z")
        self._info = tf.Variable(json.dumps(dict(info, log_z=log_z)), trainable=False, name="info")

        spec = tf.TensorSpec([None, dim], tf.float32, name="x")
        self.unnormalized_log_prob = tf.function(self._unnormalized_log_prob, input_signature=[spec])
        self.log_prob = tf.function(self._log_prob, input_signature=[spec])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.int32, name="seed")])
        self.mean = tf.function(lambda: tf.identity(self._mean), input_signature=[])
        self.precision = tf.function(lambda: tf.identity(self._precision), input_signature=[])
        self.info = tf.function(lambda: tf.identity(self._info), input_signature=[])

    def _unnormalized_log_prob(self, x):
        d = x - self._mean
        return -0.5 * tf.reduce_sum(d * tf.matmul(d, self._precision), axis=-1)

    def _log_prob(self, x):
        return self._unnormalized_log_prob(x) - self._log_z

    def _sample(self, n, seed):
        eps = tf.random.stateless_normal([self._dim, n], seed=tf.stack([seed, 0]))
        # L^T a = eps  =>  a = L^-T eps, Cov(a) = Lambda^-1.
        a = tf.linalg.triangular_solve(self._chol, eps, lower=True, adjoint=True)
        return tf.transpose(a) + self._mean


def gaussian_module(model, info):
    """A `GaussianModule` from an in-memory `GridGaussian` (checks positive definiteness)."""
    info = dict(kind="grid_gaussian", height=model.height, width=model.width, channels=model.channels,
                dim=model.dim, neighbourhood=model.neighbourhood, **info)
    return GaussianModule(np.asarray(model.mu), model.precision_dense(), info)
