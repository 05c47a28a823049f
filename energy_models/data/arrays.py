"""`ArrayData`: training and held-out rows already in memory (patches), in the shape the trainers expect."""

import dataclasses

import numpy as np

from energy_models.whitening import mean_and_covariance


@dataclasses.dataclass
class ArrayData:
    """Training rows, held-out rows and the training mean; the interface `NoisyMnist` also offers.

    Attributes:
      train_pixels: float32 [n_train, D] (no noise is added: patches are used as they are).
      test: float32 [n_test, D], the held-out rows.
      mean: float32 [D], the training mean mu.
    """

    train_pixels: np.ndarray
    test: np.ndarray
    mean: np.ndarray = None

    def __post_init__(self):
        if self.mean is None:
            self.mean = self.train_pixels.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._covariance = None

    @property
    def dim(self):
        return self.train_pixels.shape[1]

    def covariance(self):
        """S = (1/n) sum (x - mu)(x - mu)^T of the training rows, float64 (computed once, in chunks)."""
        if self._covariance is None:
            self._covariance = mean_and_covariance(self.train_pixels)[1]
        return self._covariance

    def noisy_train(self, seed):
        return self.train_pixels

    def training_dataset(self, batch_size, seed, start_epoch=0):
        """An endless dataset of reshuffled training batches from `start_epoch` (see `NoisyMnist`)."""
        from energy_models.data.batches import epoch_batches

        return epoch_batches(self.train_pixels, batch_size, seed, start_epoch)
