"""Fitting a grid Gaussian or a deep energy model to an array from Python: the front end beside the command
line, running the same pipelines (`energy_models.fit_grid_gaussian`, `energy_models.fit_deep_energy_model`).

    from energy_models import fit_grid_gaussian

    model, report = fit_grid_gaussian(x, "nce", image_shape=(28, 28), heldout=x_test)
    model.log_prob(x_test), model.sample(16, seed=0), model.log_normalizer()

`x` is [n, D]: one flattened image per row (row-major height x width, channels last). The model is
p(x) = N(x; mu, Lambda^-1) with mu the rows' mean and Lambda on the 4- or 8-neighbour grid of the image,
estimated by `estimator`:

* "mle": exact maximum likelihood (covariance selection; dense Newton up to D = 1,024, block-tridiagonal
  Newton-CG above);
* "nce": noise-contrastive estimation, which also learns log Z (`report["log_z_estimate"]`);
* "cnce": conditional NCE; "sm": score matching.

The stochastic estimators take the trainer's settings as keywords (`epochs`, `batch_size`, `optimizer`,
`learning_rate`, `nu`, `noise`, `rounds`, `warmup_epochs`, `noise_samples`, `kappa`, `epsilon`, `pd_floor`,
`pd_check_every`, `pd_mode`, `checkpoint_every`), with the same defaults as `python -m train.gaussian`, and
the same code runs them. TensorBoard logs and checkpoints go to `log_dir` (default: a temporary folder that
is removed afterwards).

`fit_deep_energy_model(x, ...)` trains the two-layer deep energy model on the rows as `python -m train.dem`
would on patches (whitening, the grid Gaussian it starts from, the default method and sampler, the
evaluation, the SavedModel) and returns the loaded SavedModel with the run's metrics.
"""

import dataclasses
import pathlib
import re
import tempfile

import numpy as np

from energy_models.data.arrays import row_image_shape
from energy_models.errors import check_choice
from energy_models.linalg.grid import check_neighbourhood

SETTINGS = ("epochs", "batch_size", "optimizer", "learning_rate", "nu", "noise", "rounds", "warmup_epochs",
            "noise_samples", "kappa", "epsilon", "pd_floor", "pd_check_every", "pd_mode", "checkpoint_every")


def _keywords(message):
    """A command-line message with its flags (--batch-size) as this module's keywords (batch_size)."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda flag: flag.group(1).replace("-", "_"), message)


def _rows(x, name, dim=None):
    """x as float32 [n, D], or a ValueError that names the argument."""
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers, [n, D]: {error}") from None
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, one flattened image per row, [n, D]; got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has rows of {x.shape[1]} values, but x has {dim}")
    if len(x) < 2:
        raise ValueError(f"{name} has {len(x)} rows; at least 2 are needed")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def fit_grid_gaussian(x, estimator="mle", *, image_shape=None, neighbourhood=4, heldout=None, seed=0,
                      log_dir=None, **settings):
    """Fits mu and a grid precision Lambda to the rows of `x`; returns (GridGaussian, report).

    Args:
      x: [n, D] training rows.
      estimator: "mle", "nce", "cnce" or "sm".
      image_shape: (height, width) or (height, width, channels) of a row; default: square grayscale.
      neighbourhood: 4 or 8 grid neighbours.
      heldout: [m, D] rows for the held-out log-likelihood in the report and TensorBoard (default: `x`).
      seed: seed of every random draw.
      log_dir: folder for TensorBoard logs (`train/`) and checkpoints; default: a temporary one.
      **settings: the stochastic estimators' settings (module docstring), by their trainer names.

    Returns:
      (model, report): the fitted `GridGaussian`, and a dict with `train_log_likelihood`,
      `test_log_likelihood` (on `heldout`), `log_z` (analytic, from Lambda) and what the estimator reports
      (`log_z_estimate` for NCE, `newton_iterations` for MLE, ...).

    Raises:
      ValueError: naming the argument that is wrong (shape, values, estimator, neighbourhood, a setting).
    """
    import tensorflow as tf

    from energy_models.data.arrays import ArrayData
    from energy_models.errors import UserError
    from energy_models.experiments.gaussian_config import GaussianConfig
    from energy_models.gaussian.fits import ESTIMATORS
    from energy_models.gaussian.model import GridGaussian, average_log_likelihood, expected_log_likelihood

    x = _rows(x, "x")
    held = x if heldout is None else _rows(heldout, "heldout", x.shape[1])
    shape = row_image_shape(x.shape[1], image_shape)
    check_choice("estimator", estimator, tuple(ESTIMATORS))
    check_neighbourhood(neighbourhood)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="fit-grid-gaussian-") as scratch:
        run_dir = pathlib.Path(log_dir or scratch)
        config = GaussianConfig(dataset="patches", estimator=estimator, neighbourhood=neighbourhood, seed=seed,
                                run_dir=str(run_dir), colour=shape[2] > 1, **settings)
        try:
            config.resolve()
            data = ArrayData(x, held, image_shape=shape)
        except UserError as error:  # messages written for the command line: say which argument instead
            raise ValueError(_keywords(str(error))) from None
        tf.keras.utils.set_random_seed(seed)
        model = GridGaussian(*shape[:2], neighbourhood, channels=shape[2])
        model.set_mean(data.mean)
        writer = tf.summary.create_file_writer(str(run_dir / "train"))
        try:
            report = ESTIMATORS[estimator](config, data, model, writer)
        except UserError as error:
            raise ValueError(_keywords(str(error))) from None
        writer.close()
    report.update(train_log_likelihood=expected_log_likelihood(model, data.covariance()),
                  test_log_likelihood=average_log_likelihood(model, data.test), log_z=model.log_normalizer())
    return model, report


# train.dem's settings that `fit_deep_energy_model` passes on (the rest describe where data and outputs live).
DEM_NOT_SETTINGS = ("images", "num_patches", "patch_size", "colour", "patches", "run_dir", "export_dir",
                    "overwrite", "mnist_dir", "seed")


def fit_deep_energy_model(x, *, heldout=None, image_shape=None, seed=0, log_dir=None, **settings):
    """Trains `train.dem`'s deep energy model on the rows of `x`; returns (SavedModel, metrics).

    Args:
      x: [n, D] training rows in [0, 1] (at least `batch_size` of them).
      heldout: [m, D] rows for the held-out evaluation (default: the last tenth of `x`, not trained on).
      image_shape: (height, width) or (height, width, channels); default: square grayscale.
      seed: seed of every random draw.
      log_dir: where the run folder (`run/`: TensorBoard, figures, metrics.json) and the SavedModel
        (`model/`) go; default: a new temporary folder, kept, since the returned model is loaded from it.
      **settings: `train.dem`'s settings by name (`epochs=5`, `method="cd"`, `sigma=0.1`, ...).

    Returns:
      (model, metrics): the SavedModel as `tf.saved_model.load` gives it (`log_prob`,
      `unnormalized_log_prob`, `sample`, `info`; README "SavedModel contract") and the run's metrics.

    Raises:
      ValueError: naming the argument that is wrong.
    """
    import tensorflow as tf

    from energy_models.data.patches import PatchSet
    from energy_models.errors import UserError
    from energy_models.experiments.dem import train_and_evaluate
    from energy_models.experiments.dem_config import DEMConfig

    x = _rows(x, "x")
    if heldout is None:
        x, held = x[:len(x) - len(x) // 10], x[len(x) - len(x) // 10:]
        if len(held) < 2:
            raise ValueError(f"x has {len(x)} rows: too few to hold out a tenth; pass heldout=")
    else:
        held = _rows(heldout, "heldout", x.shape[1])
    height, width, channels = row_image_shape(x.shape[1], image_shape)
    names = sorted(f.name for f in dataclasses.fields(DEMConfig))
    unknown = sorted(set(settings) - (set(names) - set(DEM_NOT_SETTINGS)))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; the settings are "
                         f"{', '.join(n for n in names if n not in DEM_NOT_SETTINGS)}")
    root = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="fit-deep-energy-model-"))
    root.mkdir(parents=True, exist_ok=True)
    PatchSet.from_rows(x, held, (height, width), channels, seed, "an array (energy_models.fit_deep_energy_model)").save(
        root / "rows.npz")
    config = DEMConfig(patches=str(root / "rows.npz"), run_dir=str(root / "run"), export_dir=str(root / "model"),
                       overwrite=True, seed=seed, **settings)
    try:
        metrics = train_and_evaluate(config)
    except UserError as error:  # written for the command line: the flags are this function's keywords
        raise ValueError(_keywords(str(error))) from None
    return tf.saved_model.load(str(root / "model")), metrics


__all__ = ["fit_grid_gaussian", "fit_deep_energy_model", "SETTINGS"]
