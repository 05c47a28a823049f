"""`ArrayData`: training and held-out rows already in memory (patches), in the shape the trainers expect."""

import dataclasses

import numpy as np

from energy_models.errors import UserError
from energy_models.whitening import mean_and_covariance


def check_covariance(covariance, what, remedy, rows=None):
    """Refuses, in one line, data a Gaussian cannot be fitted to: pixels that never vary, or rows that
    vary in fewer directions than they have pixels (constant or smooth images). The Gaussian's density
    needs a positive-definite covariance; without one the exact fit has no maximum and fails deep inside
    a Cholesky factorisation.

    Args:
      covariance: float64 [D, D], the training rows' covariance S.
      what: what the rows are, e.g. "the training patches".
      remedy: what to do, e.g. "use photographs with texture (--images)".
      rows: how many rows S was computed from. With no more rows than pixels S is singular whatever the
        images, and the grid's sparse pattern may still be fitted, so only the variances are checked.

    Raises:
      UserError: naming the number of constant pixels or the number of directions with variance.
    """
    variances = np.diag(covariance)
    flat = int(np.sum(variances <= 1e-12))
    if flat:
        raise UserError(f"{what} have zero variance in {flat} of {len(variances)} pixels (e.g. constant "
                        f"images), so no Gaussian can be fitted; {remedy}")
    if rows is not None and rows <= len(variances):
        return
    eigenvalues = np.linalg.eigvalsh(covariance)
    # 1e-9 of the largest: 8-bit photographs keep a quantisation floor of about (1/255)^2 / 12 = 1.3e-6
    # in every direction (1e-5 of the largest eigenvalue of the bundled photographs' patches).
    degenerate = int(np.sum(eigenvalues <= 1e-9 * eigenvalues[-1]))
    if degenerate:
        raise UserError(f"{what} vary in only {len(eigenvalues) - degenerate} of {len(eigenvalues)} directions "
                        f"(smooth or repetitive images), so no Gaussian can be fitted; {remedy}")


def row_image_shape(dim, image_shape=None, name="x"):
    """(height, width, channels) of rows of `dim` values: `image_shape` given as (height, width) or
    (height, width, channels), or by default square grayscale. ValueError naming `name` or `image_shape`
    when it does not fit."""
    if image_shape is None:
        side = int(round(np.sqrt(dim)))
        if side * side != dim:
            raise ValueError(f"{name} has rows of {dim} values, not square images; pass image_shape=(height, "
                             f"width) or (height, width, channels)")
        return (side, side, 1)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape += (1,)
    if len(shape) != 3 or min(shape) < 1 or int(np.prod(shape)) != dim:
        raise ValueError(f"image_shape {tuple(image_shape)} does not describe rows of {dim} values "
                         f"(height x width x channels must equal D)")
    return shape


@dataclasses.dataclass
class ArrayData:
    """Training rows, held-out rows and the training mean; the interface `NoisyMnist` also offers.

    Attributes:
      train_pixels: float32 [n_train, D] (no noise is added: patches are used as they are).
      test: float32 [n_test, D], the held-out rows.
      mean: float32 [D], the training mean mu.
      image_shape: (height, width, channels) of a row, D = h * w * c (default: square grayscale).
    """

    train_pixels: np.ndarray
    test: np.ndarray
    mean: np.ndarray = None
    image_shape: tuple = None

    def __post_init__(self):
        for name, rows in (("training", self.train_pixels), ("held-out", self.test)):
            if len(rows) < 2:
                raise UserError(f"the {name} split has {len(rows)} rows; a fit and its evaluation need at "
                                f"least 2 in each (for patches: cut a new set with --images, with enough "
                                f"images for --heldout-fraction to hold some out)")
        if self.mean is None:
            self.mean = self.train_pixels.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.image_shape = row_image_shape(self.dim, self.image_shape, "train_pixels")
        self._covariance = None

    @property
    def dim(self):
        return self.train_pixels.shape[1]

    def covariance(self):
        """S = (1/n) sum (x - mu)(x - mu)^T of the training rows, float64 (computed once, in chunks)."""
        if self._covariance is None:
            covariance = mean_and_covariance(self.train_pixels)[1]
            check_covariance(covariance, "the training rows", "use photographs with texture (--images), or "
                             "other images", rows=len(self.train_pixels))
            self._covariance = covariance
        return self._covariance

    def noisy_train(self, seed):
        return self.train_pixels

    def training_dataset(self, batch_size, seed, start_epoch=0):
        """An endless dataset of reshuffled training batches from `start_epoch` (see `NoisyMnist`)."""
        from energy_models.data.batches import epoch_batches, train_constant

        return epoch_batches(train_constant(self), batch_size, seed, start_epoch)
