"""Scoring sets of images with SavedModels that keep the project's contract (see `energy_models.export`).

Only `tf.saved_model.load` is used, so any model that keeps the contract is scored, including models
trained on another machine or by another version of this project.
"""

import dataclasses
import json

import numpy as np

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
    import tensorflow as tf

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


def score_samples(model, x, batch_size=16384, normalised=True):
    """Per-row log p(x) (float64 [n]) through the SavedModel, in batches.

    `normalised=False` scores with `unnormalized_log_prob`, for models with no log Z yet.
    """
    import tensorflow as tf

    fn = model.module.log_prob if normalised else model.module.unnormalized_log_prob
    out = [fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def auroc(positive, negative):
    """Area under the ROC curve of telling `positive` scores (higher) from `negative` ones.

        AUROC = P(s+ > s-) + P(s+ = s-) / 2,

    computed from ranks (the Mann-Whitney U statistic) in O(n log n), ties counted half. Non-finite
    scores rank lowest (a NaN log density is no evidence for the positive set).
    """
    import scipy.stats

    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    positive = np.where(np.isfinite(positive), positive, -np.inf)
    negative = np.where(np.isfinite(negative), negative, -np.inf)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(np.concatenate([positive, negative]))
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2.0
    return float(u / (len(positive) * len(negative)))


def summarise(scores):
    """Table rows: set, n, mean and std of log p, and AUROC of each set against the first set."""
    names = list(scores)
    first = scores[names[0]] if names else None
    rows = []
    for name in names:
        s = scores[name]
        rows.append({"set": name, "n": int(len(s)), "mean": float(np.mean(s)), "std": float(np.std(s)),
                     "auroc_vs_first": None if name == names[0] else auroc(first, s)})
    return rows
