"""Run directories: resolved configuration, metrics and figures beside the TensorBoard logs.

Layout of a run directory (open the parent folder with `tensorboard --logdir runs`):

    config.json     the resolved configuration (every flag, defaults included)
    metrics.json    machine-readable results
    figures/*.png   the figures that also go to TensorBoard
    train/, eval/   TensorBoard event files (training curves; final evaluation, samples and maps)
"""

import json
import os
import pathlib
import uuid

import numpy as np

from energy_models.errors import UserError

_RUN_FILES = {"config.json", "metrics.json", "figures", "train", "eval", "validation", "checkpoints",
              "patches.npz", "rounds"}


def write_json_atomically(path, data):
    """Writes JSON to a temporary file beside `path` and renames it, so a kill never leaves half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return str(path)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def prepare_run_dir(path, overwrite=False):
    """Creates the run directory; refuses one that holds files that are not a run's, unless `overwrite`.

    Raises:
      UserError: when `path` is a file, or a non-empty folder that does not look like a run directory.
    """
    path = pathlib.Path(path)
    if path.is_file():
        raise UserError(f"run directory {path} is a file; choose another --run-dir")
    if path.is_dir() and not overwrite:
        foreign = [p.name for p in path.iterdir() if p.name not in _RUN_FILES]
        if foreign:
            raise UserError(f"run directory {path} exists and holds other files ({', '.join(sorted(foreign)[:3])}); "
                            f"choose another --run-dir or pass --overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Settings that may differ between a run and its resumption: where the run folder is (it may have been
# moved), where the model goes, and --overwrite.
_RESUME_IGNORES = ("run_dir", "export_dir", "overwrite")


def start_or_resume(path, config, overwrite=False, defaults=None):
    """Prepares the run directory and decides between a fresh start and resuming its checkpoints.

    A run directory with checkpoints is resumed when its config.json has the same settings as `config`
    (a dict); `overwrite` deletes the checkpoints and starts again. Writes config.json. A setting missing
    from config.json (a flag added after that run was started) counts as its value in `defaults`, since
    the run was trained with the behaviour the flag's default keeps.

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
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and config_path.is_file():
        new = json.loads(json.dumps(config, default=_jsonable))
        old = {**json.loads(json.dumps(defaults or {}, default=_jsonable)), **json.loads(config_path.read_text())}
        differ = [k for k in sorted(set(old) | set(new))
                  if k not in _RESUME_IGNORES and old.get(k) != new.get(k)]
        if differ:
            k = differ[0]
            raise UserError(f"run directory {path} holds checkpoints of a run with other settings "
                            f"({k.replace('_', '-')}: {old.get(k)} there, {new.get(k)} now); re-run with "
                            f"the same flags to resume it, choose another --run-dir, or pass --overwrite "
                            f"to start again")
    write_json_atomically(config_path, config)
    return path
