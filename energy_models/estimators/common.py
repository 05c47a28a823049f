"""What the stochastic estimators (NCE, cNCE, score matching) share: the positive-definiteness guard,
the moment-matched start, the optimiser, the per-epoch held-out evaluation and the `model.fit` driver.

Positive definiteness (the design decision, see `PositiveDefiniteGuard`): Lambda is left unconstrained
(every symmetric grid matrix is reachable, as the exact MLE needs) and the iterate is projected back
into {Lambda : lambda_min(Lambda) >= floor} by a diagonal shift whenever a Cholesky test fails.
"""

import time

import keras
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from energy_models import figures
from energy_models.gaussian import GridGaussian, average_log_likelihood


class EstimatorGaussian(GridGaussian):
    """A `GridGaussian` trained by `model.fit` on its own loss: the base of NCE, cNCE, score matching.

    Subclasses define `loss_terms(x)` -> dict of scalar tensors (one of them "loss") and list the
    reported names in `REPORTED`; `train_step` differentiates "loss" under `tf.GradientTape`, applies
    the gradients and updates one `keras.metrics.Mean` per reported quantity; `test_step` mirrors it
    without the update. The trained model is itself the Gaussian (Lambda and mu), so nothing is copied
    between a "trainer" and a "model".
    """

    REPORTED = ("loss",)

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.REPORTED}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def loss_terms(self, x):
        raise NotImplementedError

    def log_z_estimate(self):
        """The estimator's own estimate of log Z (None: it has none)."""
        return None

    def _report(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _unpack(self, data):
        # fit(x) on arrays delivers (x,) while a dataset of batches delivers x itself.
        if isinstance(data, (tuple, list)):
            data = data[0]
        return tf.convert_to_tensor(data, dtype=self.compute_dtype)

    def train_step(self, data):
        x = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x)
        grads = tape.gradient(terms["loss"], self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._report(terms)

    def test_step(self, data):
        return self._report(self.loss_terms(self._unpack(data)))

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


def smallest_eigenvalue_sparse(model):
    """lambda_min(Lambda) by Lanczos on the sparse Lambda (scipy `eigsh`, which="SA").

    Used only after a Cholesky test has failed, so lambda_min is the extremal negative (or tiny)
    eigenvalue, where Lanczos converges in few iterations; the dense `eigvalsh` costs ~0.9 s at D = 784
    on this 2-core machine, Lanczos tens of milliseconds.
    """
    dense = model.precision_dense()
    sparse = scipy.sparse.csr_matrix(dense)
    try:
        return float(scipy.sparse.linalg.eigsh(sparse, k=1, which="SA", tol=1e-6,
                                               return_eigenvectors=False)[0])
    except scipy.sparse.linalg.ArpackNoConvergence:
        return float(np.linalg.eigvalsh(dense)[0])


def ensure_positive_definite(model, floor):
    """Shifts the diagonal of Lambda so that lambda_min(Lambda) >= floor; returns the shift (0 if none).

    The test is a dense Cholesky (about 45 ms at D = 784 here): it succeeds exactly when Lambda is
    positive definite, and it is run on Lambda - floor I so that the floor itself is certified.
    On failure, Lambda <- Lambda + (floor - lambda_min + floor / 10) I: the couplings (and so the grid
    pattern) are untouched, every eigenvalue moves up by the same amount, and the new minimum is a tenth
    of the floor above it (margin against the Lanczos tolerance).
    """
    dense = model.precision_dense()
    if not np.all(np.isfinite(dense)):
        return 0.0  # A diverged fit is reported by `checked_cholesky` downstream, with its message.
    try:
        scipy.linalg.cholesky(dense - floor * np.eye(len(dense)), lower=True, check_finite=False)
        return 0.0
    except np.linalg.LinAlgError:
        pass
    shift = floor - smallest_eigenvalue_sparse(model) + 0.1 * floor
    layer = model.precision_layer
    layer.diagonal.assign(layer.diagonal + np.float32(shift))
    return float(shift)


def is_positive_definite(model, floor):
    """Whether lambda_min(Lambda) >= floor, by a dense Cholesky of Lambda - floor I (~45 ms at D = 784)."""
    dense = model.precision_dense()
    if not np.all(np.isfinite(dense)):
        return False
    try:
        scipy.linalg.cholesky(dense - floor * np.eye(len(dense)), lower=True, check_finite=False)
        return True
    except np.linalg.LinAlgError:
        return False


class PositiveDefiniteGuard(keras.callbacks.Callback):
    """Keeps Lambda positive definite during `model.fit` by step control: test, then backtrack.

    Every `every` optimiser steps, at every epoch end and at the end of training, Lambda is tested with
    `is_positive_definite(model, floor)` (a Cholesky of Lambda - floor I: it succeeds exactly when
    lambda_min >= floor). On success the weights are remembered; on failure they are restored to the
    last weights that passed, and the learning rate is multiplied by `shrink`. So the iterates walk
    towards the estimator's optimum while it lies inside the cone, and stop just inside the boundary
    (with ever smaller steps) when the optimum lies outside it, as it does on MNIST for score matching
    and NCE at small nu. Between tests an iterate may briefly leave the cone; the NCE, cNCE and SM losses
    are finite there (they need no log det), and every precision that is evaluated, sampled or exported
    has passed the test.

    Measured alternative (see bench/estimators.md): projecting by a diagonal shift
    Lambda + (floor - lambda_min) I (`ensure_positive_definite`) keeps the couplings but for score
    matching on MNIST shifted the diagonal by ~4 a hundred times and ended at a held-out log-likelihood
    of -247 nats, against 362.5 for the MLE. A log-det barrier needs Lambda^-1 (a dense Cholesky) at
    every step and biases interior optima; diagonal dominance cannot reach the MLE (38% of its rows
    are not dominant).

    Attributes:
      corrections: how many times the weights were restored; seconds: time spent testing.
    """

    def __init__(self, floor=1e-2, every=20, shrink=0.5):
        super().__init__()
        self.floor, self.every, self.shrink = float(floor), int(every), float(shrink)
        self.corrections, self.seconds, self._saved = 0, 0.0, None

    def _weights(self):
        return [np.array(v) for v in self.model.trainable_variables]

    def _check(self):
        start = time.perf_counter()
        if is_positive_definite(self.model, self.floor):
            self._saved = self._weights()
        elif self._saved is not None:
            for variable, value in zip(self.model.trainable_variables, self._saved):
                variable.assign(value)
            self.corrections += 1
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None:
                optimizer.learning_rate.assign(optimizer.learning_rate * self.shrink)
        else:  # Not PD before any iterate passed: the start itself is bad; shift it into the cone.
            ensure_positive_definite(self.model, self.floor)
            self.corrections += 1
            self._saved = self._weights()
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        if self.every > 0 and (batch + 1) % self.every == 0:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()
        if logs is not None:
            logs["pd_corrections"] = self.corrections

    def on_train_end(self, logs=None):
        self._check()


class HeldOutEvaluation(keras.callbacks.Callback):
    """Per epoch: held-out log-likelihood, log Z analytic (and the estimate), lambda_min, 64 samples.

    Written with `writer` (TensorBoard, run_dir/train) at step = epoch + 1. Runs after the
    `PositiveDefiniteGuard` (callbacks run in list order), so Lambda is positive definite here.
    """

    def __init__(self, test, writer, seed=0, n_test=10_000):
        super().__init__()
        self.test, self.writer, self.seed = test[:n_test], writer, int(seed)
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        log_z = model.log_normalizer()
        row = {"epoch": epoch + 1, "heldout_log_likelihood": average_log_likelihood(model, self.test),
               "log_z_analytic": log_z,
               "smallest_eigenvalue": smallest_eigenvalue_sparse(model)}
        estimate = model.log_z_estimate() if hasattr(model, "log_z_estimate") else None
        if estimate is not None:
            row["log_z_estimate"] = estimate
            row["log_z_error"] = estimate - log_z
        self.history.append(row)
        with self.writer.as_default(step=epoch + 1):
            for key, value in row.items():
                if key != "epoch":
                    tf.summary.scalar(f"epoch_{key}", value)
            grid = figures.image_grid(model.sample(64, seed=self.seed))
            tf.summary.image("epoch_samples", grid[None, :, :, None])
        self.writer.flush()
        if logs is not None:
            logs["heldout_log_likelihood"] = row["heldout_log_likelihood"]


def make_optimizer(name, learning_rate):
    """The Keras optimiser named by --optimizer."""
    return {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
            "adam": keras.optimizers.Adam}[name](learning_rate=learning_rate)


def moment_matched_start(model, data):
    """Lambda <- diag(1 / S_ii), the exact diagonal maximum-likelihood precision (couplings 0).

    Every estimator starts here: it is positive definite, has the right scale per pixel (S_ii spans
    0.01, noise only, to ~0.2), and needs only the per-pixel variances of the data.
    """
    variances = np.var(data.train_pixels, axis=0, dtype=np.float64) + data.noise_std ** 2
    layer = model.precision_layer
    layer.diagonal.assign((1.0 / variances).reshape(layer.diagonal.shape).astype(np.float32))
    layer.couplings.assign(np.zeros(layer.couplings.shape, np.float32))
    return variances


def fit_keras_estimator(config, data, estimator, target, writer, verbose="auto"):
    """Runs `estimator.fit` on fresh-noise MNIST batches and copies Lambda into `target`.

    Args:
      config: the `GaussianConfig` (epochs, batch_size, optimizer, learning_rate, seed, pd_floor,
        pd_check_every, run_dir).
      data: the `NoisyMnist`.
      estimator: a compiled-able GridGaussian subclass with its own `train_step`.
      target: the `GridGaussian` that `train_and_evaluate` evaluates; receives the trained Lambda.
      writer: TensorBoard writer of run_dir/train.

    Returns:
      The extras dict for metrics.json (epoch history, PD-guard statistics, log Z estimate).
    """
    estimator.set_mean(data.mean)
    estimator.compile(optimizer=make_optimizer(config.optimizer, config.learning_rate))
    guard = PositiveDefiniteGuard(config.pd_floor, config.pd_check_every)
    held_out = HeldOutEvaluation(data.test, writer, config.seed)
    callbacks = [guard, held_out]
    if config.run_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=config.run_dir, update_freq=50,
                                                     write_graph=False))
    steps = max(1, len(data.train_pixels) // config.batch_size)
    history = estimator.fit(data.training_dataset(config.batch_size, config.seed), epochs=config.epochs,
                            steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=verbose)
    target.precision_layer.set_precision(np.asarray(estimator.precision_layer.diagonal),
                                         np.asarray(estimator.precision_layer.couplings))
    last = {k: float(v[-1]) for k, v in history.history.items()}
    return {"log_z_estimate": estimator.log_z_estimate(), "final_train_metrics": last,
            "pd_corrections": guard.corrections,
            "pd_check_seconds": guard.seconds, "epochs_held_out": held_out.history}
