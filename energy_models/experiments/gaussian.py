"""Exercise 1 end to end: load data, fit a grid Gaussian, evaluate it exactly, draw figures, export.

`train_and_evaluate(config)` is what `python -m train.gaussian` runs; it is importable and tested.
"""

import dataclasses
import pathlib
import time

import numpy as np

from energy_models import export, figures, rundir
from energy_models.distribute import strategy_for
from energy_models.errors import UserError
from energy_models.experiments.flags import check_applies, check_ranges, flag
from energy_models.gaussian import (LOG_2PI, GridGaussian, average_log_likelihood,
                                    expected_log_likelihood, full_covariance_log_likelihood)



@dataclasses.dataclass
class GaussianConfig:
    """Every setting of `python -m train.gaussian` (each field is a command-line flag)."""

    dataset: str = flag("data to model: mnist (Exercise 1) or patches of photographs (Exercise 2)",
                         default="mnist", choices=("mnist", "patches"))
    estimator: str = flag("how Lambda is estimated: mle (exact maximum likelihood), nce, cnce "
                           "(conditional NCE) or sm (score matching)", default="mle",
                           choices=("mle", "nce", "cnce", "sm"))
    neighbourhood: int = flag("grid couplings: 4 or 8 neighbours", default=4,
                               choices=(4, 8))
    noise_std: float = flag("std of the Gaussian noise added to every MNIST pixel (0.1: variance 1/100)",
                             default=0.1)
    epochs: int = flag("training epochs of the stochastic estimators (default: 10; nce with --noise "
                        "adaptive: 1 per round, 2 with --neighbourhood 8)", default=None)
    batch_size: int = flag("minibatch size of the stochastic estimators", default=256)
    optimizer: str = flag("optimiser of the stochastic estimators", default="adam",
                           choices=("sgd", "rmsprop", "adam"))
    learning_rate: float = flag("starting learning rate of the stochastic estimators, cosine-decayed to 1%% "
                                 "(default: 0.01; nce with --noise adaptive: 0.03 in its rounds)",
                                 default=None)
    nu: float = flag("nce: noise-to-data ratio (weight of the noise term)", default=10.0)
    noise: str = flag("nce: noise distribution N(mu, Sigma_n). adaptive: rounds, a score-matching fit "
                       "first and then each NCE round's noise the previous round's fitted Gaussian (close "
                       "to the model, so NCE learns Lambda and log Z where its classifier is well "
                       "determined); or fixed: Sigma_n = scaled identity, the data's variances or the "
                       "data's full covariance (far from the grid family: NCE stays tens of nats below "
                       "maximum likelihood)", default="adaptive",
                       choices=("adaptive", "isotropic", "diagonal", "full"))
    rounds: int = flag("nce --noise adaptive: NCE rounds after the score-matching round (default: 1; "
                        "2 with --neighbourhood 8)", default=None)
    warmup_epochs: int = flag("nce --noise adaptive: epochs of the score-matching round that makes the "
                               "first noise (default: 2; 4 with --neighbourhood 8)", default=None)
    noise_model: str = flag("nce: a Gaussian SavedModel of the same data (e.g. this command's sm export) "
                             "whose covariance Lambda^-1 replaces the data's in --noise full: a noise "
                             "closer to the grid family (README, 'The log Z question')", default=None)
    noise_samples: int = flag("nce: fresh noise draws per step (default: --batch-size)", default=None)
    kappa: int = flag("cnce: noise samples per data point", default=1)
    epsilon: float = flag("cnce: conditional noise scale (default: the rule of "
                           "energy_models.estimators.cnce.choose_epsilon)", default=None)
    pd_floor: float = flag("nce, cnce, sm: smallest eigenvalue the standardised precision "
                            "diag(sigma) Lambda diag(sigma) is kept above (a step that crosses it is "
                            "shortened towards the last tested point)", default=1e-3)
    pd_check_every: int = flag("nce, cnce, sm: steps between positive-definiteness tests (also at "
                                "every epoch end)", default=5)
    pd_mode: str = flag("nce, cnce, sm: what a step that leaves the cone gets: projected back along the "
                         "violated eigenvalues' normals (project) or shortened towards the last tested "
                         "point (backtrack)", default="project", choices=("project", "backtrack"))
    seed: int = flag("seed of every random draw (noise, shuffling, samples)", default=0)
    distribute: str = flag("nce, cnce, sm: tf.distribute strategy: none (one device), mirrored (all local "
                            "GPUs, else all logical CPUs) or multiworker (machines listed in TF_CONFIG); "
                            "--batch-size is the global batch", default="none",
                            choices=("none", "mirrored", "multiworker"))
    checkpoint_every: int = flag("nce, cnce, sm: epochs between checkpoints in RUN_DIR/checkpoints (a "
                                  "re-run of the same command resumes from the newest)", default=1)
    data_dir: str = flag("tensorflow-datasets data folder (default: $TFDS_DATA_DIR or "
                          "~/tensorflow_datasets)", default=None)
    limit: int = flag("use only the first N examples of each split (quick runs)", default=None)
    images: str = flag("patches: a folder (searched recursively), glob or file of photographs "
                        "(default: photographs shipped with scikit-image)", default=None)
    num_patches: int = flag("patches: number of patches to cut (training + held-out)",
                             default=50_000)
    patch_size: str = flag("patches: size of the patches to cut, a side p (p x p) or HxW such as 16x32 (the "
                            "model's grid is H x W; a --patches file brings its own size)", default=28,
                            metavar="P|HxW")
    colour: bool = flag("patches: keep the photographs' colour: RGB patches of H x W x 3 values; the grid then "
                         "couples every channel of a pixel with every channel of the same pixel and of its "
                         "neighbours (a --patches file brings its own channels)", default=False)
    patches: str = flag("patches: load this .npz patch set instead of cutting new patches",
                         default=None)
    heldout_fraction: float = flag("patches: fraction of the images held out (whole images)",
                                    default=0.2)
    whiten_epsilon: float = flag("patches: regulariser added to covariance eigenvalues for the ZCA "
                                  "and PCA whitening figures", default=1e-4)
    run_dir: str = flag("where TensorBoard logs, config.json, metrics.json and figures go "
                         "(default: runs/gaussian-DATASET-ESTIMATOR-nNEIGHBOURHOOD)", default=None)
    export_dir: str = flag("where the SavedModel goes (default: "
                            "saved_models/gaussian-DATASET-ESTIMATOR-nNEIGHBOURHOOD)", default=None)
    overwrite: bool = flag("replace a run or export directory that holds something else",
                            default=False)

    def resolve(self):
        """Checks every value and fills in the default directories; returns self.

        Raises:
          UserError: naming the flag and the value when a value is out of range.
        """
        from energy_models.data.patches import size_setting

        self.patch_size = size_setting(self.patch_size)  # 28 (as recorded before HxW sizes) or "16x32".
        checks = [
            ("--noise-std", self.noise_std, self.noise_std >= 0, "must be >= 0"),
            ("--rounds", self.rounds, self.rounds is None or self.rounds >= 1, "must be a positive integer"),
            ("--warmup-epochs", self.warmup_epochs, self.warmup_epochs is None or self.warmup_epochs >= 1,
             "must be a positive integer"),
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, "must be a positive integer"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "must be a positive integer"),
            ("--learning-rate", self.learning_rate, self.learning_rate is None or self.learning_rate > 0,
             "must be > 0"),
            ("--limit", self.limit, self.limit is None or self.limit >= 2, "must be at least 2"),
            ("--neighbourhood", self.neighbourhood, self.neighbourhood in (4, 8), "must be 4 or 8"),
            ("--num-patches", self.num_patches, self.num_patches >= 2, "must be at least 2"),
            ("--heldout-fraction", self.heldout_fraction, 0 < self.heldout_fraction < 1,
             "must be between 0 and 1"),
            ("--whiten-epsilon", self.whiten_epsilon, self.whiten_epsilon > 0, "must be > 0"),
            ("--nu", self.nu, self.nu > 0, "must be > 0"),
            ("--noise-samples", self.noise_samples,
             self.noise_samples is None or self.noise_samples >= 1, "must be a positive integer"),
            ("--kappa", self.kappa, self.kappa >= 1, "must be an integer >= 1"),
            ("--epsilon", self.epsilon, self.epsilon is None or self.epsilon > 0, "must be > 0"),
            ("--pd-floor", self.pd_floor, self.pd_floor > 0, "must be > 0"),
            ("--pd-check-every", self.pd_check_every, self.pd_check_every >= 1,
             "must be a positive integer"),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 1,
             "must be a positive integer"),
        ]
        check_ranges(checks)
        check_applies(self, GAUSSIAN_SCOPES)  # Before the per-estimator defaults below fill in unset flags.
        adaptive = self.estimator == "nce" and self.noise == "adaptive"
        # 8 neighbours give 5 couplings per pixel instead of 3: two epochs of score matching end 14.9 nats
        # below the 8-neighbour mle (4 neighbours: 3.8), and one one-epoch NCE round gains 1.3-2.6 nats. A
        # 4-epoch warm-up and two two-epoch rounds reach gap 2.24, log Z error -0.35 (seeds 1, 2: 2.95 /
        # -1.04, 2.78 / -0.87). A third round helps on MNIST (gaps 1.5-2.1) but, on rows drawn from a known
        # 8-neighbour Gaussian where score matching already ends at the mle, it fell 4.4 nats
        # (test_estimator_defaults); README, "NCE in rounds".
        wide = self.neighbourhood == 8
        if adaptive:
            self.rounds = self.rounds or (2 if wide else 1)
            self.warmup_epochs = self.warmup_epochs or (4 if wide else 2)
        if self.epochs is None:
            self.epochs = (2 if wide else 1) if adaptive else 10
        if self.learning_rate is None:
            self.learning_rate = 0.03 if adaptive else 0.01
        if self.dataset == "patches" and not self.patches:
            from energy_models.data.patches import check_patch_memory

            check_patch_memory(self.num_patches, self.patch_size, 3 if self.colour else 1)  # Before any folder.
        if self.noise_model and (self.estimator != "nce" or self.noise != "full"):
            raise UserError("--noise-model applies to --estimator nce with --noise full")
        if self.estimator == "mle" and self.distribute != "none":
            raise UserError("--distribute applies to the stochastic estimators (nce, cnce, sm); mle is "
                            "solved exactly on one device: drop --distribute")
        name = f"gaussian-{self.dataset}-{self.estimator}-n{self.neighbourhood}"
        self.run_dir = self.run_dir or str(pathlib.Path("runs") / name)
        self.export_dir = self.export_dir or str(pathlib.Path("saved_models") / name)
        return self


# When a flag does something: (applies(config), where it applies). A flag set away from its default where
# it does nothing is refused (check_applies), e.g. --images without --dataset patches.
_STOCHASTIC = ("nce", "cnce", "sm")
GAUSSIAN_SCOPES = {
    "noise_std": (lambda c: c.dataset == "mnist", "--dataset mnist"),
    "images": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "num_patches": (lambda c: c.dataset == "patches" and not c.patches,
                    "--dataset patches (without --patches)"),
    "heldout_fraction": (lambda c: c.dataset == "patches" and not c.patches,
                         "--dataset patches (without --patches)"),
    "patch_size": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "colour": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "patches": (lambda c: c.dataset == "patches", "--dataset patches"),
    "whiten_epsilon": (lambda c: c.dataset == "patches", "--dataset patches"),
    "data_dir": (lambda c: c.dataset == "mnist", "--dataset mnist"),
    **{name: (lambda c: c.estimator in _STOCHASTIC, "--estimator nce, cnce or sm")
       for name in ("epochs", "batch_size", "optimizer", "learning_rate", "pd_floor", "pd_check_every",
                    "pd_mode", "checkpoint_every")},
    **{name: (lambda c: c.estimator == "nce", "--estimator nce") for name in ("nu", "noise", "noise_samples")},
    **{name: (lambda c: c.estimator == "cnce", "--estimator cnce") for name in ("kappa", "epsilon")},
    **{name: (lambda c: c.estimator == "nce" and c.noise == "adaptive", "--estimator nce --noise adaptive")
       for name in ("rounds", "warmup_epochs")},
}


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

    if config.patches:
        patch_set = patches.load_patch_set(config.patches)
    else:
        source = config.images or default_image_source()
        patch_set = patches.make_patch_set(source, config.num_patches, config.seed,
                                           config.heldout_fraction, patch_size=config.patch_size,
                                           colour=config.colour)
        patch_set.save(run_dir / "patches.npz")
    return ArrayData(patch_set.train[:config.limit], patch_set.heldout[:config.limit],
                     image_shape=patch_set.shape)


# Above this many values per image the exact MLE uses block-tridiagonal Newton-CG: dense Newton took 2.7 s
# at D = 784 but 635 s and 4.9 GB at 4,096, where Newton-CG takes 23 s and 1.1 GB (BENCHMARKS.md).
DENSE_MLE_MAX_DIM = 1024


def fit_mle(config, data, model, writer):
    """Exact constrained maximum likelihood: `estimators.mle` (dense Newton) up to DENSE_MLE_MAX_DIM values,
    `estimators.mle_newton_cg` above; returns extras for metrics."""
    import tensorflow as tf

    from energy_models.estimators.mle import fit_grid_mle
    from energy_models.estimators.mle_newton_cg import fit_grid_mle_newton_cg

    d = data.dim

    def log_step(iteration, objective, residual):
        with writer.as_default(step=iteration):
            # Average training log-likelihood = -D/2 log(2 pi) + objective / 2.
            tf.summary.scalar("loss", 0.5 * d * LOG_2PI - 0.5 * objective)
            tf.summary.scalar("max_abs_residual", residual)

    if d <= DENSE_MLE_MAX_DIM:
        result = fit_grid_mle(data.covariance(), model.pattern, callback=log_step)
    else:
        # A tolerance near what dense Newton's decrement rule leaves (1e-8 at 28 x 28, 1.7e-6 at 64 x 64).
        result = fit_grid_mle_newton_cg(data.covariance(), model.pattern, tol=1e-7, callback=log_step)
    model.precision_layer.set_dense(result.precision)  # dense, or the scipy sparse matrix of Newton-CG
    return {"log_z_estimate": None, "newton_iterations": result.iterations,
            "max_abs_residual": result.max_abs_residual}


def _lazy(module, name):
    """A fit function imported on first use (NCE pulls in tensorflow-probability)."""

    def fit(config, data, model, writer):
        import importlib

        return getattr(importlib.import_module(module), name)(config, data, model, writer)

    fit.__name__ = name
    return fit


ESTIMATORS = {
    "mle": fit_mle,
    "nce": _lazy("energy_models.estimators.nce", "fit_nce"),
    "cnce": _lazy("energy_models.estimators.cnce", "fit_cnce"),
    "sm": _lazy("energy_models.estimators.score_matching", "fit_score_matching"),
}


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

    config.resolve()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs its first operation.
    strategy = strategy_for(config.distribute, config.batch_size)
    settings, defaults = dataclasses.asdict(config), dataclasses.asdict(GaussianConfig())
    export.check_export_target(config.export_dir, config.overwrite, settings, defaults)
    run_dir = rundir.start_or_resume(config.run_dir, settings, config.overwrite, defaults=defaults)
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
    metrics["export_dir"] = export.save_atomically(module, config.export_dir, config.overwrite, settings,
                                                   defaults)
    # The whole command after data loading: training, evaluation, figures and export.
    metrics["seconds_after_data_loading"] = time.perf_counter() - loaded
    metrics = rundir.earlier_timings(run_dir, metrics, metrics.get("resumed_from_epoch") != total_epochs(config),
                                     keys=("seconds", "fit_seconds", "seconds_after_data_loading"))
    rundir.write_json_atomically(run_dir / "metrics.json", metrics)
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
