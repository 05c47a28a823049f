"""`EstimatorGaussian`, the base of the stochastic estimators (NCE, cNCE, score matching), and the
moment-matched start they all begin from. They train by `trainer.fit_keras_estimator`.

Conditioning (see `EstimatorGaussian`): the trainable weights are the STANDARDISED precision
Lambda~ = diag(sigma) Lambda diag(sigma), sigma_i^2 = S_ii fixed from the training data, started at
Lambda~ = I (the diagonal MLE). Lambda~ has entries of order 1 (Lambda_ii itself spans ~15..100), so
Adam's per-parameter step of ~lr suits every entry. This re-parameterises theta only: every loss is
still computed on x in the original coordinates, so the estimators (and their optima) are unchanged.

Positive definiteness (`pd_guard.PositiveDefiniteGuard`): Lambda~ is unconstrained (every symmetric grid
matrix is reachable, as the exact MLE needs); a step that leaves {lambda_min(Lambda~) >= floor} is
projected back, or shortened towards the last feasible point.
"""


import keras
import numpy as np
import tensorflow as tf

from energy_models.gaussian.model import GridGaussian
from energy_models.training.distribute import replica_share, track
from energy_models.training.seeding import replica_seed


class EstimatorGaussian(GridGaussian):
    """A `GridGaussian` trained by `model.fit` on its own loss: the base of NCE, cNCE, score matching.

    Subclasses define `loss_terms(x)` -> dict of scalar tensors (one of them "loss") and list the
    reported names in `REPORTED`; `train_step` differentiates "loss" under `tf.GradientTape`, applies
    the gradients and updates one `keras.metrics.Mean` per reported quantity; `test_step` mirrors it
    without the update. The trained model is itself the Gaussian (Lambda and mu), so nothing is copied
    between a "trainer" and a "model" (the driver copies Lambda into the evaluated model at the end).

    The precision layer holds the standardised precision Lambda~; the model's Lambda is

        Lambda = diag(1 / sigma) Lambda~ diag(1 / sigma),
        log phi(x) = -(x - mu)^T Lambda (x - mu) / 2 = -x~^T Lambda~ x~ / 2,   x~ = (x - mu) / sigma,

    with the fixed per-pixel scales `inv_sigma` = 1 / sigma (`set_scales`; ones by default, so that
    Lambda~ = Lambda). `precision_dense`, `log_normalizer` and `sample` all use Lambda.
    """

    REPORTED = ("loss",)

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.inv_sigma = self.add_weight(name="inv_sigma", shape=(self.dim,), initializer="ones",
                                         trainable=False)
        self.seed = int(seed)
        # A counter, not a keras.random.SeedGenerator: it is a weight, so checkpoints carry it and a
        # resumed run continues the same stream of noise (a SeedGenerator's state is not saved).
        self.draws = self.add_weight(name="draws", shape=(), dtype="int64", initializer="zeros",
                                     trainable=False, aggregation="only_first_replica")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.REPORTED}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def next_seed(self):
        """A fresh stateless seed [2]: (seed, draw counter), folded with the replica's index so that
        replicas under a `tf.distribute` strategy draw different noise. Advances the counter."""
        self.draws.assign_add(1)
        return replica_seed(self.seed, self.draws)

    def set_scales(self, variances):
        """Fixes sigma_i = sqrt(variances_i), the standardisation of the parameters."""
        self.inv_sigma.assign((1.0 / np.sqrt(np.asarray(variances, np.float64))).astype(np.float32))

    def standardize(self, x):
        """x~ = (x - mu) / sigma for x [n, D]."""
        x = tf.convert_to_tensor(x, dtype=self.compute_dtype)
        return (x - self.mu) * self.inv_sigma

    def unnormalized_log_prob(self, x):
        """-(x - mu)^T Lambda (x - mu) / 2 = -x~^T Lambda~ x~ / 2 for x [n, D]: shape [n]."""
        return -self.precision_layer(self.standardize(x))

    def standardized_precision_dense(self):
        """Lambda~, float64 [D, D]: what the positive-definiteness guard tests."""
        return self.precision_layer.dense()

    def precision_dense(self):
        """Lambda = diag(1/sigma) Lambda~ diag(1/sigma), float64 [D, D]."""
        d = np.asarray(self.inv_sigma, dtype=np.float64)
        return self.precision_layer.dense() * d[:, None] * d[None, :]

    def loss_terms(self, x):
        raise NotImplementedError

    def log_z_estimate(self):
        """The estimator's own estimate of log Z (None: it has none)."""
        return None

    def _unpack(self, data):
        # fit(x) on arrays delivers (x,) while a dataset of batches delivers x itself.
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return tf.convert_to_tensor(x, dtype=self.compute_dtype)

    def train_step(self, data):
        x = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x)
            share = replica_share(terms["loss"])  # The update of the global-batch mean under tf.distribute.
        grads = tape.gradient(share, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return track(self.trackers, terms)

    def test_step(self, data):
        return track(self.trackers, self.loss_terms(self._unpack(data)))

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


def moment_matched_start(model, data):
    """sigma_i^2 <- S_ii and Lambda~ <- I, i.e. Lambda = diag(1 / S_ii), the exact diagonal MLE.

    Every estimator starts here: it is positive definite, has the right scale per pixel (S_ii spans
    0.01, noise only, to ~0.2), and needs only the per-pixel variances of the data.
    """
    # diag(S) of the data the estimator sees (for MNIST, the noise variance is included in S).
    variances = np.diag(data.covariance()).copy()
    model.set_scales(variances)
    layer = model.precision_layer
    layer.diagonal.assign(np.ones(layer.diagonal.shape, np.float32))
    layer.couplings.assign(np.zeros(layer.couplings.shape, np.float32))
    return variances
