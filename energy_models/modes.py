"""Modes of a density: gradient ascent on log p(x) from starting points, with a Keras optimiser.

Each start x_0 is moved by an optimiser from `keras.optimizers` on the loss -sum_n log p(x_n) (the rows
are independent, so one optimiser serves them all) until the stopping rule holds:

    stop when max_n |log p(x_n^(t)) - log p(x_n^(t - patience))| < tol * patience,  or after max_steps.

Plain gradient ascent (`keras.optimizers.SGD`, the default) with a step below 2 / L for an L-smooth
log p increases log p at every step; adaptive optimisers (Adam) reach the mode faster on badly scaled
densities but may overshoot, so the trajectory of log p is recorded to show which happened.
"""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class ModeSearch:
    """Starting points, end points, log p before and after, and the mean log p at every step."""

    start: np.ndarray
    end: np.ndarray
    log_p_start: np.ndarray
    log_p_end: np.ndarray
    trajectory: np.ndarray
    steps: int

    @property
    def monotonic(self):
        """Whether the mean log p never decreased along the way."""
        return bool(np.all(np.diff(self.trajectory) >= -1e-6 * np.abs(self.trajectory[1:]).max()))


def find_modes(log_prob_fn, start, optimizer="sgd", learning_rate=1e-3, max_steps=2000, tol=1e-3,
               patience=20):
    """Maximises log p from each row of `start` [n, D].

    Args:
      log_prob_fn: x [n, D] float32 -> log p [n] (differentiable TF function, e.g. a SavedModel endpoint).
      start: float array [n, D], the starting points (e.g. samples of the fitted Gaussian).
      optimizer: "sgd", "adam" or "rmsprop" (Keras optimisers).
      learning_rate: the optimiser's learning rate.
      max_steps, tol, patience: the stopping rule above.

    Returns:
      A `ModeSearch`.
    """
    import keras

    optimizers = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
                  "rmsprop": keras.optimizers.RMSprop}
    opt = optimizers[optimizer](learning_rate=learning_rate)
    x = tf.Variable(np.asarray(start, np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            log_p = log_prob_fn(x)
            loss = -tf.reduce_sum(log_p)
        opt.apply_gradients([(tape.gradient(loss, x), x)])
        return log_p

    log_p0 = np.asarray(log_prob_fn(tf.constant(x)), np.float64)
    history = [log_p0]
    for t in range(1, max_steps + 1):
        step()
        history.append(np.asarray(log_prob_fn(tf.constant(x)), np.float64))
        if t >= patience and np.max(np.abs(history[-1] - history[-1 - patience])) < tol * patience:
            break
    trajectory = np.array([h.mean() for h in history])
    return ModeSearch(start=np.asarray(start, np.float32), end=x.numpy(), log_p_start=log_p0,
                      log_p_end=history[-1], trajectory=trajectory, steps=t)
