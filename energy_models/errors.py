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
