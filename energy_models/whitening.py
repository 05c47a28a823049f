"""Fixed linear whitening z = W (x - mu) as a Keras layer, with its log-determinant and inverse.

A density on whitened data z gives a density on pixels x by the change of variables

    log p_x(x) = log p_z(W (x - mu)) + log|det W|,

so every model fitted to whitened patches is scored in pixel space by adding `log_abs_det`.

Constructors (all statistics in float64 numpy; Sigma = (1/n) sum_i (x_i - mu)(x_i - mu)^T, the
maximum-likelihood covariance, with eigen-decomposition Sigma = U diag(lambda) U^T):
    zca:   W = U diag(1 / sqrt(lambda + eps)) U^T       (symmetric; the whitening closest to identity)
    pca:   W = diag(1 / sqrt(lambda + eps)) U^T         (rows sorted by decreasing lambda)
    from_precision_cholesky: for a Gaussian with precision Lambda = L L^T, W = L^T,
           so W Sigma W^T = L^T (L L^T)^-1 L = I and log|det W| = sum_i log|L_ii|.
Reference: Kessy, Lewin and Strimmer, "Optimal whitening and decorrelation", The American Statistician
(2018).
"""

import math

import keras
import numpy as np
from keras import ops
from scipy import linalg

from energy_models.errors import NotPositiveDefiniteError, UserError


def mean_and_covariance(x, chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Returns the mean mu [D] and the maximum-likelihood covariance Sigma [D, D] of x [n, D], in float64.

    Rows are converted to float64 a chunk at a time, so 50,000 x 784 float32 patches never need a
    300 MB float64 copy.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape [n, D] with n >= 2, got {x.shape}")
    mean = x.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, x.shape[0], chunk_size):
        centred = x[start:start + chunk_size].astype(np.float64) - mean
        scatter += centred.T @ centred
    return mean, scatter / x.shape[0]


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating, np.integer)) \
            or not math.isfinite(epsilon) or epsilon <= 0:
        raise UserError(f"whitening epsilon must be a positive number, got {epsilon!r}; "
                        "pass e.g. 1e-3 (it is added to every covariance eigenvalue)")
    return float(epsilon)


def _eigh(x, epsilon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu, lambda + eps (decreasing) and U for the covariance of x, with a deterministic sign per column."""
    epsilon = _check_epsilon(epsilon)
    mean, sigma = mean_and_covariance(x)
    values, vectors = np.linalg.eigh(sigma)
    # eigh can return tiny negative eigenvalues (-1e-18) for a PSD matrix; clipping keeps lambda + eps > 0.
    values = np.clip(values[::-1], 0.0, None) + epsilon
    vectors = vectors[:, ::-1]
    # Eigenvectors are defined up to sign; make the largest-magnitude entry positive so PCA filters are
    # the same on every machine.
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    return mean, values, vectors * signs


def principal_directions(x, components: int) -> np.ndarray:
    """The top `components` eigenvectors of the covariance of x [n, D] as orthonormal rows [k, D].

    ZCA-whitened patches u = U diag(lambda + eps)^-1/2 U^T (x - mu) have coordinates U_k^T u along these
    rows: the low-frequency principal components, each with unit variance. A model confined to their span
    (`DEMEnergy(components=k)`) leaves out the high-frequency directions, which whitening scales up to
    unit variance although they hold mostly pixel noise.
    """
    _, _, vectors = _eigh(x, 1.0)  # eps only shifts the eigenvalues, not the vectors.
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) \
            or not 1 <= components <= vectors.shape[1]:
        raise ValueError(f"components must be an integer in [1, {vectors.shape[1]}], got {components!r}")
    return np.ascontiguousarray(vectors[:, :components].T)


@keras.saving.register_keras_serializable(package="energy_models")
class LinearWhitening(keras.layers.Layer):
    """Applies a fixed affine whitening z = W (x - mu) to inputs [..., D].

    Args:
        dim: D, the input width. The layer starts as the identity (mu = 0, W = I); the constructors
            `zca`, `pca`, `from_precision_cholesky` and `from_arrays` set mu and W. mu, W, W^-1 and
            log|det W| are non-trainable weights, so they are saved and restored with the model.
        **kwargs: passed to `keras.layers.Layer` (name, dtype, ...).

    Raises:
        ValueError: dim is not a positive integer; the input width is not D (at build).
    """

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and width != self.dim:
            raise ValueError(f"X has {width} features, but the whitening expects {self.dim}")
        self.mean = self.add_weight(name="mean", shape=(self.dim,), initializer="zeros", trainable=False)
        self.matrix = self.add_weight(name="matrix", shape=(self.dim, self.dim), initializer="identity",
                                      trainable=False)
        self.inverse_matrix = self.add_weight(name="inverse_matrix", shape=(self.dim, self.dim),
                                              initializer="identity", trainable=False)
        # float64 whatever the layer dtype: for D = 784 it is of order 1e3 nats and is added to log-densities.
        self.log_abs_det_weight = self.add_weight(name="log_abs_det", shape=(), initializer="zeros",
                                                  trainable=False, dtype="float64")

    def call(self, inputs):
        return ops.matmul(inputs - self.mean, ops.transpose(self.matrix))

    def inverse(self, z):
        """Maps whitened z [..., D] back to pixels: x = W^-1 z + mu (e.g. to show filters as images)."""
        if not self.built:
            self.build((None, self.dim))
        z = ops.convert_to_tensor(z, dtype=self.variable_dtype)
        return ops.matmul(z, ops.transpose(self.inverse_matrix)) + self.mean

    @property
    def log_abs_det(self) -> float:
        """log|det W|, the term added to a whitened log-density to get a pixel-space log-density."""
        if not self.built:
            self.build((None, self.dim))
        return float(ops.convert_to_numpy(self.log_abs_det_weight))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}

    @classmethod
    def from_arrays(cls, mean, matrix, inverse=None, log_abs_det=None, **kwargs) -> "LinearWhitening":
        """Builds the layer from mu [D] and W [D, D]; W^-1 and log|det W| are computed when not given.

        Raises:
            ValueError: shapes disagree or W is singular.
        """
        mean = np.asarray(mean, dtype=np.float64)
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or mean.shape != matrix.shape[:1]:
            raise ValueError(f"mean and matrix must have shapes [D] and [D, D], got {mean.shape} and "
                             f"{matrix.shape}")
        if log_abs_det is None:
            sign, log_abs_det = np.linalg.slogdet(matrix)
            if sign == 0 or not np.isfinite(log_abs_det):
                raise ValueError("matrix is singular, so it cannot whiten; check how it was computed")
        if inverse is None:
            inverse = np.linalg.inv(matrix)
        layer = cls(mean.shape[0], **kwargs)
        layer.build((None, mean.shape[0]))
        layer.mean.assign(mean)
        layer.matrix.assign(matrix)
        layer.inverse_matrix.assign(np.asarray(inverse, dtype=np.float64))
        layer.log_abs_det_weight.assign(float(log_abs_det))
        return layer

    @classmethod
    def zca(cls, x, epsilon: float, **kwargs) -> "LinearWhitening":
        """ZCA (Mahalanobis) whitening of data x [n, D]: W = U diag(1/sqrt(lambda + eps)) U^T.

        Raises:
            UserError: epsilon is not a positive number.
        """
        mean, values, vectors = _eigh(x, epsilon)
        matrix = (vectors / np.sqrt(values)) @ vectors.T
        inverse = (vectors * np.sqrt(values)) @ vectors.T
        # Symmetric in exact arithmetic; averaging removes round-off asymmetry.
        return cls.from_arrays(mean, (matrix + matrix.T) / 2, (inverse + inverse.T) / 2,
                               -0.5 * np.sum(np.log(values)), **kwargs)

    @classmethod
    def pca(cls, x, epsilon: float, **kwargs) -> "LinearWhitening":
        """PCA whitening of data x [n, D]: W = diag(1/sqrt(lambda + eps)) U^T, rows by decreasing lambda.

        Raises:
            UserError: epsilon is not a positive number.
        """
        mean, values, vectors = _eigh(x, epsilon)
        return cls.from_arrays(mean, vectors.T / np.sqrt(values)[:, None], vectors * np.sqrt(values),
                               -0.5 * np.sum(np.log(values)), **kwargs)

    @classmethod
    def from_precision_cholesky(cls, mean, cholesky, **kwargs) -> "LinearWhitening":
        """Whitening of a fitted Gaussian N(mu, Lambda^-1) with Lambda = L L^T: W = L^T.

        Args:
            mean: mu [D].
            cholesky: L [D, D], lower triangular.

        Raises:
            ValueError: L is not square lower triangular or its shape disagrees with mu.
            NotPositiveDefiniteError: L has a zero on its diagonal, so Lambda is not positive definite.
        """
        cholesky = np.asarray(cholesky, dtype=np.float64)
        if cholesky.ndim != 2 or cholesky.shape[0] != cholesky.shape[1]:
            raise ValueError(f"cholesky must be a square matrix [D, D], got shape {cholesky.shape}")
        if np.any(np.triu(cholesky, 1) != 0):
            raise ValueError("cholesky must be lower triangular, but it has entries above the diagonal")
        diagonal = np.abs(np.diag(cholesky))
        if np.any(diagonal == 0):
            raise NotPositiveDefiniteError("the precision's Cholesky factor has a zero on its diagonal, so "
                                           "the precision is not positive definite; refit the Gaussian")
        # W^-1 = L^-T by triangular solve: O(D^3 / 3) and more accurate than a general inverse.
        inverse = linalg.solve_triangular(cholesky, np.eye(cholesky.shape[0]), lower=True).T
        # log|det L^T| = sum log|L_ii|: a sum of logs never overflows, unlike the product of the diagonal.
        return cls.from_arrays(mean, cholesky.T, inverse, np.sum(np.log(diagonal)), **kwargs)
