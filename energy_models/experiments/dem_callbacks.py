"""Keras callbacks and figures of the deep-energy-model trainer: filters and samples (the divergence guard
and checkpoints are `energy_models.checkpoints`)."""

import pathlib

import keras
import tensorflow as tf

from energy_models import figures

# Logged quantities that must stay finite (`checkpoints.DivergenceGuard`).
WATCHED = ("loss", "energy_data", "energy_negatives", "grad_norm")


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
