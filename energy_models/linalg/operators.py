"""`LinearOperatorGridPrecision`: a symmetric precision matrix with a 2-D grid sparsity pattern."""

import numpy as np
import tensorflow as tf

from energy_models.linalg import grid as grid_lib


class LinearOperatorGridPrecision(tf.linalg.LinearOperator):
    """Symmetric D x D operator, D = H * W (* C), coupling each pixel only to its grid neighbours.

    The operator is defined by a diagonal map `diag` [H, W] and coupling maps `couplings`
    [n_offsets, H, W] (with C channels: [H, W, C] and [n_offsets, H, W, C], see `energy_models.linalg.grid`):

        (Lambda x)[i] = diag[i] x[i] + sum_o ( C_o[i] x[i + o] + C_o[i - o] x[i - o] ),

    with 2 (4-connected) or 4 (8-connected) half offsets o. Couplings whose partner falls off the grid
    are ignored (masked), so any values may be stored there.

    Shapes: the operator has batch shape [] and shape [D, D]; `matmul(x)` takes x [..., D, R] and
    `matvec(x)` takes x [..., D] (a batch of flattened images, the layout used for training).

    Cost: `matmul`/`matvec` cost O(D k R) time with k = 5 or 9 stencil taps and never form a
    dense matrix. `to_dense` costs O(D^2) memory. `log_abs_determinant` and `cholesky` go through the
    dense matrix, O(D^3) time and O(D^2) memory: about 0.2 GFLOP and 5 MB at D = 784 (milliseconds), still
    fine at D ~ 4,096 (64 x 64 images), and not sensible beyond D ~ 10^4 (a 800 MB dense matrix, ~10^12
    flops), where a sparse Cholesky or a stochastic log-determinant estimator would be needed.
    """

    def __init__(self, diag, couplings, pattern, is_positive_definite=None, name="GridPrecision"):
        """Builds the operator.

        Args:
          diag: float tensor [H, W], the diagonal Lambda[i, i].
          couplings: float tensor [n_offsets, H, W], Lambda[i, i + o] for each half offset o.
          pattern: the `energy_models.linalg.grid.GridPattern` of the grid.
          is_positive_definite: optional hint, as for every `LinearOperator`.
          name: op name.
        """
        with tf.name_scope(name):
            diag = tf.convert_to_tensor(diag, name="diag")
            couplings = tf.convert_to_tensor(couplings, dtype=diag.dtype, name="couplings")
        hw = list(pattern.map_shape)
        if diag.shape.as_list() != hw:
            raise ValueError(f"diag must have shape {hw}, got {diag.shape.as_list()}")
        expected = [len(pattern.offsets)] + hw
        if couplings.shape.as_list() != expected:
            raise ValueError(f"couplings must have shape {expected}, got {couplings.shape.as_list()}")
        self._diag = diag
        self._couplings = couplings * tf.constant(pattern.masks, dtype=diag.dtype)
        self._pattern = pattern
        super().__init__(
            dtype=diag.dtype,
            is_self_adjoint=True,
            is_positive_definite=is_positive_definite,
            is_non_singular=is_positive_definite,
            is_square=True,
            parameters=dict(diag=diag, couplings=couplings, pattern=pattern,
                            is_positive_definite=is_positive_definite, name=name),
            name=name,
        )

    @property
    def pattern(self):
        return self._pattern

    @property
    def diag(self):
        return self._diag

    @property
    def couplings(self):
        """Coupling maps with the off-grid entries set to zero."""
        return self._couplings

    def _shape(self):
        d = self._pattern.dim
        return tf.TensorShape([d, d])

    def _shape_tensor(self):
        d = self._pattern.dim
        return tf.constant([d, d], dtype=tf.int32)

    def _taps(self):
        """(k, w) for every tap of the stencil, in flattened pixel indices: (Lambda x)[i] = sum_k w[i] x[i + k].

        A grid offset (dr, dc) is the flat offset k = dr * W + dc ((dr * W + dc) * C + dk with C channels,
        `GridPattern.flat_offset`). The weight of tap +k at pixel i is
        C_o[i]; that of tap -k is C_o[i - k]. Both are zero wherever the partner pixel is off the grid
        (the couplings are masked), so a flat shift that wraps around a row edge always meets a zero
        weight and never couples pixels that are not neighbours.
        """
        taps = [(0, tf.reshape(self._diag, [-1]))]
        for offset, mask, c in zip(self._pattern.offsets, self._pattern.masks, tf.unstack(self._couplings)):
            if not mask.any():
                continue  # No pair on this grid (e.g. down-left on a one-column grid, where k can be < 0).
            k = self._pattern.flat_offset(offset)
            c = tf.reshape(c, [-1])
            taps.append((k, c))
            shift = min(k, self._pattern.dim)  # k can exceed D on a one-row grid.
            taps.append((-k, tf.concat([tf.zeros([shift], c.dtype), c[:c.shape[0] - shift]], axis=0)))
        return taps

    def _apply(self, x, axis):
        """sum_k w * shift(x, k) along `axis` of x (the pixel axis), as slices of x and no padded copy.

        The pixel axis is cut into three blocks: the first and last K = max|k| pixels, whose taps can
        fall off the ends and are zero-padded there, and the interior, where every tap is a plain slice
        of x. Padding the whole of x instead costs a full extra copy, and the stencil is memory bound, so
        that copy would dominate its time (BENCHMARKS.md, "Exact grid Gaussian and the operator (issue 2)").
        """
        d = self._pattern.dim
        rank = x.shape.rank
        axis = axis % rank
        taps = self._taps()
        reach = max(abs(k) for k, _ in taps)
        # Weights broadcast along every axis after the pixel axis.
        trailing = [1] * (rank - axis - 1)

        def take(tensor, start, stop):
            begin = [0] * rank
            begin[axis] = start
            size = [-1] * rank
            size[axis] = stop - start
            return tf.slice(tensor, begin, size)

        def block(start, stop):
            """Rows [start, stop) of the result; taps reaching outside [0, d) contribute zeros."""
            out = 0.0
            for k, weight in taps:
                lo, hi = max(start + k, 0), min(stop + k, d)
                if lo >= hi:
                    continue
                w = tf.reshape(weight[lo - k:hi - k], [hi - lo] + trailing)
                term = w * take(x, lo, hi)
                before, after = lo - (start + k), (stop + k) - hi
                if before or after:
                    paddings = [[0, 0]] * rank
                    paddings[axis] = [before, after]
                    term = tf.pad(term, paddings)
                out += term
            return out

        if d <= 2 * reach:  # Tiny grids: one block, padded.
            return block(0, d)
        return tf.concat([block(0, reach), block(reach, d - reach), block(d - reach, d)], axis=axis)

    def _matvec(self, x, adjoint=False):
        # Lambda x_r for every row x_r of x [..., D], i.e. x Lambda (Lambda is symmetric), in O(D k) per row:
        # the layout of batches of flattened images, shifted along their last axis with no transpose.
        return self._apply(x, axis=-1)

    def _matmul(self, x, adjoint=False, adjoint_arg=False):
        # Lambda is self-adjoint, so `adjoint` changes nothing. Shifting along the row axis of x [D, R]
        # moves whole contiguous rows of R values: the fastest layout (BENCHMARKS.md, "Exact grid Gaussian
        # and the operator (issue 2)").
        if adjoint_arg:
            x = tf.linalg.adjoint(x)
        return self._apply(x, axis=-2)

    def _diag_part(self):
        return tf.reshape(self._diag, [-1])

    def _trace(self):
        return tf.reduce_sum(self._diag)

    def _to_dense(self):
        p = self._pattern
        mask = p.masks.astype(bool).reshape(-1)
        edge_values = tf.boolean_mask(tf.reshape(self._couplings, [-1]), mask)
        d = p.dim
        indices = np.concatenate([
            np.stack([np.arange(d), np.arange(d)], axis=1),
            np.stack([p.rows, p.cols], axis=1),
            np.stack([p.cols, p.rows], axis=1),
        ])
        updates = tf.concat([tf.reshape(self._diag, [-1]), edge_values, edge_values], axis=0)
        return tf.scatter_nd(indices, updates, [d, d])

    def _cholesky(self):
        return tf.linalg.LinearOperatorLowerTriangular(
            tf.linalg.cholesky(self.to_dense()), is_non_singular=True, is_square=True)

    def _log_abs_determinant(self):
        dense = self.to_dense()
        if self.is_positive_definite:
            # log det = 2 sum log diag(L): Cholesky is backward stable and needs no pivoting for SPD.
            chol = tf.linalg.cholesky(dense)
            return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))
        # LU-based slogdet also handles indefinite matrices, where Cholesky would fail.
        return tf.linalg.slogdet(dense)[1]

    def smallest_eigenvalue(self):
        """The smallest eigenvalue of Lambda (from the dense symmetric eigensolver, O(D^3))."""
        return tf.reduce_min(tf.linalg.eigvalsh(self.to_dense()))


def make_pattern(height=28, width=28, neighbourhood=4, channels=1):
    """Shortcut for `energy_models.linalg.grid.grid_pattern`."""
    return grid_lib.grid_pattern(height, width, neighbourhood, channels)
