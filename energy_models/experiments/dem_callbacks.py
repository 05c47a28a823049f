"""Keras callbacks and figures of the deep-energy-model trainer: filters, responses and samples (the
divergence guard and checkpoints are `energy_models.training.checkpoints`)."""

import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from energy_models import figures
from energy_models.evaluation import mcmc_health
from energy_models.training.tensorboard import epoch_summaries

# Logged quantities that must stay finite (`checkpoints.DivergenceGuard`).
WATCHED = ("loss", "energy_data", "energy_negatives", "grad_norm")


def model_samples(model, gaussian, n, config, seed):
    """n samples of the model in pixel space: Gibbs sweeps started at draws of the fitted Gaussian."""
    return model.sample(gaussian.sample(n, seed), config.sample_sweeps, seed)


def filter_images(model, shape=None):
    """The filter mosaics of a trained model, by name (each tile scaled to its own range; `shape` is the
    patches' (height, width, channels), by default square grayscale):

    filters_pixel       rows of V as pixel-space filters f_j (f_j^T (x - m) = v_j^T u)
    filters_whitened    rows of V in the model's whitened space (only for whitened models)
    filters_by_weight   the pixel filters ordered by their total weight sum_k |W_kj| in the second layer
    effective_filters   rows of W V in pixel space: each latent's filter where s is linear
    """
    pixel = np.asarray(model.filters(), np.float64)
    weight = np.abs(np.asarray(model.energy.W)).sum(axis=0)
    images = {"filters_pixel": pixel, "filters_by_weight": pixel[np.argsort(weight)[::-1]],
              "effective_filters": np.asarray(model.energy.W, np.float64) @ pixel}
    if model.whitening is not None:
        images["filters_whitened"] = np.asarray(model.energy.effective_V, np.float64)
    return {name: figures.image_grid(rows, size=shape, scale="each") for name, rows in images.items()}


def responses_figure(model, heldout, path=None):
    """`figures.response_histograms` of the pixel filters' responses on held-out patches."""
    x = np.asarray(heldout, np.float64)
    responses = (x - x.mean(axis=0)) @ np.asarray(model.filters(), np.float64).T
    return figures.response_histograms(responses, path, title="filter responses on held-out patches "
                                                              "(standardised, log density)")


class ImageSummaries(keras.callbacks.Callback):
    """After every epoch: the filter mosaics (`filter_images`), the response histograms and samples of the
    model to TensorBoard.

    The samples run `sample_sweeps` Gibbs sweeps from the same Gaussian draws every epoch, so the
    sequence of images shows how the negatives evolve as the model trains.
    """

    def __init__(self, log_dir, gaussian, config, heldout=None, num=64, shape=None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.gaussian, self.config, self.num, self.shape = gaussian, config, num, shape
        self.heldout = None if heldout is None else np.asarray(heldout)[:2000]

    def on_epoch_end(self, epoch, logs=None):
        samples = figures.image_grid(model_samples(self.model, self.gaussian, self.num, self.config,
                                                   self.config.seed), size=self.shape)
        with epoch_summaries(self.writer, epoch + 1):
            for name, mosaic in filter_images(self.model, self.shape).items():
                tf.summary.image(name, figures.summary_image(mosaic))
            tf.summary.image("samples", figures.summary_image(samples))
            if self.heldout is not None:
                tf.summary.image("responses", responses_figure(self.model, self.heldout)[None])
        self.writer.flush()


class MCMCHealth(keras.callbacks.Callback):
    """Every `every` epochs and after the last: `mcmc_health.model_diagnostics` of the model's sampler to
    TensorBoard as mcmc/rhat_max, mcmc/ess_min and mcmc/energy_gap; the newest values stay in `last`.

    Not every epoch: one check is 800 sweeps of 64 chains, a sizeable fraction of a default dsm epoch
    (BENCHMARKS.md, "Issue 17: MCMC health, image mosaics, exact MLE on large patches").
    """

    def __init__(self, log_dir, gaussian, heldout, seed, every=10):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.gaussian, self.heldout, self.seed, self.every = gaussian, np.asarray(heldout)[:2000], seed, every
        self.last, self.seconds = None, 0.0

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        start = time.perf_counter()
        self.last = mcmc_health.model_diagnostics(self.model, self.gaussian, self.heldout, self.seed)
        self.seconds += time.perf_counter() - start
        with epoch_summaries(self.writer, epoch + 1):
            for name in ("rhat_max", "ess_min", "energy_gap"):
                tf.summary.scalar(f"mcmc/{name}", self.last[f"mcmc_{name}"])
        self.writer.flush()


def write_figures(model, gaussian, heldout, config, run_dir, shape=None):
    """RUN_DIR/figures: every `filter_images` mosaic, responses.png, samples.png, gaussian_samples.png and
    heldout.png (filters.png is filters_pixel, the name earlier runs used); `shape` as for `filter_images`."""
    out = pathlib.Path(run_dir) / "figures"
    mosaics = filter_images(model, shape)
    figures.save_gray_png(out / "filters.png", mosaics["filters_pixel"])
    for name, mosaic in mosaics.items():
        if name != "filters_pixel":
            figures.save_gray_png(out / f"{name}.png", mosaic)
    responses_figure(model, heldout[:5000], out / "responses.png")
    figures.save_gray_png(out / "samples.png",
                          figures.image_grid(model_samples(model, gaussian, 64, config, config.seed), size=shape))
    figures.save_gray_png(out / "gaussian_samples.png",
                          figures.image_grid(gaussian.sample(64, config.seed), size=shape))
    figures.save_gray_png(out / "heldout.png", figures.image_grid(heldout[:64], size=shape))
