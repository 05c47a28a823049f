"""Keras callbacks and figures of the deep-energy-model trainer: divergence guard, filters, samples."""

import math
import os
import pathlib
import uuid

import keras
import tensorflow as tf

from energy_models import figures

# Logged quantities that must stay finite; NaN or inf in any of them means training diverged.
WATCHED = ("loss", "energy_data", "energy_negatives", "grad_norm")


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or energy and restores the last good checkpoint.

    The weights are saved (atomically) at the start and after every epoch that ended finite, to
    CHECKPOINT_DIR/last_good.weights.h5; `message` names the epoch and step and what to lower.
    keras.callbacks.TerminateOnNaN only stops, and Keras still runs on_epoch_end after a stop, so a
    plain ModelCheckpoint would save the diverged weights.
    """

    def __init__(self, checkpoint_dir, config):
        super().__init__()
        self.path = pathlib.Path(checkpoint_dir) / "last_good.weights.h5"
        self.config = config
        self.diverged = False
        self.message = None
        self.epoch = 0
        self.epochs_done = 0
        self.good_epoch = None

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".tmp-{uuid.uuid4().hex[:8]}.weights.h5"
        self.model.save_weights(str(tmp))
        os.replace(tmp, self.path)

    def on_train_begin(self, logs=None):
        self._save()
        self.good_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = [k for k in WATCHED if k in (logs or {}) and not math.isfinite(float(logs[k]))]
        if not bad or self.diverged:
            return
        self.diverged = True
        self.model.stop_training = True
        self.model.load_weights(str(self.path))
        where = "the start" if self.good_epoch == 0 else f"the end of epoch {self.good_epoch}"
        self.message = (f"training diverged at epoch {self.epoch + 1}, step {batch + 1} (non-finite "
                        f"{', '.join(bad)}); try a smaller --learning-rate (now {self.config.learning_rate:g}) "
                        f"or --step-size (now {self.config.step_size:g}); the last good weights (from {where}) "
                        f"are in {self.path}")

    def on_epoch_end(self, epoch, logs=None):
        if not self.diverged:
            self.epochs_done = epoch + 1
            self._save()
            self.good_epoch = epoch + 1


def model_samples(model, gaussian, n, config, seed):
    """n samples of the model in pixel space: Gibbs sweeps started at draws of the fitted Gaussian."""
    return model.sample(gaussian.sample(n, seed), config.sample_sweeps, seed)


class ImageSummaries(keras.callbacks.Callback):
    """After every epoch: filters (rows of V in pixel space) and samples of the model to TensorBoard.

    The samples run `sample_sweeps` Gibbs sweeps from the same Gaussian draws every epoch, so the
    sequence of images shows how the negatives evolve as the model trains.
    """

    def __init__(self, log_dir, gaussian, config, num=64):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.gaussian, self.config, self.num = gaussian, config, num

    def on_epoch_end(self, epoch, logs=None):
        filters = figures.image_grid(self.model.filters(), scale="each")
        samples = figures.image_grid(model_samples(self.model, self.gaussian, self.num, self.config,
                                                   self.config.seed))
        with self.writer.as_default(step=epoch + 1):
            tf.summary.image("filters", filters[None, :, :, None])
            tf.summary.image("samples", samples[None, :, :, None])
        self.writer.flush()


def write_figures(model, gaussian, heldout, config, run_dir):
    """filters.png, samples.png, gaussian_samples.png and heldout.png in RUN_DIR/figures."""
    out = pathlib.Path(run_dir) / "figures"
    figures.save_gray_png(out / "filters.png", figures.image_grid(model.filters(), scale="each"))
    figures.save_gray_png(out / "samples.png",
                          figures.image_grid(model_samples(model, gaussian, 64, config, config.seed)))
    figures.save_gray_png(out / "gaussian_samples.png", figures.image_grid(gaussian.sample(64, config.seed)))
    figures.save_gray_png(out / "heldout.png", figures.image_grid(heldout[:64]))
