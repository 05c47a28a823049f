"""SavedModel export: the contract every model of this project keeps.

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
patches; a model saved before info() stated its size is 28 x 28 x 1 (`energy_models.scoring.model_shape`).
The model applies its own mean subtraction (and whitening, for whitened models); callers pass raw pixels.

Writes are atomic: the model is written under a temporary name beside the target and renamed into place,
so an interrupted export never leaves a half-written model where a user would load it.
"""

import json
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf

from energy_models.errors import UserError
from energy_models.gaussian import LOG_2PI, checked_cholesky


class GaussianModule(tf.Module):
    """A fitted Gaussian N(mu, Lambda^-1) as a self-contained `tf.Module` (dense float32 constants).

    Scoring uses the dense precision: one [n, 784] x [784, 784] matrix product, the fastest form on CPU
    and GPU for D = 784. Sampling solves L^T a = eps with the Cholesky factor Lambda = L L^T, so that
    Cov(mu + a) = L^-T L^-1 = Lambda^-1 (see `energy_models.gaussian.GridGaussian`).
    """

    def __init__(self, mean, precision, info, name="grid_gaussian"):
        super().__init__(name=name)
        precision = np.asarray(precision, dtype=np.float64)
        chol = checked_cholesky(precision)
        dim = precision.shape[0]
        log_z = 0.5 * dim * LOG_2PI - float(np.sum(np.log(np.diag(chol))))
        self._dim = dim
        self._mean = tf.Variable(np.asarray(mean, np.float32), trainable=False, name="mean")
        self._precision = tf.Variable(precision.astype(np.float32), trainable=False, name="precision")
        self._chol = tf.Variable(chol.astype(np.float32), trainable=False, name="cholesky")
        self._log_z = tf.Variable(np.float32(log_z), trainable=False, name="log_z")
        self._info = tf.Variable(json.dumps(dict(info, log_z=log_z)), trainable=False, name="info")

        spec = tf.TensorSpec([None, dim], tf.float32, name="x")
        self.unnormalized_log_prob = tf.function(self._unnormalized_log_prob, input_signature=[spec])
        self.log_prob = tf.function(self._log_prob, input_signature=[spec])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.int32, name="seed")])
        self.mean = tf.function(lambda: tf.identity(self._mean), input_signature=[])
        self.precision = tf.function(lambda: tf.identity(self._precision), input_signature=[])
        self.info = tf.function(lambda: tf.identity(self._info), input_signature=[])

    def _unnormalized_log_prob(self, x):
        d = x - self._mean
        return -0.5 * tf.reduce_sum(d * tf.matmul(d, self._precision), axis=-1)

    def _log_prob(self, x):
        return self._unnormalized_log_prob(x) - self._log_z

    def _sample(self, n, seed):
        eps = tf.random.stateless_normal([self._dim, n], seed=tf.stack([seed, 0]))
        # L^T a = eps  =>  a = L^-T eps, Cov(a) = Lambda^-1.
        a = tf.linalg.triangular_solve(self._chol, eps, lower=True, adjoint=True)
        return tf.transpose(a) + self._mean


def gaussian_module(model, info):
    """A `GaussianModule` from an in-memory `GridGaussian` (checks positive definiteness)."""
    info = dict(kind="grid_gaussian", height=model.height, width=model.width, channels=model.channels,
                dim=model.dim, neighbourhood=model.neighbourhood, **info)
    return GaussianModule(np.asarray(model.mu), model.precision_dense(), info)


# Written beside saved_model.pb by `save_atomically`: the settings of the command that made the model,
# so that a later command with other settings does not silently replace it. tf.saved_model.load ignores
# files it does not know.
SETTINGS_FILE = "energy_models_settings.json"


def _is_saved_model(path):
    return (path / "saved_model.pb").is_file()


def check_export_target(path, overwrite=False, settings=None, defaults=None):
    """Refuses a target that would lose something the user has, and one that cannot be written.

    * A file, or a non-empty folder that is not a SavedModel: always refused (`overwrite` replaces only
      a SavedModel, never a folder of the user's own files).
    * A SavedModel: replaced when `overwrite`, or when `settings` (a dict) equal the settings recorded
      in it by `save_atomically` (the same command again); refused otherwise.

    Raises:
      UserError: one line saying what is there and what to do.
    """
    from energy_models import rundir

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
        old = rundir.read_json(recorded, "the model's settings file", "pass --overwrite to replace the "
                               "model or choose another --export-dir")
        difference = rundir.first_difference(old, settings, defaults)
        if difference:
            k, was, now = difference
            raise UserError(f"export directory {path} holds a model made with other settings "
                            f"({k.replace('_', '-')}: {was} there, {now} now); pass --overwrite to replace "
                            f"it or choose another --export-dir")
    rundir.check_writable(path, "--export-dir")


def save_atomically(module, path, overwrite=False, settings=None, defaults=None):
    """`tf.saved_model.save(module, path)`, written under a temporary name and renamed into place.

    An existing SavedModel at `path` is replaced only once the new one is complete; `settings` are
    recorded beside it (SETTINGS_FILE; without them, those of the model replaced are kept). A failed
    write (full disk, read-only folder) leaves the old model as it was.

    Raises:
      UserError: see `check_export_target`; or the write failed (one line: what to free or change).
    """
    from energy_models import rundir

    path = pathlib.Path(path)
    check_export_target(path, overwrite, settings, defaults)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tf.saved_model.save(module, str(tmp))
        if settings is not None:
            rundir.write_json_atomically(tmp / SETTINGS_FILE, settings)
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
        raise rundir.write_error(path, error, "--export-dir; the model there is unchanged") from None
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
