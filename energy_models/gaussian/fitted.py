"""`FittedGaussian`: N(m, Sigma) fitted to patches, with a full or a grid (covariance-selection) precision;
the deep energy model's whitening, noise and sampler start."""

import dataclasses
import functools
import math

import numpy as np

from energy_models.errors import UserError

# Ridge added to the patch covariance before inverting it (8-bit photographs have a noise floor of
# about (1/255)^2 / 12 = 1.3e-6 per pixel): keeps Sigma positive definite without making the Gaussian
# visibly noisier than the patches it was fitted to.
GAUSSIAN_RIDGE = 1e-6


@dataclasses.dataclass
class FittedGaussian:
    """N(m, Sigma) fitted to training patches (float64).

    `grid` is the deep energy model's fitted Gaussian: the empirical mean and the constrained maximum-likelihood
    precision with the 4-neighbour grid pattern (`energy_models.gaussian.mle`). `full` has the sample
    covariance; it is reported beside it, as a stronger Gaussian baseline. Both add GAUSSIAN_RIDGE I to
    the sample covariance.
    """

    mean: np.ndarray
    covariance: np.ndarray

    @classmethod
    def full(cls, x):
        from energy_models.whitening import mean_and_covariance

        mean, cov = mean_and_covariance(x)
        return cls(mean, cov + GAUSSIAN_RIDGE * np.eye(len(mean)))

    @classmethod
    def grid(cls, x, neighbourhood=4, shape=None):
        """max log det Lambda - tr(S Lambda) over precisions with the grid pattern of the patches in the rows
        of x (Newton, exact): `shape` (height, width, channels), by default square grayscale p x p (colour:
        C x C blocks between neighbouring pixels and within a pixel; `energy_models.linalg.grid`)."""
        from energy_models.data.arrays import check_covariance
        from energy_models.gaussian.mle import fit_grid_mle
        from energy_models.linalg import grid as grid_lib
        from energy_models.whitening import mean_and_covariance

        mean, cov = mean_and_covariance(x)
        check_covariance(cov, "the training patches", "use photographs with texture (--images)", len(x))
        if shape is None:
            side = math.isqrt(len(mean))
            if side * side != len(mean):
                raise UserError(f"patches have {len(mean)} pixels, not a square number; give the fitted grid "
                                "Gaussian their shape (cut them with python -m train.dem --images)")
            shape = (side, side, 1)
        pattern = grid_lib.grid_pattern(shape[0], shape[1], neighbourhood, shape[2])
        precision = fit_grid_mle(cov + GAUSSIAN_RIDGE * np.eye(len(mean)), pattern).precision
        gaussian = cls(mean, np.linalg.inv(precision))
        # The fitted precision itself, into `precision`'s cache: inverting the covariance back would
        # cost another inversion and blur the grid's zeros by rounding.
        gaussian.__dict__["precision"] = precision
        return gaussian

    # Cached: train.dem asks for them once per sample/log_prob call and for the whitening, noise and export.
    @functools.cached_property
    def cholesky(self):
        """L with Sigma = L L^T."""
        return np.linalg.cholesky(self.covariance)

    @functools.cached_property
    def precision(self):
        """Lambda = Sigma^-1."""
        return np.linalg.inv(self.covariance)

    @functools.cached_property
    def precision_cholesky(self):
        """Lower L with Lambda = L L^T (the `--whiten gaussian` whitening W = L^T and the NCE noise).

        Raises:
            NotPositiveDefiniteError: Lambda is not positive definite.
        """
        from energy_models.linalg.positive_definite import checked_cholesky

        return checked_cholesky(self.precision)

    def sample(self, n, seed):
        eps = np.random.default_rng(seed).standard_normal((n, len(self.mean)))
        return (self.mean + eps @ self.cholesky.T).astype(np.float32)

    def log_prob(self, x):
        chol = self.cholesky
        a = np.linalg.solve(chol, (np.asarray(x, np.float64) - self.mean).T)  # L^-1 (x - m)
        return -0.5 * np.sum(a * a, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * len(self.mean) * np.log(2 * np.pi)
