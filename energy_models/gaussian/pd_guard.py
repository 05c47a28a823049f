"""`PositiveDefiniteGuard`: keeps a trained grid precision positive definite during `model.fit`."""

import time

import keras
import numpy as np
import scipy.linalg

from energy_models.linalg.positive_definite import band_is_positive_definite, lowest_eigenpairs


def ensure_positive_definite(model, floor):
    """Shifts the diagonal of Lambda so that lambda_min(Lambda) >= floor; returns the shift (0 if none).

    The test is a dense Cholesky: it succeeds exactly when Lambda is positive definite, and it is run on
    Lambda - floor I so that the floor itself is certified. On failure,
    Lambda <- Lambda + (floor - lambda_min + floor / 10) I: the couplings (and so the grid pattern) are
    untouched, every eigenvalue moves up by the same amount, and the new minimum is a tenth of the floor
    above it (margin against the Lanczos tolerance).
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

    (`band_is_positive_definite`).
    """
    layer = model.precision_layer
    if hasattr(model, "standardized_precision_dense"):  # an estimator: its weights hold Lambda~
        return band_is_positive_definite(layer.pattern, np.asarray(layer.diagonal),
                                         np.asarray(layer.couplings), floor)
    diag, couplings = layer.pattern.from_dense(model.precision_dense())
    return band_is_positive_definite(layer.pattern, diag, couplings, floor)


class PositiveDefiniteGuard(keras.callbacks.Callback):
    """Keeps Lambda positive definite during `model.fit` by step control: test, then project or backtrack.

    mode="project" (default): a step that fails the test is projected back onto the set along the
    normals of its violated eigenvalues, in the optimiser's metric (`_project`); backtracking (below)
    is its fallback. mode="backtrack": backtracking only. Backtracking alone jams at the boundary (from a
    point just inside it, every step that points outwards is cut to almost nothing), because it keeps
    only the feasible fraction of the whole step, tangential part included; projection keeps the
    tangential part (BENCHMARKS.md, "energy_models/gaussian/pd_guard.py: projection, not backtracking").

    Every `every` optimiser steps, at every epoch end and at the end of training, the standardised
    precision Lambda~ (see `EstimatorGaussian`) is tested with a Cholesky of Lambda~ - floor I, which
    succeeds exactly when lambda_min(Lambda~) >= floor. On success the parameters theta (every trainable
    variable) are remembered as theta_prev. On failure the step is shortened along the segment,

        theta <- theta_prev + 2^-k (theta - theta_prev),    k = 1, 2, ..., max_halvings,

    until the test passes (theta_prev itself if none does). The set {lambda_min >= floor} is convex and
    Lambda is linear in theta, so every point of the segment close enough to theta_prev is inside it: the
    backtracked iterate is feasible, keeps the part of the step that fits, and the next step starts from
    there. The learning rate and the optimiser's state are NOT touched: halving the learning rate on every
    failure would soon freeze training at the boundary. When the estimator's optimum
    lies outside the cone (score matching on MNIST, whose optimum over the pattern has lambda_min = -3.9)
    the iterates slide along the boundary towards the constrained optimum, which is unique because every
    objective here is convex in theta; a decaying learning rate (`make_optimizer`) lets them settle there.
    Between tests an iterate may briefly leave the cone; the NCE, cNCE and SM losses are finite there
    (they need no log det), and every precision that is evaluated, sampled or exported has passed.

    Alternatives not taken: a diagonal shift Lambda + (floor - lambda_min) I moves score matching far from
    its optimum; a log-det barrier needs Lambda^-1 at every step and biases interior optima; diagonal
    dominance cannot reach the MLE (38% of its rows are not dominant). BENCHMARKS.md,
    "energy_models/gaussian/pd_guard.py: projection, not backtracking".

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

    def _project(self, values):
        """Moves the Lambda~ weights onto {lambda_min(Lambda~) >= floor}, or returns None on failure.

        Each round takes the eigenpairs (lambda_k, v_k) of Lambda~ below target = floor (1 + margin)
        (LOBPCG warm-started from the previous round, `lowest_eigenpairs`), whose gradients on the pattern are
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
            k = min(self.eigenpairs, pattern.dim)
            if self._vecs is None or self._vecs.shape != (pattern.dim, k):
                self._vecs = np.random.default_rng(0).standard_normal((pattern.dim, k))
            lam, vec = lowest_eigenpairs(pattern, diag, edges, self._vecs)
            self._vecs = vec
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
