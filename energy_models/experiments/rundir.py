"""Run directories: resolved configuration, metrics and figures beside the TensorBoard logs.

Layout of a run directory (open the parent folder with `tensorboard --logdir runs`):

    config.json     the resolved configuration (every flag, defaults included)
    metrics.json    machine-readable results
    figures/*.png   the figures that also go to TensorBoard
    train/, eval/   TensorBoard event files (training curves; final evaluation, samples and maps)
"""

import json
import pathlib
import re

from energy_models.errors import UserError
from energy_models.files import check_writable, first_difference, read_json, write_error, write_json_atomically

_RUN_FILES = {"config.json", "metrics.json", "figures", "train", "eval", "validation", "checkpoints",
              "patches.npz", "rounds"}
# Temporary files of the atomic writers below, of `PatchSet.save` and of `check_writable`, left behind by a
# kill.
_RUN_TEMPORARY = re.compile(r"^\.((config\.json|metrics\.json|patches\.npz)\..*tmp|write-test-)")


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
# Settings that say where outputs go, not how the model is made: a resumed run or a re-export may change them.
RESUME_IGNORES = ("run_dir", "export_dir", "overwrite")


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
        difference = first_difference(old, config, defaults, RESUME_IGNORES)
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


def start_run(config):
    """The opening every trainer's run shares: resolves `config`, creates its `tf.distribute` strategy (first:
    MultiWorkerMirroredStrategy must exist before TensorFlow runs an operation), refuses an export folder
    whose model the run would replace unasked, and creates or resumes the run folder.

    Returns:
      (strategy, run_dir, settings, defaults): the settings as a dict and the config class's defaults, which
      the export records and compares.
    """
    import dataclasses

    from energy_models import savedmodel
    from energy_models.training.distribute import strategy_for

    config.resolve()
    strategy = strategy_for(config.distribute, config.batch_size)
    settings, defaults = dataclasses.asdict(config), dataclasses.asdict(type(config)())
    savedmodel.check_export_target(config.export_dir, config.overwrite, settings, defaults, RESUME_IGNORES)
    run_dir = start_or_resume(config.run_dir, settings, config.overwrite, defaults=defaults)
    return strategy, run_dir, settings, defaults
