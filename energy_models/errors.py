"""User-facing errors.

Every error a user can cause by what they pass in (a flag, a file, a folder, a model) is raised as a
subclass of `UserError` with a one-line message that says what was wrong and what to do. The command-line
entry points in `train/` catch `UserError`, print the message on one line and exit non-zero, so a user
never sees a traceback for bad input. Wrong arguments to the Python API raise ValueError naming the
argument (`check_static_rows`, `check_choice`, `check_positive_int`).
"""

import numpy as np


class UserError(Exception):
    """Bad input from the user: the message is one line saying what was wrong and what to do."""


class DataUnavailableError(UserError):
    """A dataset cannot be found locally and cannot be downloaded."""


class NotPositiveDefiniteError(UserError):
    """A precision matrix that must be positive definite (to normalise, sample or export) is not."""


def check_static_rows(x, dim, name="x"):
    """Raises ValueError naming `name` unless the tensor x is [n, dim] (checked on its static shape, so it
    costs nothing inside a traced function); returns x. For data sets given on the command line,
    `savedmodel.check_rows` also checks the values."""
    shape = x.shape
    try:  # a TensorShape (None entries where unknown), or a NumPy shape tuple
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    except ValueError:  # unknown rank
        return x
    if len(dims) != 2:
        raise ValueError(f"{name} must be [n, {dim}], one flattened image per row; got shape {tuple(dims)}")
    width = dims[-1]
    if width is not None and width != dim:
        raise ValueError(f"{name} has rows of {width} values, but the model's images have {dim}")
    return x


def check_choice(name, value, choices):
    """Raises ValueError naming `name` and the allowed values unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_positive_int(name, value):
    """Raises ValueError naming `name` unless `value` is a positive integer (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return value
