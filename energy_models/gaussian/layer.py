"""`GridPrecision`: a Keras layer owning a grid-structured precision Lambda and returning x^T Lambda x / 2."""

import keras
import numpy as np
import tensorflow as tf

from energy_models.linalg import grid as grid_lib
from energy_models.linalg.operators import LinearOperatorGridPrecision


@keras.saving.register_keras_serializable(package="energy_models")
class GridPrecision(keras.layers.Layer):
    """Quadratic energy E(x) = x^T Lambda x / 2 with Lambda a symmetric grid precision.

    The layer owns two weights, created by name in `build()`:

      diagonal:  [H, W], Lambda[i, i];
      couplings: [n_offsets, H, W], Lambda[i, i + o] for the half offsets o of `energy_models.linalg.grid`;

    with C > 1 channels, [H, W, C] and [n_offsets, H, W, C]: C x C blocks on the grid, coupling every channel
    of a pixel with every channel of the same pixel and of its neighbours (`energy_models.linalg.grid`).

    Both are unconstrained, so every symmetric matrix with the grid pattern is reachable, including the
    exact maximum-likelihood precision of MNIST, which is not diagonally dominant (a diagonal-dominance
    parameterisation could not represent it). Positive definiteness is therefore not guaranteed by the
    parameterisation: estimators keep it (see their docstrings), and `energy_models.gaussian.model` checks it
    wherever it matters (log-determinant, sampling, export).

    The operator is rebuilt from the variables on every call, so gradients flow to both weights.

    Args:
      height, width: the image grid; inputs have H * W * C features, flattened row-major ([H, W, C]).
      neighbourhood: 4 or 8.
      diagonal_init: initial value of every diagonal entry (the initial Lambda is diagonal_init * I).
      channels: C, 1 (grayscale) or more (e.g. 3 for RGB).
    """

    def __init__(self, height=28, width=28, neighbourhood=4, diagonal_init=1.0, channels=1, **kwargs):
        super().__init__(**kwargs)
        if int(height) < 1 or int(width) < 1 or int(channels) < 1:
            raise ValueError(f"height, width and channels must be positive, got height={height}, "
                             f"width={width}, channels={channels}")
        if neighbourhood not in (4, 8):
            raise ValueError(f"neighbourhood must be 4 or 8, got neighbourhood={neighbourhood!r}")
        if not float(diagonal_init) > 0:
            raise ValueError(f"diagonal_init must be positive, got diagonal_init={diagonal_init!r}")
        self.height = int(height)
        self.width = int(width)
        self.neighbourhood = int(neighbourhood)
        self.diagonal_init = float(diagonal_init)
        self.channels = int(channels)
        self.pattern = grid_lib.grid_pattern(self.height, self.width, self.neighbourhood, self.channels)

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] is not None:
            if input_shape[-1] != self.pattern.dim:
                size = "x".join(str(n) for n in self.pattern.map_shape)
                raise ValueError(f"X has {input_shape[-1]} features, but the layer expects "
                                 f"{self.pattern.dim} ({size})")
        self.diagonal = self.add_weight(
            name="diagonal", shape=self.pattern.map_shape,
            initializer=keras.initializers.Constant(self.diagonal_init))
        self.couplings = self.add_weight(
            name="couplings", shape=(len(self.pattern.offsets),) + self.pattern.map_shape,
            initializer="zeros")

    def operator(self, is_positive_definite=None):
        """The current Lambda as a `LinearOperatorGridPrecision` (built now, so gradients flow)."""
        if not self.built:
            self.build()
        return LinearOperatorGridPrecision(
            tf.convert_to_tensor(self.diagonal), tf.convert_to_tensor(self.couplings), self.pattern,
            is_positive_definite=is_positive_definite)

    def call(self, x):
        """Per-sample energies x^T Lambda x / 2 for x [n, D]: shape [n]."""
        x = tf.convert_to_tensor(x, dtype=self.compute_dtype)
        return 0.5 * tf.reduce_sum(x * self.operator().matvec(x), axis=-1)

    def set_precision(self, diag, couplings):
        """Assigns Lambda from a diagonal map [H, W] and coupling maps [n_offsets, H, W] ([..., C] with channels)."""
        if not self.built:
            self.build()
        self.diagonal.assign(np.asarray(diag, dtype=self.diagonal.dtype).reshape(self.diagonal.shape))
        masked = np.asarray(couplings) * self.pattern.masks
        self.couplings.assign(masked.astype(self.couplings.dtype))

    def set_dense(self, matrix):
        """Assigns Lambda from a [D, D] matrix (NumPy or scipy sparse); entries off the pattern are ignored."""
        self.set_precision(*self.pattern.from_dense(matrix))

    def dense(self):
        """The current Lambda as a float64 numpy [D, D] array."""
        return self.pattern.dense(np.asarray(self.diagonal, dtype=np.float64),
                                  np.asarray(self.couplings, dtype=np.float64) * self.pattern.masks)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width, neighbourhood=self.neighbourhood,
                      diagonal_init=self.diagonal_init, channels=self.channels)
        return config
