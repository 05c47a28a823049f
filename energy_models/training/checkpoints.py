"""Resumable, kill-safe training: one checkpoint file per saved epoch, and a guard against divergence.

RUN_DIR/checkpoints/epoch-000003.weights.h5 holds everything `model.save_weights` writes: every
weight of the model, trainable or not (for the deep energy model the persistent MCMC chains, the
adapted step size and the random-number counter; for the Gaussian estimators the counter of their
noise draws), and the optimiser's variables (its iteration count, which drives the learning-rate
schedule, and Adam's moments). The epoch is in the file name, so a checkpoint and its epoch appear
together in one `os.replace`: a SIGKILL at any moment leaves the previous checkpoint or the new one,
never half of one. (Keras's `BackupAndRestore` writes the weights in place and the epoch to a second
file, so a kill between the two resumes the wrong epoch from the right weights.)

Resuming is `initial_epoch = checkpoint.restore(model)` before `model.fit(..., initial_epoch=...)`
with a dataset whose batches depend only on (seed, epoch, step) (`energy_models.data.batches`): the
resumed run then ends with the parameters of an uninterrupted one.
"""

import math
import os
import pathlib
import re
import sys
import time
import uuid

import keras
import numpy as np

_NAME = re.compile(r"^epoch-(\d{6})\.weights\.h5$")


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state at the start, every `every` epochs and after the last epoch.

    Args:
      directory: the checkpoint folder (RUN_DIR/checkpoints).
      every: epochs between checkpoints.
      keep: how many of the newest checkpoints are kept (older ones are deleted after a save).

    Attributes:
      seconds: wall time spent saving (the cost that `bench/bench_checkpoints.py` measures).
      frozen: set by `DivergenceGuard`; nothing is saved after training diverged.
    """

    def __init__(self, directory, every=1, keep=2):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be a positive integer, got every={every!r}")
        self.directory = pathlib.Path(directory)
        self.every, self.keep = int(every), max(1, int(keep))
        self.seconds, self.saves, self.frozen = 0.0, 0, False

    def checkpoints(self):
        """[(epoch, path)] of the complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), self.directory / m.group(0))
                 for m in map(_NAME.match, os.listdir(self.directory)) if m]
        return sorted(found)

    def latest(self):
        """(epoch, path) of the newest checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def restore(self, model):
        """Loads the newest readable checkpoint into `model` (and its optimiser); returns its epoch (0:
        none).

        A checkpoint that cannot be read (truncated by a full disk, damaged by a copy) is moved aside to
        NAME.unreadable, with a one-line warning on stderr naming it, and the next older one is tried,
        so the run resumes from the newest good state and the bad file is kept for inspection.

        Raises:
          UserError: checkpoints exist but none of them is readable.
        """
        from energy_models.errors import UserError

        found = self.checkpoints()
        if not found:
            return 0
        _build_optimizer(model)  # Its variables must exist to be loaded.
        for epoch, path in reversed(found):
            try:
                model.load_weights(str(path))
                return epoch
            except Exception as error:  # h5py and Keras raise OSError, ValueError, KeyError, ...
                aside = path.with_name(path.name + ".unreadable")
                os.replace(path, aside)
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                print(f"warning: checkpoint {path} is unreadable ({type(error).__name__}: {reason}); moved "
                      f"it to {aside.name} and resuming from an older checkpoint", file=sys.stderr)
        raise UserError(f"no checkpoint in {self.directory} is readable (moved aside as *.unreadable); "
                        f"pass --overwrite to start the run again")

    def save(self, epoch):
        """Writes the state after `epoch` epochs; returns False (and writes nothing) if it is not finite."""
        if self.frozen or not all_finite(self.model):
            return False
        start = time.perf_counter()
        _build_optimizer(self.model)  # So that every checkpoint holds the same optimiser variables.
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"epoch-{epoch:06d}.weights.h5"
        tmp = self.directory / f".tmp-{uuid.uuid4().hex[:8]}.weights.h5"
        self.model.save_weights(str(tmp))
        os.replace(tmp, path)
        for _, old in self.checkpoints()[:-self.keep]:
            old.unlink(missing_ok=True)
        self.seconds += time.perf_counter() - start
        self.saves += 1
        return True

    def on_train_begin(self, logs=None):
        if self.latest() is None:
            self.save(0)  # The start: the last good state if the first epoch already diverges.

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0 or done == self.params.get("epochs"):
            self.save(done)


def _build_optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def all_finite(model):
    """Whether every weight of `model` (trainable or not) is finite."""
    return all(np.all(np.isfinite(np.asarray(w))) for w in model.weights
               if np.issubdtype(np.asarray(w).dtype, np.floating))


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite logged quantity (or weight, checked at epoch ends), puts
    the newest checkpoint back into the model and freezes the checkpoint, so nothing diverged is saved.

    Place it first in the callback list, so that later callbacks of the same batch see restored weights.
    `message` names the epoch and step, the quantities, the usual remedies and the checkpoint kept.

    Args:
      checkpoint: the run's `TrainingCheckpoint`.
      watched: names of logged quantities that must stay finite.
      remedies: what to try, e.g. "a smaller --learning-rate (now 0.1)".
    """

    def __init__(self, checkpoint, watched=("loss",), remedies="a smaller --learning-rate"):
        super().__init__()
        self.checkpoint, self.watched, self.remedies = checkpoint, tuple(watched), remedies
        self.diverged, self.message, self.epoch = False, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _stop(self, where, what):
        self.diverged = True
        self.model.stop_training = True
        self.checkpoint.frozen = True
        latest = self.checkpoint.latest()
        if latest is not None:
            self.checkpoint.restore(self.model)
            when = "from the start" if latest[0] == 0 else f"after epoch {latest[0]}"
            kept = f"the last good state ({when}) is kept in {latest[1]}"
        else:
            kept = "no checkpoint was written"
        self.message = (f"training diverged at {where} (non-finite {what}); try {self.remedies}; {kept}")

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged:
            return
        bad = [k for k in self.watched if k in (logs or {}) and not math.isfinite(float(logs[k]))]
        if bad:
            self._stop(f"epoch {self.epoch + 1}, step {batch + 1}", ", ".join(bad))

    def on_epoch_end(self, epoch, logs=None):
        if not self.diverged and not all_finite(self.model):
            self._stop(f"the end of epoch {epoch + 1}", "parameters")
