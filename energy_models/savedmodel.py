"""The SavedModel contract every model of this project keeps: atomic save, load, input checks.

A model exported here is served by plain `tf.saved_model.load(path)`, with no project code (and no
tensorflow-probability) importable, through these endpoints:

    log_prob(x)               x float32 [n, D], raw pixels in [0, 1], row-major height x width (x channels,
                              a pixel's channels adjacent) -> float32 [n]
    unnormalized_log_prob(x)  same shapes; log p(x) + log Z
    sample(n, seed)           int32 n, int32 seed -> float32 [n, D] in raw pixel space
    mean()                    float32 [D]
    info()                    string scalar: JSON with the model's kind, height, width, channels, dim = D
                              = height * width * channels, settings and log Z

and, for Gaussians, precision() -> float32 [D, D]. D is 784 (28 x 28 x 1) for MNIST and the default
patches; a model saved before info() stated its size is 28 x 28 x 1 (`energy_models.savedmodel.model_shape`).
The model applies its own mean subtraction (and whitening, for whitened models); callers pass raw pixels.

Writes are atomic: the model is written under a temporary name beside the target and renamed into place,
so an interrupted export never leaves a half-written model where a user would load it. Loading and scoring
use only `tf.saved_model.load`, so any model that keeps the contract is scored, including models trained
on another machine or by another version of this project (`tests/test_savedmodel_compat.py`).
"""

import dataclasses
import json
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf

from energy_models import files
from energy_models.errors import UserError

REQUIRED_ENDPOINTS = ("log_prob", "unnormalized_log_prob", "sample", "mean", "info")


@dataclasses.dataclass
class LoadedModel:
    """A SavedModel and what its `info()` says about it: `shape` is (height, width, channels) of its input
    rows, `dim` = D = height * width * channels (`model_shape`)."""

    path: str
    module: object
    info: dict
    dim: int
    shape: tuple = (28, 28, 1)

    @property
    def name(self):
        return self.info.get("name") or self.path

    @property
    def normalised(self):
        """Whether `log_prob` is normalised (a log Z is stored: analytic, AIS or NCE)."""
        log_z = self.info.get("log_z")
        return log_z is not None and bool(np.isfinite(log_z))


def load_model(path):
    """Loads a SavedModel and checks that it keeps the contract.

    Raises:
      UserError: when `path` is missing, is not a SavedModel, or lacks an endpoint of the contract.
    """
    try:
        module = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(f"cannot load a SavedModel from {path} ({type(e).__name__}); pass a folder "
                        f"written by python -m train.gaussian or python -m train.dem") from None
    missing = [name for name in REQUIRED_ENDPOINTS if not hasattr(module, name)]
    if missing:
        raise UserError(f"{path} is a SavedModel but not an energy_models model: it lacks "
                        f"{', '.join(missing)}; export it with python -m train.gaussian or train.dem")
    info = json.loads(module.info().numpy().decode())
    dim = int(module.mean().shape[0])
    return LoadedModel(path=str(path), module=module, info=info, dim=dim, shape=model_shape(info, dim, path))


def model_shape(info, dim, path):
    """(height, width, channels) of a model's input rows: what its `info()` states, checked against the
    width D of its `mean()`. A model saved before info() stated its size (no `height`, `width`, `channels`,
    `dim`) is 28 x 28 grayscale, and its mean has 784 values.

    Raises:
      UserError: the stated size does not multiply to D, or an older model's D is not 784.
    """
    if "height" in info and "width" in info:
        shape = (int(info["height"]), int(info["width"]), int(info.get("channels", 1)))
    elif "dim" not in info and "channels" not in info:
        shape = (28, 28, 1)
    else:
        raise UserError(f"{path} states its width ({info.get('dim')}) but not its height and width in info(); "
                        f"re-export it with this version of energy_models")
    stated = int(info.get("dim", shape[0] * shape[1] * shape[2]))
    if shape[0] * shape[1] * shape[2] != dim or stated != dim:
        said = (f"states {'x'.join(map(str, shape))} patches (D = {stated}) in info()" if "height" in info
                else "states no patch size in info(), so it is read as 28x28 (D = 784)")
        raise UserError(f"{path} {said}, but its mean() has {dim} values; it does not keep the contract: "
                        f"re-export it with train.gaussian or train.dem")
    return shape


def check_rows(x, dim, what):
    """float32 [n, dim] rows with finite values, or a one-line `UserError` naming `what`."""
    x = np.asarray(x)
    if x.ndim == 2 and len(x) == 0:
        raise UserError(f"{what} is empty (shape {x.shape}); pass a set with at least one row")
    if x.ndim != 2 or x.shape[1] != dim:
        features = x.shape[1] if x.ndim == 2 else "x".join(map(str, x.shape))
        raise UserError(f"{what} has {features} features, but the model expects {dim}")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise UserError(f"{what} contains NaN or infinite values in {bad} rows; clean the data first")
    return x.astype(np.float32, copy=False)


def checked_scores(scores, x, what, model_path):
    """`scores` when every one is finite, else a one-line `UserError` saying which rows and why."""
    bad = ~np.isfinite(scores)
    if bad.any():
        low, high = float(np.min(x)), float(np.max(x))
        raise UserError(f"{model_path} gives a non-finite log p for {int(bad.sum())} of {len(scores)} rows of "
                        f"{what} (values range {low:.3g} to {high:.3g}; models expect raw pixels in [0, 1]); "
                        f"check the data's scale")
    return scores


def log_probs(model, x, batch_size=16384, normalised=True):
    """Per-row log p(x) (float64 [n]) through the SavedModel, in batches.

    `normalised=False` scores with `unnormalized_log_prob`, for models with no log Z yet.
    """
    fn = model.module.log_prob if normalised else model.module.unnormalized_log_prob
    out = [fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


# Written beside saved_model.pb by `save_atomically`: the settings of the command that made the model,
# so that a later command with other settings does not silently replace it. tf.saved_model.load ignores
# files it does not know.
SETTINGS_FILE = "energy_models_settings.json"


def _is_saved_model(path):
    return (path / "saved_model.pb").is_file()


def check_export_target(path, overwrite=False, settings=None, defaults=None, ignore=()):
    """Refuses a target that would lose something the user has, and one that cannot be written.

    * A file, or a non-empty folder that is not a SavedModel: always refused (`overwrite` replaces only
      a SavedModel, never a folder of the user's own files).
    * A SavedModel: replaced when `overwrite`, or when `settings` (a dict) equal the settings recorded
      in it by `save_atomically` (the same command again); refused otherwise.

    Raises:
      UserError: one line saying what is there and what to do.
    """

    path = pathlib.Path(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir()) and not _is_saved_model(path)):
        mine = "" if path.is_file() else f" ({', '.join(sorted(p.name for p in path.iterdir())[:3])})"
        raise UserError(f"export directory {path} exists and holds something other than a SavedModel{mine}; "
                        f"choose another --export-dir (--overwrite replaces only a SavedModel)")
    if _is_saved_model(path) and not overwrite and settings is not None:
        recorded = path / SETTINGS_FILE
        if not recorded.is_file():
            raise UserError(f"export directory {path} holds a SavedModel whose settings are not recorded; "
                            f"pass --overwrite to replace it or choose another --export-dir")
        old = files.read_json(recorded, "the model's settings file", "pass --overwrite to replace the "
                               "model or choose another --export-dir")
        difference = files.first_difference(old, settings, defaults, ignore)
        if difference:
            k, was, now = difference
            raise UserError(f"export directory {path} holds a model made with other settings "
                            f"({k.replace('_', '-')}: {was} there, {now} now); pass --overwrite to replace "
                            f"it or choose another --export-dir")
    files.check_writable(path, "--export-dir")


def save_atomically(module, path, overwrite=False, settings=None, defaults=None, ignore=()):
    """`tf.saved_model.save(module, path)`, written under a temporary name and renamed into place.

    An existing SavedModel at `path` is replaced only once the new one is complete; `settings` are
    recorded beside it (SETTINGS_FILE; without them, those of the model replaced are kept). A failed
    write (full disk, read-only folder) leaves the old model as it was.

    Raises:
      UserError: see `check_export_target`; or the write failed (one line: what to free or change).
    """

    path = pathlib.Path(path)
    check_export_target(path, overwrite, settings, defaults, ignore)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tf.saved_model.save(module, str(tmp))
        if settings is not None:
            files.write_json_atomically(tmp / SETTINGS_FILE, settings)
        elif (path / SETTINGS_FILE).is_file():
            shutil.copy2(path / SETTINGS_FILE, tmp / SETTINGS_FILE)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as error:
        raise files.write_error(path, error, "--export-dir; the model there is unchanged") from None
    except UserError as error:  # write_json_atomically's, about the temporary folder.
        raise UserError(f"cannot write the SavedModel {path}: {error}") from None
    except tf.errors.OpError as error:
        # TensorFlow's file system raises its own errors: ResourceExhausted (disk full),
        # PermissionDenied, FailedPrecondition (read-only file system), ...
        reason = error.message.splitlines()[0] if error.message else type(error).__name__
        raise UserError(f"cannot write the SavedModel {path} ({type(error).__name__}: {reason}); free "
                        f"space or choose another --export-dir; the model there is unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


class NormalisedModule(tf.Module):
    """A loaded SavedModel re-served with a log Z estimate, so that `log_prob` becomes normalised.

        log_prob(x) = unnormalized_log_prob(x) - log Z

    Every other endpoint of the loaded model is passed through unchanged, and `info()` records the
    estimate and where it came from. Re-saving a loaded model needs no project code.
    """

    PASS_THROUGH = ("unnormalized_log_prob", "sample", "mean", "precision", "filters")

    def __init__(self, loaded, log_z, info, name="normalised"):
        super().__init__(name=name)
        self._loaded = loaded
        dim = int(loaded.mean().shape[0])
        self._log_z = tf.Variable(np.float32(log_z), trainable=False, name="log_z")
        self._info = tf.Variable(json.dumps(info), trainable=False, name="info")
        for endpoint in self.PASS_THROUGH:
            if hasattr(loaded, endpoint):
                setattr(self, endpoint, getattr(loaded, endpoint))
        self.log_prob = tf.function(
            lambda x: loaded.unnormalized_log_prob(x) - self._log_z,
            input_signature=[tf.TensorSpec([None, dim], tf.float32, name="x")])
        self.info = tf.function(lambda: tf.identity(self._info), input_signature=[])
