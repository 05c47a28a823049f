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


def check_applies(config, scopes):
    """Raises a one-line `UserError` for the first flag set away from its default where it does nothing.

    `scopes` maps a field name to (applies(config) -> bool, where it applies), e.g.
    {"images": (lambda c: c.dataset == "patches", "--dataset patches")}. Also refuses an empty
    --run-dir or --export-dir (an empty path would silently mean the default folder).
    """
    for name in ("run_dir", "export_dir"):
        value = getattr(config, name, None)
        if value is not None and not str(value).strip():
            raise UserError(f"--{name.replace('_', '-')} is empty; give a folder, or leave the flag out "
                            f"for the default one")
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, (applies, where) in scopes.items():
        if getattr(config, name) != defaults[name] and not applies(config):
            raise UserError(f"--{name.replace('_', '-')} does nothing here: it applies only with {where}; "
                            f"drop it or change the flags it depends on")
