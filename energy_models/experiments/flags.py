"""Config-dataclass fields that double as command-line flags (see `train/_cli.parser_for`)."""

import dataclasses
import math

from energy_models.errors import UserError


def flag(text, default=None, **meta):
    """A dataclass field whose metadata carries the flag's help text and argparse settings
    (choices, nargs, const, action, metavar)."""
    return dataclasses.field(default=default, metadata={"help": text, **meta})


def check_ranges(checks):
    """Raises a one-line `UserError` for the first (flag, value, ok, rule) whose `ok` is false, or whose
    value is a float that is not finite (nan and inf pass some comparisons: inf > 0)."""
    for name, value, ok, rule in checks:
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")
        if not ok:
            raise UserError(f"{name} {rule}, got {value}")
