"""MNIST through tensorflow-datasets, as noisy, centred vectors (pixels / 255 plus Gaussian noise).

    x = pixels / 255 + n,   n ~ N(0, noise_std^2 I),   then the training split's mean is removed.

The noise is fresh: the training pipeline draws new noise for every batch of every epoch, and the exact
estimator uses the covariance of this noisy distribution, S = Cov(pixels / 255) + noise_std^2 I (its
expectation over the noise). The held-out test split gets one noise draw, fixed by the seed.

Arrays here are noisy pixels in raw pixel space; the mean mu is removed by the models themselves (they
store it), so that a SavedModel scores raw pixels.
"""

import dataclasses
import logging
import os
import pathlib
import socket

import numpy as np

from energy_models.errors import DataUnavailableError

MANUAL_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# Where TFDS's MNIST builder fetches from when it has to download.
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def resolve_data_dir(data_dir=None):
    """The TFDS data folder: `data_dir`, else $TFDS_DATA_DIR, else TFDS's default ~/tensorflow_datasets."""
    if data_dir:
        return str(pathlib.Path(data_dir).expanduser())
    if os.environ.get("TFDS_DATA_DIR"):
        return os.environ["TFDS_DATA_DIR"]
    return str(pathlib.Path("~/tensorflow_datasets").expanduser())


def _unavailable_message(data_dir):
    manual = pathlib.Path(data_dir) / "downloads" / "manual"
    return (f"MNIST is not prepared in {data_dir} and cannot be downloaded (no network): point "
            f"TFDS_DATA_DIR or --data-dir at a folder where tensorflow-datasets has prepared MNIST, or put "
            f"the four original IDX files ({', '.join(MANUAL_FILES)}) in {manual}")


def _network_reachable(timeout=3.0):
    # TFDS retries a failed download for minutes; one short connection attempt tells us in seconds.
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def mnist_builder(data_dir=None):
    """A prepared TFDS MNIST builder, preparing it from manual files or the network if needed.

    Args:
      data_dir: TFDS data folder (see `resolve_data_dir`).

    Returns:
      A `tfds.core.DatasetBuilder` whose data are prepared.

    Raises:
      DataUnavailableError: within seconds when MNIST is neither prepared, nor in
        `<data_dir>/downloads/manual/`, nor downloadable.
    """
    import tensorflow_datasets as tfds  # Imported here: it costs seconds and only loaders need it.

    data_dir = resolve_data_dir(data_dir)
    # tensorflow-datasets logs "Variant folder ... has no dataset_info.json" through absl for a half-made
    # folder; the one line below says what to do, so its warnings are kept out of the way here.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        builder = tfds.builder("mnist", data_dir=data_dir)
        prepared = builder.is_prepared()
    finally:
        absl_logger.setLevel(level)
    if prepared:
        return builder
    manual = pathlib.Path(data_dir) / "downloads" / "manual"
    if all((manual / name).is_file() for name in MANUAL_FILES):
        config = tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False)
    elif _network_reachable():
        config = None
    else:
        raise DataUnavailableError(_unavailable_message(data_dir))
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # TFDS raises many types (checksums, I/O, HTTP); all mean "no data".
        raise DataUnavailableError(f"{_unavailable_message(data_dir)} ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from e
    return builder


def load_mnist_images(split, data_dir=None):
    """Raw MNIST images of one split as uint8 numpy [n, 28, 28].

    Args:
      split: "train" or "test".
      data_dir: TFDS data folder.

    Raises:
      DataUnavailableError: see `mnist_builder`.
    """
    import tensorflow_datasets as tfds

    builder = mnist_builder(data_dir)
    # Batches of 10,000 rather than batch_size=-1: the whole-split tensor path holds several copies of
    # the split at its peak (BENCHMARKS.md, "energy_models/data/mnist.py: loading in batches"); this keeps
    # only the uint8 images.
    batches = tfds.as_numpy(builder.as_dataset(split=split, batch_size=10_000))
    return np.concatenate([b["image"][..., 0] for b in batches])


def load_mnist_rows(split, data_dir=None):
    """MNIST images of one split as float32 rows [n, 784] of pixels / 255, in [0, 1].

    Raises:
      DataUnavailableError: see `mnist_builder`.
    """
    images = load_mnist_images(split, data_dir)
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


@dataclasses.dataclass
class NoisyMnist:
    """Noisy MNIST: clean training pixels with fresh noise per epoch, a fixed noisy test split.

    Attributes:
      train_pixels: float32 [n_train, 784], clean pixels / 255 of the training split (noise is added
        freshly by `training_dataset`).
      test: float32 [n_test, 784], noisy test pixels (one fixed draw; the mean is not removed).
      mean: float32 [784], the training split's mean pixel vector mu (the noise has mean 0).
      noise_std: the noise standard deviation.
      seed: the seed of the test noise.
    """

    train_pixels: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    noise_std: float
    seed: int

    @property
    def dim(self):
        return self.train_pixels.shape[1]

    @property
    def image_shape(self):
        """(height, width, channels) of a digit."""
        return (28, 28, 1)

    def covariance(self):
        """S = Cov(pixels / 255) + noise_std^2 I, float64 [784, 784]: the exact covariance of the
        noisy training distribution, with the noise integrated out (computed once)."""
        if getattr(self, "_covariance", None) is None:
            from energy_models.data.arrays import check_covariance
            from energy_models.whitening import mean_and_covariance

            covariance = mean_and_covariance(self.train_pixels)[1]
            covariance[np.diag_indices_from(covariance)] += self.noise_std ** 2
            check_covariance(covariance, "the MNIST training digits", "keep --noise-std above 0 (the "
                             "digits' border pixels are always 0)")
            self._covariance = covariance
        return self._covariance

    def noisy_train(self, seed):
        """One noise draw of the training split, float32 [n_train, 784]."""
        return add_pixel_noise(self.train_pixels, self.noise_std, seed)

    def training_dataset(self, batch_size, seed, start_epoch=0):
        """An endless `tf.data.Dataset` of noisy pixel batches, fresh noise in each, from `start_epoch`.

        Order and noise are functions of (seed, epoch, step) (`energy_models.data.batches`), so a run
        resumed at epoch k sees what an uninterrupted one sees. `steps_per_epoch = n_train // batch_size`.
        """
        from energy_models.data.batches import epoch_batches, train_constant

        return epoch_batches(train_constant(self), batch_size, seed, start_epoch, self.noise_std)


def add_pixel_noise(pixels, noise_std, seed):
    """pixels + N(0, noise_std^2) per value, drawn from numpy's default generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    noise *= np.float32(noise_std)
    noise += pixels
    return noise


def load_noisy_mnist(noise_std=0.1, seed=0, data_dir=None, limit=None):
    """Loads MNIST as noisy, centred vectors.

    Args:
      noise_std: standard deviation of the Gaussian noise added to every pixel (0.1: variance 1/100).
      seed: seed of the held-out test split's noise draw.
      data_dir: TFDS data folder (see `resolve_data_dir`).
      limit: optional number of examples to keep from each split (for quick runs and tests).

    Returns:
      A `NoisyMnist`.

    Raises:
      DataUnavailableError: when MNIST cannot be found or downloaded (within seconds).
    """
    train_pixels = load_mnist_rows("train", data_dir)[:limit]
    test_pixels = load_mnist_rows("test", data_dir)[:limit]
    mean = train_pixels.mean(axis=0, dtype=np.float64).astype(np.float32)
    test_noisy = add_pixel_noise(test_pixels, noise_std, np.random.SeedSequence([seed, 1]))
    return NoisyMnist(train_pixels=train_pixels, test=test_noisy, mean=mean,
                      noise_std=float(noise_std), seed=int(seed))
