"""SavedModel export of a trained deep energy model, keeping the project's contract (`energy_models.savedmodel`).

Endpoints (x: float32 [n, D], raw pixels in [0, 1], D = height x width x channels as info() states; the
module whitens internally):

    unnormalized_log_prob(x)  log p~(x) in pixel space = DEM energy at u = W (x - mu) + log|det W|  [n]
    log_prob(x)               unnormalized_log_prob(x) - log Z, with the log Z learnt by NCE
                              (`train.dem --method nce`) or stored later from AIS (`train.score
                              --ais-steps`). A CD-trained model has none at export: log_z is NaN and
                              log_prob returns NaN; info()["log_z_source"] says which. Rank and compare
                              patches with unnormalized_log_prob, which is exact up to that constant.
    sample(n, seed)           start: n draws of the fitted Gaussian N(m, Sigma) of the training patches
                              (`train.dem` passes the 4-neighbour grid Gaussian); then `sample_sweeps`
                              block Gibbs sweeps (z ~ p(z|x), a tfp.mcmc move of x | z, eta fixed at the
                              trained step size) in model space; returned in pixel space [n, D]
    filters()                 rows of V in pixel space [hidden, D] (V W for whitened models)
    mean()                    the training patches' mean [D]
    info()                    JSON string: kind, settings, log_z (null when unknown) and its source

Everything is held as plain variables and the graphs contain only TensorFlow ops, so
`tf.saved_model.load(path)` works without this project or tensorflow-probability installed.
"""

import json
import math

import numpy as np
import tensorflow as tf

from energy_models.dem import energy as dem_energy
from energy_models.dem import gibbs as dem_gibbs


class DEMModule(tf.Module):
    """A trained `ContrastiveDivergence` model's energy, whitening and start Gaussian as a `tf.Module`.

    Args:
        model: the trained `ContrastiveDivergence`.
        gaussian_mean, gaussian_cholesky: m [D] and lower L with Sigma = L L^T, the start of `sample`.
        info: dict merged into info() (e.g. training settings and scores); its `height`, `width` and
            `channels` state the patch shape (default: square grayscale, side sqrt(D)).
        sample_sweeps: Gibbs sweeps per `sample` call.
        log_z, log_z_source: a log Z estimate known at export (NCE's) and where it comes from; without
            one, `log_prob` returns NaN until `train.score --ais-steps` stores an AIS estimate.
    """

    def __init__(self, model, gaussian_mean, gaussian_cholesky, info, sample_sweeps=100, log_z=None,
                 log_z_source=None, name="dem"):
        super().__init__(name=name)
        energy = model.energy
        dim = model.dim
        variable = lambda value, name, dtype=tf.float32: tf.Variable(  # noqa: E731
            np.asarray(value), dtype=dtype, trainable=False, name=name)
        self._V, self._W = variable(energy.effective_V, "V"), variable(energy.W, "W")
        self._b, self._c = variable(energy.b, "b"), variable(energy.c, "c")
        self._d = variable(energy.d if energy.use_bias else np.zeros(energy.hidden), "d")
        # [V; b]^T and [d; 0]: scoring gets V u + d and b^T u from one matrix product, one pass over u.
        # Stored, not formed per call: concatenating inside the compiled function makes scoring slower
        # (BENCHMARKS.md, "energy_models/dem/export.py: the stored [V; b]^T").
        self._Vb_t = variable(np.concatenate([np.asarray(energy.effective_V), np.asarray(energy.b)[None]]).T, "Vb_t")
        self._db = variable(np.append(np.asarray(self._d.numpy()), 0.0), "db")
        self._sigma = float(energy.scale)  # The learnt value when sigma was learnt.
        if model.whitening is None:
            mean, matrix, inverse, log_det = np.zeros(dim), np.eye(dim), np.eye(dim), 0.0
        else:
            w = model.whitening
            mean, matrix, inverse, log_det = w.mean, w.matrix, w.inverse_matrix, w.log_abs_det
        self._whitened = model.whitening is not None
        self._white_mean, self._white = variable(mean, "whitening_mean"), variable(matrix, "whitening")
        self._white_inverse = variable(inverse, "whitening_inverse")
        self._log_det = variable(np.float32(log_det), "log_abs_det")
        self._data_mean = variable(gaussian_mean, "mean")
        self._gauss_chol = variable(gaussian_cholesky, "gaussian_cholesky")
        self._filters = variable(model.filters(), "filters")
        self._step_size = variable(np.float32(model.step_size.numpy()), "step_size")
        self._log_z = variable(np.float32(np.nan if log_z is None else log_z), "log_z")
        self._mcmc, self._leapfrog, self._sweeps, self._dim = (model.mcmc, model.leapfrog_steps,
                                                               int(sample_sweeps), dim)
        side = math.isqrt(dim)  # Square grayscale unless the caller states the shape.
        shape = {"height": side, "width": side, "channels": 1}
        shape.update({k: int(info[k]) for k in shape if k in info})
        if shape["height"] * shape["width"] * shape["channels"] != dim:
            raise ValueError(f"info's patch shape {shape} does not hold the model's {dim} values")
        info = dict(info, kind="deep_energy_model", **shape, dim=dim,
                    hidden=energy.hidden, latents=energy.latents,
                    sigma=float(energy.scale), whitened=model.whitening is not None, mcmc=model.mcmc,
                    sample_sweeps=int(sample_sweeps), step_size=float(model.step_size.numpy()),
                    log_z=None, log_z_source="none yet: log_prob returns NaN until an AIS estimate is "
                                             "stored; use unnormalized_log_prob")
        if log_z is not None:
            info.update(log_z=float(log_z), log_z_source=log_z_source or "given at export")
        self._info = tf.Variable(json.dumps(info, sort_keys=True), trainable=False, name="info")

        spec = tf.TensorSpec([None, dim], tf.float32, name="x")
        # XLA fuses the whitening, the two layers and the softplus sum into few passes over each batch.
        self.unnormalized_log_prob = tf.function(self._unnormalized_log_prob, input_signature=[spec],
                                                 jit_compile=True)
        self.log_prob = tf.function(lambda x: self._unnormalized_log_prob(x) - self._log_z,
                                    input_signature=[spec], jit_compile=True)
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.int32, name="seed")])
        self.filters = tf.function(lambda: tf.identity(self._filters), input_signature=[])
        self.mean = tf.function(lambda: tf.identity(self._data_mean), input_signature=[])
        self.info = tf.function(lambda: tf.identity(self._info), input_signature=[])

    def _whiten(self, x):
        if not self._whitened:
            return x  # A raw model: skip an identity matmul that would cost D^2 per patch.
        return tf.matmul(x - self._white_mean, self._white, transpose_b=True)

    def _unwhiten(self, u):
        if not self._whitened:
            return u
        return tf.matmul(u, self._white_inverse, transpose_b=True) + self._white_mean

    def _logits(self, u):
        return dem_energy.latent_logits(u, self._V, self._W, self._c, self._d)

    def _joint(self, u, z):
        return dem_energy.joint_log_prob(u, z, self._V, self._W, self._b, self._c, self._sigma, self._d)

    def _unnormalized_log_prob(self, x):
        """log p~(x) = -||u||^2 / (2 sigma^2) + b^T u + sum_k S(w_k^T s(V u + d) + c_k) + log|det A|,
        u = A (x - m) (u = x for a raw model).

        V u + d and b^T u come from one product u [V; b]^T. The two row sums, ||u||^2 and the softplus
        sum, are products with a vector of ones (`dem_energy.row_sum` says why).
        """
        u = self._whiten(x)
        h = tf.matmul(u, self._Vb_t) + self._db
        hidden = h.shape[-1] - 1
        logits = tf.matmul(dem_energy.sigmoid(h[:, :hidden]), self._W, transpose_b=True) + self._c
        return (-0.5 / self._sigma ** 2 * dem_energy.row_sum(tf.square(u)) + h[:, hidden]
                + dem_energy.row_sum(dem_energy.softplus(logits)) + self._log_det)

    def _sample(self, n, seed):
        start_seed, chain_seed = tf.unstack(tf.random.experimental.stateless_split(tf.stack([seed, 0]), 2))
        eps = tf.random.stateless_normal([n, self._dim], seed=start_seed)
        x0 = self._data_mean + tf.matmul(eps, self._gauss_chol, transpose_b=True)  # Cov = L L^T
        u, _, _ = dem_gibbs.run_chains(self._whiten(x0), self._step_size, chain_seed, tf.constant(self._sweeps),
                                       self._logits, self._joint, self._mcmc, self._leapfrog, unroll=False)
        return self._unwhiten(u)
