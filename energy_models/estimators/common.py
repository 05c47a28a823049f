"""What the stochastic estimators (NCE, cNCE, score matching) share: the positive-definiteness guard,
the moment-matched start, the optimiser, the per-epoch held-out evaluation and the `model.fit` driver.

Conditioning (see `EstimatorGaussian`): the trainable weights are the STANDARDISED precision
Lambda~ = diag(sigma) Lambda diag(sigma), sigma_i^2 = S_ii fixed from the training data, started at
Lambda~ = I (the diagonal MLE). Lambda~ has entries of order 1 (Lambda_ii itself spans ~15..100), so
Adam's per-parameter step of ~lr suits every entry. This re-parameterises theta only: every loss is
still computed on x in the original coordinates, so the estimators (and their optima) are unchanged.

Positive definiteness (see `PositiveDefiniteGuard`): Lambda~ is unconstrained (every symmetric grid
matrix is reachable, as the exact MLE needs); a step that leaves {lambda_min(Lambda~) >= floor} is
shortened towards the last feasible point (backtracking line search on the parameters).
"""

import time
import warnings

import keras
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from energy_models import figures
from energy_models.console import progress_verbosity
from energy_models.gaussian import GridGaussian, average_log_likelihood
from energy_models.distribute import replica_share, step_logs
from energy_models.seeding import replica_seed
from energy_models.tensorboard import TensorBoard, epoch_summaries


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

    def _report(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return step_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def _unpack(self, data):
        # fit(x) on arrays delivers (x,) while a dataset of batches delivers x itself.
        if isinstance(data, (tuple, list)):
            data = data[0]
        return tf.convert_to_tensor(data, dtype=self.compute_dtype)

    def train_step(self, data):
        x = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x)
            share = replica_share(terms["loss"])  # The update of the global-batch mean under tf.distribute.
        grads = tape.gradient(share, self.trainable_variables)
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
    dense = _guarded_dense(model)
    if not np.all(np.isfinite(dense)):
        return 0.0  # A diverged fit is reported by `checked_cholesky` downstream, with its message.
    try:
        scipy.linalg.cholesky(dense - floor * np.eye(len(dense)), lower=True, check_finite=False)
        return 0.0
    except np.linalg.LinAlgError:
        pass
    shift = floor - float(np.linalg.eigvalsh(dense)[0]) + 0.1 * floor
    layer = model.precision_layer
    layer.diagonal.assign(layer.diagonal + np.float32(shift))
    return float(shift)


def _guarded_dense(model):
    """The matrix the guard keeps positive definite: Lambda~ for an `EstimatorGaussian`, else Lambda."""
    return getattr(model, "standardized_precision_dense", model.precision_dense)()


def is_positive_definite(model, floor):
    """Whether lambda_min >= floor of Lambda~ (Lambda for a plain `GridGaussian`), by a Cholesky.

    Row-major pixel numbering makes every grid precision a band matrix of half-bandwidth u = W + 1
    (the farthest neighbour, down-right, is W + 1 pixels on), so a banded Cholesky (LAPACK pbtrf via
    `scipy.linalg.cholesky_banded`, O(D u^2)) of Lambda~ - floor I decides it: about 0.1 ms at D = 784
    with one OpenBLAS thread, against ~14 ms for the dense Cholesky. It succeeds exactly when the
    matrix is positive definite.
    """
    layer = model.precision_layer
    if isinstance(model, EstimatorGaussian):
        return band_is_positive_definite(layer.pattern, np.asarray(layer.diagonal),
                                         np.asarray(layer.couplings), floor)
    diag, couplings = layer.pattern.from_dense(model.precision_dense())
    return band_is_positive_definite(layer.pattern, diag, couplings, floor)


def band_is_positive_definite(pattern, diag, couplings, floor):
    """Whether the grid matrix (diag [H, W], couplings [n_offsets, H, W]) minus floor I is PD."""
    u = max(pattern.bandwidth, pattern.width + 1)  # W + 1; (W + 1) C with C channels.
    band = np.zeros((u + 1, pattern.dim))
    # Upper banded storage band[u + i - j, j] = A[i, j], i <= j; pattern.rows < pattern.cols always.
    band[u] = np.asarray(diag, dtype=np.float64).reshape(-1) - floor
    band[u + pattern.rows - pattern.cols, pattern.cols] = pattern.couplings_to_edges(couplings)
    if not np.all(np.isfinite(band)):
        return False
    try:
        scipy.linalg.cholesky_banded(band, lower=False, check_finite=False)
        return True
    except np.linalg.LinAlgError:
        return False


class PositiveDefiniteGuard(keras.callbacks.Callback):
    """Keeps Lambda positive definite during `model.fit` by step control: test, then project or backtrack.

    mode="project" (default): a step that fails the test is projected back onto the set along the
    normals of its violated eigenvalues, in the optimiser's metric (`_project`); backtracking (below)
    is its fallback. mode="backtrack": backtracking only. Measured on MNIST score matching: backtracking
    alone jams at the boundary (from a point just inside it, every step that points outwards is cut to
    almost nothing: ~18 halvings per failure, test LL 307 after 5 epochs against 352.9 for the exact
    constrained optimum), because it keeps only the feasible fraction of the whole step, tangential
    part included; projection keeps the tangential part.

    Every `every` optimiser steps, at every epoch end and at the end of training, the standardised
    precision Lambda~ (see `EstimatorGaussian`) is tested with a Cholesky of Lambda~ - floor I, which
    succeeds exactly when lambda_min(Lambda~) >= floor. On success the parameters theta (every trainable
    variable) are remembered as theta_prev. On failure the step is shortened along the segment,

        theta <- theta_prev + 2^-k (theta - theta_prev),    k = 1, 2, ..., max_halvings,

    until the test passes (theta_prev itself if none does). The set {lambda_min >= floor} is convex and
    Lambda is linear in theta, so every point of the segment close enough to theta_prev is inside it: the
    backtracked iterate is feasible, keeps the part of the step that fits, and the next step starts from
    there. The learning rate and the optimiser's state are NOT touched (an earlier version halved the
    learning rate on every failure and froze training after ~15 failures). When the estimator's optimum
    lies outside the cone (score matching on MNIST, whose optimum over the pattern has lambda_min = -3.9)
    the iterates slide along the boundary towards the constrained optimum, which is unique because every
    objective here is convex in theta; a decaying learning rate (`make_optimizer`) lets them settle there.
    Between tests an iterate may briefly leave the cone; the NCE, cNCE and SM losses are finite there
    (they need no log det), and every precision that is evaluated, sampled or exported has passed.

    Measured alternatives (bench/estimators.md): a diagonal shift Lambda + (floor - lambda_min) I moved
    score matching far from its optimum (held-out log-likelihood -247 against 362.5); a log-det barrier
    needs Lambda^-1 at every step and biases interior optima; diagonal dominance cannot reach the MLE
    (38% of its rows are not dominant).

    Args:
      floor: the smallest eigenvalue kept, in standardised units (Lambda~ = diag(sigma) Lambda diag(sigma);
        the MLE's Lambda~ has lambda_min 0.0093 at 4 neighbours, so the default 1e-3 is below it).
      every: optimiser steps between tests.
      max_halvings: backtracking halvings before falling back to theta_prev.

    Attributes:
      failures: tests that failed (each followed by a backtrack); halvings: total halvings;
      seconds: time spent testing and backtracking.
    """

    def __init__(self, floor=1e-3, every=1, max_halvings=20, mode="project", eigenpairs=16,
                 margin=0.05, max_rounds=10):
        super().__init__()
        if mode not in ("project", "backtrack"):
            raise ValueError(f"mode must be 'project' or 'backtrack', got mode={mode!r}")
        self.floor, self.every, self.max_halvings = float(floor), int(every), int(max_halvings)
        self.mode, self.eigenpairs, self.margin = mode, int(eigenpairs), float(margin)
        self.max_rounds = int(max_rounds)
        self.failures, self.halvings, self.projections = 0, 0, 0
        self.seconds, self._saved, self._vecs = 0.0, None, None

    @property
    def corrections(self):
        return self.failures

    def _weights(self):
        return [np.array(v) for v in self.model.trainable_variables]

    def _assign(self, values):
        for variable, value in zip(self.model.trainable_variables, values):
            variable.assign(value)

    def _feasible(self, values):
        """The PD test on candidate weights held in NumPy (no variable writes while backtracking)."""
        layer = self.model.precision_layer
        paths = [v.path for v in self.model.trainable_variables]
        diag = values[paths.index(layer.diagonal.path)]
        couplings = values[paths.index(layer.couplings.path)] * layer.pattern.masks
        return band_is_positive_definite(layer.pattern, diag, couplings, self.floor)

    def _metric(self, index):
        """Adam's / RMSprop's per-parameter scale sqrt(v) for trainable variable `index` (ones if none).

        Projecting in the optimiser's own metric is what makes the projected iteration's fixed points the
        constrained optimum (KKT: the gradient is a multiple of the active constraints' normals) rather
        than a point biased by the per-parameter step sizes.
        """
        optimizer = getattr(self.model, "optimizer", None)
        variable = self.model.trainable_variables[index]
        velocities = getattr(optimizer, "_velocities", None)
        if not velocities:
            return np.ones(variable.shape)
        v = np.asarray(velocities[optimizer._get_variable_index(variable)], dtype=np.float64)
        return np.sqrt(np.maximum(v, 0.0)) + 1e-12

    def _lowest_eigenpairs(self, pattern, diag, edges):
        """The lowest eigenpairs of the grid matrix: LOBPCG on the sparse matrix, warm-started from the
        previous call's eigenvectors (a few ms; the banded LAPACK solver took ~0.3 s at D = 784)."""
        import scipy.sparse
        import scipy.sparse.linalg

        d = pattern.dim
        k = min(self.eigenpairs, d)
        if d < 5 * k:  # Small grids (LOBPCG needs D >> k): the dense solver is exact and instant.
            lam, vec = np.linalg.eigh(pattern.dense(diag.reshape(pattern.map_shape),
                                                    pattern.edges_to_couplings(edges)))
            return lam[:k], vec[:, :k]
        matrix = scipy.sparse.csr_matrix(
            (np.concatenate([diag, edges, edges]),
             (np.concatenate([np.arange(d), pattern.rows, pattern.cols]),
              np.concatenate([np.arange(d), pattern.cols, pattern.rows]))), shape=(d, d))
        if self._vecs is None or self._vecs.shape != (d, k):
            self._vecs = np.random.default_rng(0).standard_normal((d, k))
        # Residual tolerance 1e-4: an eigenvalue's error is of the order of the squared residual
        # (~1e-8, far below the floor's margin); 1e-7 never converged in 40 iterations and took 4x as
        # long per call (bench/estimators.md). LOBPCG's "not reaching the tolerance" warnings are noise
        # here: the projected point is tested again by the Cholesky in `_project`'s loop.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lam, vec = scipy.sparse.linalg.lobpcg(matrix, self._vecs, largest=False, tol=1e-4,
                                                  maxiter=40)
        self._vecs = vec
        return lam, vec

    def _project(self, values):
        """Moves the Lambda~ weights onto {lambda_min(Lambda~) >= floor}, or returns None on failure.

        Each round takes the eigenpairs (lambda_k, v_k) of Lambda~ below target = floor (1 + margin)
        (banded LAPACK eigensolver, `scipy.linalg.eig_banded`), whose gradients on the pattern are
        n_k = (v_k,i^2 on the diagonal, 2 v_k,i v_k,j on the edges), and solves for the smallest step,
        in the metric M = diag(sqrt(v_adam)), that lifts all of them to target to first order:

            delta = M^-1 N^T alpha,   (N M^-1 N^T) alpha = target - lambda.

        lambda_min is concave in theta, so one round can fall short; a few rounds reach the set.
        """
        layer = self.model.precision_layer
        pattern = layer.pattern
        paths = [v.path for v in self.model.trainable_variables]
        i_diag, i_coup = paths.index(layer.diagonal.path), paths.index(layer.couplings.path)
        inv_m = np.concatenate([1.0 / self._metric(i_diag).reshape(-1),
                                pattern.couplings_to_edges(1.0 / self._metric(i_coup))])
        values = list(values)
        target = self.floor * (1.0 + self.margin)
        d = pattern.dim
        for _ in range(self.max_rounds):
            diag = values[i_diag].reshape(-1).astype(np.float64)
            edges = pattern.couplings_to_edges(values[i_coup].astype(np.float64))
            if band_is_positive_definite(pattern, diag, pattern.edges_to_couplings(edges),
                                         self.floor):
                return values
            lam, vec = self._lowest_eigenpairs(pattern, diag, edges)
            low = lam < target
            if not np.any(low):  # The eigensolver missed the violation: let backtracking handle it.
                return None
            lam, vec = lam[low], vec[:, low]
            normals = np.concatenate([vec ** 2, 2.0 * vec[pattern.rows] * vec[pattern.cols]]).T
            gram = (normals * inv_m) @ normals.T
            alpha = np.linalg.lstsq(gram, target - lam, rcond=None)[0]
            delta = inv_m * (normals.T @ alpha)
            diag = diag + delta[:d]
            edges = edges + delta[d:]
            values[i_diag] = diag.reshape(values[i_diag].shape).astype(values[i_diag].dtype)
            values[i_coup] = pattern.edges_to_couplings(edges).astype(values[i_coup].dtype)
            self.projections += 1
        return None

    def _check(self):
        start = time.perf_counter()
        proposed = self._weights()
        if not all(np.all(np.isfinite(v)) for v in proposed):
            return  # Diverged: `checkpoints.DivergenceGuard` stops training and restores the last good state.
        if self._feasible(proposed):
            self._saved = proposed
        elif self._saved is None:  # Not PD before any iterate passed: shift the start into the cone.
            ensure_positive_definite(self.model, self.floor)
            self.failures += 1
            self._saved = self._weights()
        else:
            self.failures += 1
            chosen = self._project(proposed) if self.mode == "project" else None
            if chosen is None:  # Backtracking: the last feasible point is always a fallback.
                chosen = self._saved
                for k in range(1, self.max_halvings + 1):
                    self.halvings += 1
                    t = 0.5 ** k
                    trial = [p + t * (q - p) for p, q in zip(self._saved, proposed)]
                    if self._feasible(trial):
                        chosen = trial
                        break
            self._assign(chosen)
            self._saved = chosen
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):
        self._check()

    def on_epoch_begin(self, epoch, logs=None):
        # LOBPCG's warm start is history: forgetting it at every epoch makes a run resumed at an epoch
        # boundary project exactly as the uninterrupted one (its answer depends on the start at the
        # solver's tolerance).
        self._vecs = None

    def on_train_batch_end(self, batch, logs=None):
        if self.every > 0 and (batch + 1) % self.every == 0:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()
        if logs is not None:
            logs["pd_failures"] = self.failures

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
        with epoch_summaries(self.writer, epoch + 1):
            for key, value in row.items():
                if key != "epoch":
                    tf.summary.scalar(f"epoch_{key}", value)
            grid = figures.image_grid(model.sample(64, seed=self.seed), size=(model.height, model.width, model.channels))
            tf.summary.image("epoch_samples", figures.summary_image(grid))
        self.writer.flush()
        if logs is not None:
            logs["heldout_log_likelihood"] = row["heldout_log_likelihood"]


def make_optimizer(name, learning_rate, total_steps=None):
    """The Keras optimiser named by --optimizer, its learning rate on a cosine decay over total_steps.

    The decay (to 1% of the start) is what lets a stochastic iterate settle: with a constant rate, Adam
    keeps moving every parameter by ~lr per step around the optimum (or along the PD boundary).
    """
    if total_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, int(total_steps),
                                                                alpha=0.01)
    return {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
            "adam": keras.optimizers.Adam}[name](learning_rate=learning_rate)


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


def fit_keras_estimator(config, data, estimator, target, writer, verbose="auto", *, epochs=None,
                        learning_rate=None, first_epoch=0, checkpoint_dir=None, log_dir=None):
    """Runs `estimator.fit` on fresh-noise batches, resumably, and copies Lambda into `target`.

    Training state is checkpointed in RUN_DIR/checkpoints every `config.checkpoint_every` epochs
    (`energy_models.checkpoints`); a run directory that already holds checkpoints continues from the
    newest one, with the batches the uninterrupted run would have seen. A non-finite loss or parameter
    stops training with `checkpoints.DivergenceGuard`'s message (a `UserError`), keeping the last good
    checkpoint and exporting nothing.

    Args:
      config: the `GaussianConfig` (epochs, batch_size, optimizer, learning_rate, seed, pd_floor,
        pd_check_every, pd_mode, checkpoint_every, run_dir).
      data: the `NoisyMnist` or `ArrayData`.
      estimator: a compiled-able GridGaussian subclass with its own `train_step`.
      target: the `GridGaussian` that `train_and_evaluate` evaluates; receives the trained Lambda.
      writer: TensorBoard writer of run_dir/train.
      epochs, learning_rate: this fit's epochs and starting learning rate (default: the config's).
      first_epoch: the epoch this fit starts at on a time axis shared by several fits (the rounds of
        adaptive NCE): it trains epochs first_epoch + 1 .. first_epoch + epochs, whose batches and
        TensorBoard steps are those epochs'.
      checkpoint_dir, log_dir: where its checkpoints and Keras TensorBoard logs go (default:
        RUN_DIR/checkpoints and RUN_DIR).

    Returns:
      The extras dict for metrics.json (epoch history, PD-guard statistics, log Z estimate).

    Raises:
      UserError: training diverged.
    """
    import pathlib

    from energy_models.checkpoints import DivergenceGuard, TrainingCheckpoint
    from energy_models.data.batches import steps_per_epoch
    from energy_models.errors import UserError

    epochs = config.epochs if epochs is None else int(epochs)
    learning_rate = config.learning_rate if learning_rate is None else float(learning_rate)
    run_dir = pathlib.Path(config.run_dir)
    estimator.set_mean(data.mean)
    steps = steps_per_epoch(len(data.train_pixels), config.batch_size)
    estimator.compile(optimizer=make_optimizer(config.optimizer, learning_rate, steps * epochs))
    checkpoint = TrainingCheckpoint(checkpoint_dir or run_dir / "checkpoints", config.checkpoint_every)
    # A checkpoint's number is the epoch on the shared axis; 0 is this fit's start (its first save).
    initial_epoch = max(checkpoint.restore(estimator), first_epoch)
    divergence = DivergenceGuard(checkpoint, watched=tuple(estimator.REPORTED),
                                 remedies=f"a smaller --learning-rate (now {learning_rate:g})")
    guard = PositiveDefiniteGuard(config.pd_floor, config.pd_check_every, mode=config.pd_mode)
    held_out = HeldOutEvaluation(data.test, writer, config.seed)
    # Batch-level scalars are stepped by the optimiser's own count, which restarts in every fit of a
    # shared axis: such fits log per epoch only.
    update_freq = 50 if first_epoch == 0 else "epoch"
    # The divergence guard first (it restores weights the others then see), the checkpoint after the
    # PD guard (so that only tested precisions are saved).
    callbacks = [divergence, guard, held_out, checkpoint,
                 TensorBoard(log_dir=str(log_dir or run_dir), update_freq=update_freq,
                                             write_graph=False)]
    start = time.perf_counter()
    history = estimator.fit(data.training_dataset(config.batch_size, config.seed, initial_epoch),
                            epochs=first_epoch + epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                            verbose=progress_verbosity() if verbose == "auto" else verbose)
    seconds = time.perf_counter() - start
    if divergence.diverged:
        raise UserError(divergence.message)
    target.precision_layer.set_dense(estimator.precision_dense())  # Lambda = D Lambda~ D.
    latest = checkpoint.latest()
    last = {k: float(v[-1]) for k, v in history.history.items() if v}
    return {"log_z_estimate": estimator.log_z_estimate(), "final_train_metrics": last,
            "pd_failures": guard.failures, "pd_halvings": guard.halvings,
            "pd_projections": guard.projections, "pd_check_seconds": guard.seconds,
            "steps": steps * epochs, "resumed_from_epoch": initial_epoch,
            "checkpoint_seconds": checkpoint.seconds, "fit_seconds": seconds,
            "checkpoint": str(latest[1]) if latest else None,
            "epochs_held_out": held_out.history}
