"""Modes of a density: maximisation of log p(x) from starting points.

The default search is L-BFGS (`tfp.optimizer.lbfgs_minimize`) on f(x) = -log p(x), one independent problem per
start x_0 (a batch of rows: values [n], gradients [n, D]). Each iteration moves a row along the L-BFGS
direction d_t (an ascent direction of log p) by a Hager-Zhang line search, x_{t+1} = x_t + alpha_t d_t,
whose step alpha_t meets either the Armijo rule or its approximate form:

    log p(x_{t+1}) >= log p(x_t) + delta alpha_t grad log p(x_t)^T d_t     (a rise), or
    log p(x_{t+1}) >= log p(x_t) - 1e-6 |log p(x_t)|                        (float round-off at most),

so log p never falls however badly scaled it is: the line search, not a learning rate, picks the step.
A row stops when

    |log p(x_{t+1}) - log p(x_t)| <= tol   (nats),  or  max_i |d log p / d x_i| <= 1e-8,

when its line search finds no higher point (the row "stalled", typically at float32 precision), or after
max_steps iterations.

Why not gradient ascent: a step eta of x <- x + eta grad log p is stable only for eta < 2 / L, with L the
largest curvature of log p. A ZCA-whitened deep energy model has L ~ 1 / lambda_min of the patch covariance
(~6,000 in pixel space), so Keras SGD at eta = 1e-3 multiplies the error along that direction by
|1 - eta L| ~ 5 per step and diverges. The Keras optimisers ("sgd", "adam", "rmsprop") remain, with a
patience stopping rule

    stop when max_n |log p(x_n^(t)) - log p(x_n^(t - patience))| < tol * patience,  or after max_steps,

and every search stops with a one-line `UserError` as soon as log p or a position turns non-finite.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from energy_models.errors import UserError, check_choice

OPTIMIZERS = ("lbfgs", "sgd", "adam", "rmsprop")


@dataclasses.dataclass
class ModeSearch:
    """Starting points, end points, log p before and after, and log p at every step.

    trajectory: the mean log p over rows at steps 0..steps; rows: every row's log p [steps + 1, n];
    converged: [n] whether each row met the tolerance (L-BFGS: the log p change or gradient rule;
    Keras: the patience rule, for all rows at once); stalled: [n] rows whose line search found no higher
    log p (float32 precision reached; L-BFGS only); evaluations: calls of log p and its gradient (on all rows).
    """

    start: np.ndarray
    end: np.ndarray
    log_p_start: np.ndarray
    log_p_end: np.ndarray
    trajectory: np.ndarray
    steps: int
    rows: np.ndarray = None
    converged: np.ndarray = None
    stalled: np.ndarray = None
    evaluations: int = 0
    optimizer: str = "lbfgs"

    @property
    def monotonic(self):
        """Whether log p never decreased along the way: every row's log p when recorded, else the mean
        (a fall of 1e-6 |log p| is float round-off and the line search's approximate Wolfe allowance)."""
        values = self.trajectory[:, None] if self.rows is None else self.rows
        return bool(np.all(np.diff(values, axis=0) >= -1e-6 * np.abs(values).max(axis=0)))


def find_modes(log_prob_fn, start, optimizer="lbfgs", learning_rate=None, max_steps=2000, tol=1e-3,
               patience=20):
    """Maximises log p from each row of `start` [n, D].

    Args:
      log_prob_fn: x [n, D] float32 -> log p [n] (differentiable TF function, e.g. a SavedModel endpoint);
        rows must be independent (log p of one row does not depend on the others).
      start: float array [n, D], the starting points (e.g. samples of the fitted Gaussian).
      optimizer: "lbfgs" (default; needs no learning rate), or the Keras "sgd", "adam", "rmsprop".
      learning_rate: the Keras optimiser's learning rate (default 1e-3); must be None for "lbfgs".
      max_steps: at most this many L-BFGS iterations or optimiser steps.
      tol: the stopping tolerance in nats (module docstring); patience: the Keras rule's window.

    Returns:
      A `ModeSearch`.

    Raises:
      UserError: when log p or a position is non-finite, at the start or during the search.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "lbfgs" and learning_rate is not None:
        raise ValueError("L-BFGS has no learning rate (its line search picks each step); pass learning_rate=None")
    start = np.asarray(start, np.float32)
    log_p0 = np.asarray(log_prob_fn(tf.constant(start)), np.float64)
    check_finite(log_p0, start, "at the starting points",
                 "check the model (score it on --patches first) or start from a Gaussian closer to it "
                 "(--gaussian-samples DIR)")
    if optimizer == "lbfgs":
        return _lbfgs_search(log_prob_fn, start, log_p0, max_steps, tol)
    return _keras_search(log_prob_fn, start, log_p0, optimizer, 1e-3 if learning_rate is None else learning_rate,
                         max_steps, tol, patience)


def check_finite(log_p, x, where, advice):
    """Raises a one-line `UserError` naming `where` and `advice` when a row's log p or position is non-finite."""
    bad_log_p = ~np.isfinite(log_p)
    bad = bad_log_p | ~np.all(np.isfinite(x), axis=1)
    if bad.any():
        what = f"log p ({log_p[bad_log_p][0]})" if bad_log_p.any() else "the position"
        raise UserError(f"mode search stopped: {what} is non-finite {where} for {int(bad.sum())} of {len(bad)} "
                        f"starts; {advice}")


def _negative_log_p(log_prob_fn):
    """x [n, D] -> (f [n], grad f [n, D]) with f = -log p: the rows are independent problems, so the
    gradient of sum_n log p(x_n) with respect to x is every row's own gradient."""

    def value_and_gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_p = log_prob_fn(x)
        return -log_p, -tape.gradient(log_p, x)

    return value_and_gradients


def _lbfgs_search(log_prob_fn, start, log_p0, max_steps, tol):
    """Batched L-BFGS, run one iteration per call (continuing from the previous state, with its curvature
    pairs) so that every row's log p is recorded at every iteration and checked for non-finite values."""
    import tensorflow_probability as tfp

    value_and_gradients = _negative_log_p(log_prob_fn)
    tolerances = dict(f_absolute_tolerance=tf.constant(tol, tf.float32), tolerance=1e-8)

    @tf.function
    def begin(x0):
        return tfp.optimizer.lbfgs_minimize(value_and_gradients, initial_position=x0, max_iterations=0,
                                            **tolerances)

    @tf.function
    def advance(state, until):
        return tfp.optimizer.lbfgs_minimize(value_and_gradients, None, previous_optimizer_results=state,
                                            max_iterations=until, **tolerances)

    state = begin(tf.constant(start))
    history = [log_p0]
    for t in range(1, max_steps + 1):
        state = advance(state, tf.constant(t))
        log_p = -state.objective_value.numpy().astype(np.float64)
        check_finite(log_p, state.position.numpy(), f"after L-BFGS iteration {t}",
                     "the model's log p is unbounded or overflows along the search, so it has no mode there; "
                     "check the model (score it on --patches first)")
        history.append(log_p)
        if np.all(state.converged.numpy() | state.failed.numpy()):
            break
    rows = np.array(history)
    failed = state.failed.numpy()
    return ModeSearch(start=start, end=state.position.numpy(), log_p_start=log_p0, log_p_end=rows[-1],
                      trajectory=rows.mean(axis=1), steps=len(rows) - 1, rows=rows,
                      converged=state.converged.numpy() & ~failed, stalled=failed,
                      evaluations=int(state.num_objective_evaluations.numpy()), optimizer="lbfgs")


def _keras_search(log_prob_fn, start, log_p0, optimizer, learning_rate, max_steps, tol, patience):
    """Gradient ascent with a Keras optimiser on -sum_n log p(x_n) (one optimiser serves all rows)."""
    from energy_models.training.optimizers import make_optimizer

    opt = make_optimizer(optimizer, learning_rate)
    x = tf.Variable(start)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(log_prob_fn(x))
        opt.apply_gradients([(tape.gradient(loss, x), x)])

    advice = (f"keras {optimizer} at learning rate {learning_rate:g} diverged; use --mode-optimizer lbfgs (the "
              f"default: its line search cannot diverge) or a lower --mode-learning-rate (plain gradient ascent "
              f"needs one below 2 / the largest curvature of log p)")
    history = [log_p0]
    converged = False
    for t in range(1, max_steps + 1):
        step()
        log_p = np.asarray(log_prob_fn(tf.constant(x)), np.float64)
        check_finite(log_p, x.numpy(), f"after step {t}", advice)
        history.append(log_p)
        if t >= patience and np.max(np.abs(history[-1] - history[-1 - patience])) < tol * patience:
            converged = True
            break
    rows = np.array(history)
    return ModeSearch(start=start, end=x.numpy(), log_p_start=log_p0, log_p_end=rows[-1],
                      trajectory=rows.mean(axis=1), steps=len(rows) - 1, rows=rows,
                      converged=np.full(len(start), converged), stalled=np.zeros(len(start), bool),
                      evaluations=len(rows), optimizer=optimizer)
