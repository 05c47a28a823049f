"""The grid precision operator and layer against dense NumPy matrices."""

import numpy as np
import pytest
import tensorflow as tf

from energy_models.gaussian.layer import GridPrecision
from energy_models.linalg import grid
from energy_models.linalg.operators import LinearOperatorGridPrecision

SHAPES = [(1, 5), (3, 4), (5, 5), (6, 3), (28, 28)]


def random_precision(pattern, rng, dtype, pd=False):
    diag = rng.normal(size=(pattern.height, pattern.width))
    couplings = rng.normal(size=pattern.masks.shape)
    if pd:
        # Diagonal larger than the sum of |couplings| in each row: positive definite by Gershgorin.
        diag = np.abs(diag) + 2 * len(pattern.offsets) * np.abs(couplings).max() + 0.1
    return diag.astype(dtype), couplings.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("shape", SHAPES)
def test_operator_matches_dense(shape, neighbourhood, dtype):
    rng = np.random.default_rng(sum(shape) + neighbourhood)
    pattern = grid.grid_pattern(*shape, neighbourhood)
    diag, couplings = random_precision(pattern, rng, dtype)
    op = LinearOperatorGridPrecision(diag, couplings, pattern)
    dense = pattern.dense(diag, couplings * pattern.masks)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(op.to_dense().numpy(), dense, atol=tol)
    assert np.array_equal(dense, dense.T)
    x = rng.normal(size=(3, 2, pattern.dim, 4)).astype(dtype)
    np.testing.assert_allclose(op.matmul(x).numpy(), dense @ x, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(op.matmul(x, adjoint=True).numpy(), dense.T @ x, rtol=tol, atol=tol * 10)
    rows = rng.normal(size=(7, pattern.dim)).astype(dtype)
    np.testing.assert_allclose(op.matvec(rows).numpy(), rows @ dense, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(op.diag_part().numpy(), np.diag(dense), atol=tol)
    np.testing.assert_allclose(op.trace().numpy(), np.trace(dense), rtol=tol)
    np.testing.assert_allclose(op.log_abs_determinant().numpy(), np.linalg.slogdet(dense)[1],
                               rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_log_determinant_and_cholesky_of_positive_definite(neighbourhood):
    rng = np.random.default_rng(1)
    pattern = grid.grid_pattern(7, 6, neighbourhood)
    diag, couplings = random_precision(pattern, rng, np.float64, pd=True)
    op = LinearOperatorGridPrecision(diag, couplings, pattern, is_positive_definite=True)
    dense = pattern.dense(diag, couplings * pattern.masks)
    np.testing.assert_allclose(op.log_abs_determinant().numpy(), np.linalg.slogdet(dense)[1], rtol=1e-12)
    chol = op.cholesky().to_dense().numpy()
    np.testing.assert_allclose(chol @ chol.T, dense, atol=1e-10)
    np.testing.assert_allclose(op.smallest_eigenvalue().numpy(), np.linalg.eigvalsh(dense)[0], rtol=1e-10)


def test_pattern_counts_match_the_grid():
    p4, p8 = grid.grid_pattern(28, 28, 4), grid.grid_pattern(28, 28, 8)
    assert p4.num_params == 784 + 2 * 28 * 27
    assert p8.num_params == 784 + 2 * 28 * 27 + 2 * 27 * 27
    # Every edge joins grid neighbours: |dr| <= 1 and |dc| <= 1, and no edge repeats.
    for p in (p4, p8):
        dr = p.cols // 28 - p.rows // 28
        dc = p.cols % 28 - p.rows % 28
        assert np.all(np.abs(dr) <= 1) and np.all(np.abs(dc) <= 1)
        assert len(set(zip(p.rows, p.cols))) == p.num_edges


def test_bad_neighbourhood_is_named():
    with pytest.raises(ValueError, match="neighbourhood must be 4 or 8, got 6"):
        grid.grid_pattern(3, 3, 6)
    with pytest.raises(ValueError, match="neighbourhood must be 4 or 8, got neighbourhood=5"):
        GridPrecision(3, 3, neighbourhood=5)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_layer_energy_and_gradients(neighbourhood):
    rng = np.random.default_rng(2)
    layer = GridPrecision(4, 5, neighbourhood)
    layer.build((None, 20))
    pattern = layer.pattern
    diag, couplings = random_precision(pattern, rng, np.float32)
    layer.set_precision(diag, couplings)
    dense = pattern.dense(diag.astype(np.float64), couplings.astype(np.float64) * pattern.masks)
    np.testing.assert_allclose(layer.dense(), dense, rtol=1e-6)
    x = rng.normal(size=(9, 20)).astype(np.float32)
    with tf.GradientTape() as tape:
        energies = layer(x)
        total = tf.reduce_sum(energies)
    np.testing.assert_allclose(energies.numpy(), 0.5 * np.einsum("ni,ij,nj->n", x, dense, x), rtol=1e-4)
    grad_diag, grad_couplings = tape.gradient(total, [layer.diagonal, layer.couplings])
    # d/dLambda_ii sum_n x^T Lambda x / 2 = sum_n x_i^2 / 2; d/dLambda_ij (edge) = sum_n x_i x_j.
    np.testing.assert_allclose(grad_diag.numpy().reshape(-1), 0.5 * np.sum(x ** 2, 0), rtol=1e-4)
    expected = pattern.edges_to_couplings(np.sum(x[:, pattern.rows] * x[:, pattern.cols], 0))
    np.testing.assert_allclose(grad_couplings.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_layer_set_dense_round_trip_and_config():
    layer = GridPrecision(3, 3, 8, diagonal_init=2.0)
    layer.build((None, 9))
    np.testing.assert_allclose(layer.dense(), 2.0 * np.eye(9))
    rng = np.random.default_rng(3)
    diag, couplings = random_precision(layer.pattern, rng, np.float64)
    dense = layer.pattern.dense(diag, couplings * layer.pattern.masks)
    layer.set_dense(dense)
    np.testing.assert_allclose(layer.dense(), dense, rtol=1e-6)
    clone = GridPrecision.from_config(layer.get_config())
    assert (clone.height, clone.width, clone.neighbourhood, clone.diagonal_init) == (3, 3, 8, 2.0)


def test_layer_rejects_wrong_width():
    with pytest.raises(ValueError, match="X has 10 features, but the layer expects 9"):
        GridPrecision(3, 3).build((None, 10))


def colour_dense(height, width, channels, neighbourhood, diag, couplings):
    """Lambda of a colour grid written out entry by entry from the rules in `energy_models.linalg.grid`, with no
    use of its index bookkeeping: value (r, c, k) is row (r * W + c) * C + k; every channel k of a pixel is
    coupled to every channel k + dk of its 4/8 neighbours and to the other channels of the same pixel."""
    spatial = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbourhood == 8 else [])
    offsets = [(dr, dc, dk) for dr, dc in spatial for dk in range(1 - channels, channels)]
    offsets += [(0, 0, dk) for dk in range(1, channels)]
    d = height * width * channels
    out = np.zeros((d, d))

    def index(r, c, k):
        return (r * width + c) * channels + k

    for r in range(height):
        for c in range(width):
            for k in range(channels):
                out[index(r, c, k), index(r, c, k)] = diag[r, c, k]
                for o, (dr, dc, dk) in enumerate(offsets):
                    if 0 <= r + dr < height and 0 <= c + dc < width and 0 <= k + dk < channels:
                        i, j = index(r, c, k), index(r + dr, c + dc, k + dk)
                        out[i, j] = out[j, i] = couplings[o, r, c, k]
    return out


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("shape", [(3, 4, 3), (5, 2, 2), (1, 4, 3), (4, 1, 3)])
def test_colour_operator_matches_entry_by_entry_matrix(shape, neighbourhood):
    height, width, channels = shape
    rng = np.random.default_rng(sum(shape) + neighbourhood)
    pattern = grid.grid_pattern(height, width, neighbourhood, channels)
    assert pattern.map_shape == shape and pattern.dim == height * width * channels
    diag = rng.normal(size=shape)
    couplings = rng.normal(size=pattern.masks.shape)
    dense = colour_dense(height, width, channels, neighbourhood, diag, couplings)
    # The pattern's free entries are exactly the rules' (no edge repeats, none missing).
    assert pattern.num_edges == int(np.count_nonzero(np.triu(dense, 1)))
    assert set(zip(pattern.rows, pattern.cols)) == set(zip(*np.nonzero(np.triu(dense, 1))))
    np.testing.assert_allclose(pattern.dense(diag, couplings * pattern.masks), dense, atol=1e-12)
    op = LinearOperatorGridPrecision(diag, couplings, pattern)
    np.testing.assert_allclose(op.to_dense().numpy(), dense, atol=1e-12)
    x = rng.normal(size=(pattern.dim, 5))
    np.testing.assert_allclose(op.matmul(x).numpy(), dense @ x, atol=1e-10)
    rows = rng.normal(size=(6, pattern.dim))
    np.testing.assert_allclose(op.matvec(rows).numpy(), rows @ dense, atol=1e-10)
    assert pattern.bandwidth >= max(abs(i - j) for i, j in zip(*np.nonzero(dense)))  # A bound (one row: equal to W C)


def test_colour_layer_round_trip_and_config():
    layer = GridPrecision(3, 2, 4, channels=3)
    layer.build((None, 18))
    # 2 spatial offsets x 5 channel shifts, then 2 within a pixel.
    assert tuple(layer.diagonal.shape) == (3, 2, 3) and tuple(layer.couplings.shape) == (12, 3, 2, 3)
    rng = np.random.default_rng(4)
    dense = layer.pattern.dense(rng.normal(size=(3, 2, 3)), rng.normal(size=(12, 3, 2, 3)) * layer.pattern.masks)
    layer.set_dense(dense)
    np.testing.assert_allclose(layer.dense(), dense, rtol=1e-6)
    x = rng.normal(size=(5, 18)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), 0.5 * np.einsum("ni,ij,nj->n", x, dense, x), rtol=1e-4, atol=1e-5)
    assert GridPrecision.from_config(layer.get_config()).channels == 3
    with pytest.raises(ValueError, match="X has 6 features, but the layer expects 18 \\(3x2x3\\)"):
        GridPrecision(3, 2, channels=3).build((None, 6))
