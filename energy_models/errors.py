"""User-facing errors.

Every error a user can cause by what they pass in (a flag, a file, a folder, a model) is raised as a
subclass of `UserError` with a one-line message that says what was wrong and what to do. The command-line
entry points in `train/` catch `UserError`, print the message on one line and exit non-zero, so a user
never sees a traceback for bad input.
"""


class UserError(Exception):
    """Bad input from the user: the message is one line saying what was wrong and what to do."""


class DataUnavailableError(UserError):
    """A dataset cannot be found locally and cannot be downloaded."""


class NotPositiveDefiniteError(UserError):
    """A precision matrix that must be positive definite (to normalise, sample or export) is not."""


def check_static_rows(x, dim, name="x"):
    """Raises ValueError naming `name` unless the tensor x is [n, dim] (checked on its static shape, so it
    costs nothing inside a traced function); returns x. For data sets given on the command line,
    `scoring.check_rows` also checks the values."""
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
