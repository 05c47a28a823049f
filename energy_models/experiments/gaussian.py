"""`python -m train.gaussian` end to end: load data, fit a grid Gaussian, evaluate it exactly, draw figures, export.

`train_and_evaluate(config)` is what `python -m train.gaussian` runs; it is importable and tested.
"""

import time

import numpy as np

from energy_models import figures, files, savedmodel
from energy_models.experiments import rundir
from energy_models.gaussian import export
from energy_models.gaussian.fits import ESTIMATORS
from energy_models.gaussian.model import (
    GridGaussian,
    average_log_likelihood,
    expected_log_likelihood,
    full_covariance_log_likelihood,
)


def load_dataset(config, run_dir):
    """The dataset named by `config.dataset`: an object with train_pixels, test, mean, covariance().

    For patches, the patch set is loaded from `--patches` or cut from `--images` and saved to
    RUN_DIR/patches.npz, so that later models can train and be scored on exactly the same patches.
    """
    if config.dataset == "mnist":
        from energy_models.data.mnist import load_noisy_mnist

        return load_noisy_mnist(config.noise_std, config.seed, config.data_dir, config.limit)
    from energy_models.data import patches
    from energy_models.data.arrays import ArrayData
    from energy_models.data.images import default_image_source
    from energy_models.data.patch_files import load_patch_set

    if config.patches:
        patch_set = load_patch_set(config.patches)
    else:
        source = config.images or default_image_source()
        patch_set = patches.make_patch_set(source, config.num_patches, config.seed,
                                           config.heldout_fraction, patch_size=config.patch_size,
                                           colour=config.colour)
        patch_set.save(run_dir / "patches.npz")
    return ArrayData(patch_set.train[:config.limit], patch_set.heldout[:config.limit],
                     image_shape=patch_set.shape)


def _summaries(model, data, config, run_dir, writer, metrics):
    """Samples and precision maps as PNG and TensorBoard images; final scalars to TensorBoard."""
    import tensorflow as tf

    samples = model.sample(64, seed=config.seed)
    real = data.test[:64]
    shape = data.image_shape
    sample_grid = figures.image_grid(samples, size=shape)
    real_grid = figures.image_grid(real, size=shape)
    figures.save_gray_png(run_dir / "figures" / "samples.png", sample_grid)
    figures.save_gray_png(run_dir / "figures" / "test_data.png", real_grid)
    diag = np.asarray(model.precision_layer.diagonal)
    couplings = np.asarray(model.precision_layer.couplings) * model.pattern.masks
    maps = figures.precision_maps(diag, couplings, model.pattern.offsets,
                                  run_dir / "figures" / "precision_maps.png",
                                  title=f"{config.estimator}, {config.neighbourhood} neighbours")
    images = {"samples": sample_grid, "test_data": real_grid}
    if config.dataset == "patches":
        images.update(_whitening_figures(model, data, config, run_dir))
    with writer.as_default(step=0):
        for name, mosaic in images.items():
            tf.summary.image(name, figures.summary_image(mosaic), step=0)
        tf.summary.image("precision_maps", maps[None], step=0)
        for key in ("test_log_likelihood", "train_log_likelihood", "log_z_analytic", "log_z_estimate",
                    "smallest_eigenvalue", "full_covariance_test_log_likelihood"):
            if metrics.get(key) is not None:
                tf.summary.scalar(key, metrics[key], step=0)
    writer.flush()


def _whitening_figures(model, data, config, run_dir):
    """The same held-out patches raw and whitened by ZCA, PCA and the fitted Gaussian (x -> L^T (x - mu))."""
    from energy_models.whitening import LinearWhitening

    patches = data.test[:64]
    whitenings = {
        "zca": LinearWhitening.zca(data.train_pixels, config.whiten_epsilon),
        "pca": LinearWhitening.pca(data.train_pixels, config.whiten_epsilon),
        "gaussian": LinearWhitening.from_precision_cholesky(data.mean, model.precision_cholesky()),
    }
    out = {}
    for name, layer in whitenings.items():
        # Whitened values are unbounded: each patch is rescaled to its own range to be visible.
        mosaic = figures.image_grid(np.asarray(layer(patches)), size=data.image_shape, scale="each")
        figures.save_gray_png(run_dir / "figures" / f"whitened_{name}.png", mosaic)
        out[f"whitened_{name}"] = mosaic
    return out


def train_and_evaluate(config):
    """Fits the grid Gaussian named by `config`, evaluates it exactly, writes figures, metrics and model.

    Returns:
      The metrics dict (also written to RUN_DIR/metrics.json).

    Raises:
      UserError: for bad settings, missing data or a precision that is not positive definite.
    """
    import tensorflow as tf

    strategy, run_dir, settings, defaults = rundir.start_run(config)
    tf.keras.utils.set_random_seed(config.seed)

    data = load_dataset(config, run_dir)
    loaded = time.perf_counter()
    height, width, channels = data.image_shape  # MNIST 28 x 28; patches: --patch-size or the patch file's own.
    model = GridGaussian(height, width, config.neighbourhood, channels=channels)
    model.set_mean(data.mean)
    train_writer = tf.summary.create_file_writer(str(run_dir / "train"))
    start = time.perf_counter()
    with strategy.scope():  # The estimator's variables and optimiser are created, and trained, here.
        extras = ESTIMATORS[config.estimator](config, data, model, train_writer)
    extras["replicas"] = strategy.num_replicas_in_sync
    seconds = time.perf_counter() - start
    train_writer.flush()

    log_z = model.log_normalizer()  # Raises NotPositiveDefiniteError with the smallest eigenvalue.
    metrics = {
        "dataset": config.dataset,
        "estimator": config.estimator,
        "neighbourhood": config.neighbourhood,
        "n_params": model.pattern.num_params,
        "image_shape": list(data.image_shape),  # (height, width, channels) of a row.
        "n_train": int(len(data.train_pixels)),
        "n_test": int(len(data.test)),
        "train_log_likelihood": expected_log_likelihood(model, data.covariance()),
        "test_log_likelihood": average_log_likelihood(model, data.test),
        "log_z_analytic": log_z,
        "smallest_eigenvalue": model.smallest_eigenvalue(),
        "full_covariance_test_log_likelihood": full_covariance_log_likelihood(
            data.test, data.mean, data.covariance()),
        "seconds": seconds,
        **extras,
    }
    if metrics.get("log_z_estimate") is not None:
        metrics["log_z_error"] = metrics["log_z_estimate"] - log_z
    _summaries(model, data, config, run_dir, tf.summary.create_file_writer(str(run_dir / "eval")),
               metrics)
    module = export.gaussian_module(model, {"dataset": config.dataset, "estimator": config.estimator,
                                            "noise_std": config.noise_std})
    metrics["export_dir"] = savedmodel.save_atomically(module, config.export_dir, config.overwrite, settings,
                                                   defaults, rundir.RESUME_IGNORES)
    # The whole command after data loading: training, evaluation, figures and export.
    metrics["seconds_after_data_loading"] = time.perf_counter() - loaded
    metrics = rundir.earlier_timings(run_dir, metrics, metrics.get("resumed_from_epoch") != total_epochs(config),
                                     keys=("seconds", "fit_seconds", "seconds_after_data_loading"))
    files.write_json_atomically(run_dir / "metrics.json", metrics)
    return metrics


def total_epochs(config):
    """The last epoch of the run's time axis: adaptive NCE's rounds follow its score-matching round."""
    if config.estimator == "nce" and config.noise == "adaptive":
        return config.warmup_epochs + config.rounds * config.epochs
    return config.epochs


def summary_lines(metrics):
    """The short human summary printed by the command line."""
    lines = [
        f"{metrics['estimator']} on {metrics['dataset']}, {metrics['neighbourhood']} neighbours, "
        f"{metrics['n_params']} parameters, fitted in {metrics['seconds']:.1f} s",
        f"  log-likelihood (nats/example): train {metrics['train_log_likelihood']:.2f}, "
        f"test {metrics['test_log_likelihood']:.2f}",
        f"  log Z analytic (D/2 log 2pi + 1/2 log|Sigma|): {metrics['log_z_analytic']:.2f}",
    ]
    if metrics.get("log_z_estimate") is not None:
        lines.append(f"  log Z estimate: {metrics['log_z_estimate']:.2f} "
                     f"(error {metrics['log_z_error']:+.2f})")
    lines.append(f"  smallest eigenvalue of Lambda: {metrics['smallest_eigenvalue']:.4g}")
    lines.append(f"  SavedModel: {metrics['export_dir']}")
    return lines
