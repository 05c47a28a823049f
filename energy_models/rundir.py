"""Run directories: resolved configuration, metrics and figures beside the TensorBoard logs.

Layout of a run directory (open the parent folder with `tensorboard --logdir runs`):

    config.json     the resolved configuration (every flag, defaults included)
    metrics.json    machine-readable results
    figures/*.png   the figures that also go to TensorBoard
    train/, eval/   TensorBoard event files (training curves; final evaluation, samples and maps)
"""

import errno
import json
import os
import pathlib
import re
import uuid

import numpy as np

from energy_models.errors import UserError

_RUN_FILES = {"config.json", "metrics.json", "figures", "train", "eval", "validation", "checkpoints",
              "patches.npz", "rounds"}
# Temporary files of the atomic writers below, of `PatchSet.save` and of `check_writable`, left behind by a
# kill.
_RUN_TEMPORARY = re.compile(r"^\.((config\.json|metrics\.json|patches\.npz)\..*tmp|write-test-)")

# What to do about a failed write, by errno: the one line a user gets instead of a traceback.
_WRITE_ADVICE = {errno.ENOSPC: "free space on that disk or choose another folder",
                 errno.EDQUOT: "free space within your quota or choose another folder",
                 errno.EROFS: "it is on a read-only file system: choose another folder",
                 errno.EACCES: "make it writable or choose another folder",
                 errno.EPERM: "make it writable or choose another folder"}


def write_error(path, error, flag=None):
    """A one-line `UserError` for an `OSError` raised while writing `path` (what failed, what to do,
    and the flag that chooses the folder, when there is one)."""
    reason = error.strerror or str(error).splitlines()[0]
    advice = _WRITE_ADVICE.get(error.errno, "check the folder")
    return UserError(f"cannot write {path} ({reason}); {advice}" + (f" ({flag})" if flag else ""))


def check_writable(path, flag):
    """Checks, before any training, that files can be created in folder `path` (or, when it does not
    exist yet, in its nearest existing parent) by creating and deleting a probe file.

    A probe rather than `os.access`: root passes `os.access` on read-only folders, and a read-only or
    full file system only shows itself when a file is created.

    Raises:
      UserError: one line naming the folder, the reason and `flag`.
    """
    path = pathlib.Path(path).absolute()
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "xb") as handle:
            handle.write(b"0" * 4096)  # A full disk may accept an empty file.
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise write_error(folder, error, flag) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def write_json_atomically(path, data):
    """Writes JSON to a temporary file beside `path` and renames it, so a kill never leaves half a file."""
    path = pathlib.Path(path)
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_error(path, error) from None
    return str(path)


def read_json(path, what, remedy):
    """The JSON object in `path`, or a one-line `UserError` when it is truncated or not an object."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{what} {path} is unreadable ({type(error).__name__}: "
                        f"{str(error).splitlines()[0]}); {remedy}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a JSON {type(data).__name__}, not the settings object it "
                        f"should; {remedy}")
    return data


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def prepare_run_dir(path, overwrite=False):
    """Creates the run directory; refuses one that holds files that are not a run's, even with
    `overwrite` (which replaces only what this project wrote), and one that cannot be written.

    Raises:
      UserError: when `path` is a file, a non-empty folder that does not look like a run directory, or
        not writable.
    """
    path = pathlib.Path(path)
    if path.is_file():
        raise UserError(f"run directory {path} is a file; choose another --run-dir")
    if path.is_dir():
        foreign = [p.name for p in path.iterdir()
                   if p.name not in _RUN_FILES and not _RUN_TEMPORARY.match(p.name)]
        if foreign:
            raise UserError(f"run directory {path} exists and holds other files "
                            f"({', '.join(sorted(foreign)[:3])}); choose another --run-dir "
                            f"(--overwrite replaces only a run folder's own files)")
    check_writable(path, "--run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error, "--run-dir") from None
    return path


# Settings that may differ between a run and its resumption: where the run folder is (it may have been
# moved), where the model goes, and --overwrite.
_RESUME_IGNORES = ("run_dir", "export_dir", "overwrite")


def first_difference(old, new, defaults=None):
    """The first setting (sorted by name, ignoring `_RESUME_IGNORES`) whose value differs between the
    recorded settings `old` and `new`, as (name, old value, new value), or None. A setting missing from
    `old` counts as its value in `defaults` (a flag added after that run)."""
    new = json.loads(json.dumps(new, default=_jsonable))
    old = {**json.loads(json.dumps(defaults or {}, default=_jsonable)), **old}
    differ = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_IGNORES and old.get(k) != new.get(k)]
    return (differ[0], old.get(differ[0]), new.get(differ[0])) if differ else None


def start_or_resume(path, config, overwrite=False, defaults=None):
    """Prepares the run directory and decides between a fresh start and resuming its checkpoints.

    A run directory with checkpoints or results (metrics.json) is resumed (or, finished, re-evaluated)
    when its config.json has the same settings as `config` (a dict), and refused otherwise, so that a
    quick run never silently replaces a finished one; `overwrite` deletes the checkpoints and starts
    again. Writes config.json. A setting missing from config.json (a flag added after that run was
    started) counts as its value in `defaults`, since the run was trained with the behaviour the flag's
    default keeps.

    Returns:
      The run directory (a `pathlib.Path`).

    Raises:
      UserError: the folder holds other files, or a checkpointed run with other settings.
    """
    import shutil

    path = prepare_run_dir(path, overwrite)
    checkpoints = path / "checkpoints"
    if overwrite and checkpoints.exists():
        shutil.rmtree(checkpoints)
    config_path = path / "config.json"
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    finished = (path / "metrics.json").is_file()
    if (has_checkpoints or finished) and config_path.is_file() and not overwrite:
        old = read_json(config_path, "the run's configuration", "pass --overwrite to start the run again "
                        "or choose another --run-dir")
        difference = first_difference(old, config, defaults)
        if difference:
            k, was, now = difference
            held = "checkpoints of a run" if has_checkpoints else "the results of a finished run"
            raise UserError(f"run directory {path} holds {held} with other settings "
                            f"({k.replace('_', '-')}: {was} there, {now} now); re-run with "
                            f"the same flags to {'resume' if has_checkpoints else 're-evaluate'} it, choose "
                            f"another --run-dir, or pass --overwrite to start again")
    write_json_atomically(config_path, config)
    return path


def earlier_timings(path, metrics, trained, keys=("seconds", "patches_per_second")):
    """`metrics` with the timings of the run recorded in RUN_DIR/metrics.json when this re-run of a
    finished run `trained` no epoch (its own "0 s" would replace the real figures)."""
    previous = pathlib.Path(path) / "metrics.json"
    if trained or not previous.is_file():
        return metrics
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return metrics
    if not isinstance(old, dict):
        return metrics
    kept = {k: old[k] for k in keys if k in old}
    return {**metrics, **kept, "timings_from": "the run that trained (this re-run trained no epoch)"}
