"""`resumable_fit`: the one `model.fit` sequence every trainer runs, resumable and guarded.

    checkpoint <- the newest in `checkpoint_dir` (epoch 0: a fresh run)
    fit from that epoch, with the divergence guard first, the caller's callbacks, the checkpoint, TensorBoard
    and the caller's later callbacks, in that order

The divergence guard runs first because it restores the last good weights, which every later callback then
sees; the checkpoint runs after the callbacks passed as `before_checkpoint` (e.g. the grid Gaussian's
positive-definiteness guard), so that only weights they have checked are saved. The batches of a resumed
run are those the uninterrupted run would have seen (`batches(initial_epoch)`).
"""

import dataclasses
import time

from energy_models.training.checkpoints import DivergenceGuard, TrainingCheckpoint
from energy_models.training.console import progress_verbosity
from energy_models.training.tensorboard import TensorBoard


@dataclasses.dataclass
class FitRun:
    """What `resumable_fit` did: Keras' `history`, the epoch it started at, its wall time (s), and its
    checkpoint and divergence guard (`divergence.diverged`, `divergence.message`)."""

    history: object
    initial_epoch: int
    seconds: float
    checkpoint: TrainingCheckpoint
    divergence: DivergenceGuard

    @property
    def final(self):
        """The last value of every logged quantity."""
        return {k: float(v[-1]) for k, v in self.history.history.items() if v}

    @property
    def latest_checkpoint(self):
        """The newest checkpoint's path as a string, or None."""
        latest = self.checkpoint.latest()
        return str(latest[1]) if latest else None


def resumable_fit(model, batches, *, epochs, steps_per_epoch, checkpoint_dir, checkpoint_every, watched,
                  remedies, log_dir, first_epoch=0, before_checkpoint=(), after=(), update_freq=50,
                  write_graph=True, verbose="auto"):
    """Fits the compiled `model` for epochs first_epoch + 1 .. `epochs`, resuming from its newest checkpoint.

    Args:
      model: a compiled Keras model.
      batches: initial_epoch -> the dataset of batches from that epoch on.
      epochs: the last epoch (Keras' `epochs`).
      steps_per_epoch: optimiser steps per epoch.
      checkpoint_dir, checkpoint_every: where and how often (epochs) the training state is saved.
      watched, remedies: the logged values the divergence guard checks, and what its message advises.
      log_dir: Keras TensorBoard logs.
      first_epoch: where this fit starts on a time axis shared by several fits (checkpoint 0 is its start).
      before_checkpoint, after: the caller's callbacks, before the checkpoint and after TensorBoard.
      update_freq, write_graph: passed to the TensorBoard callback.
      verbose: Keras' verbosity; "auto" shows a progress bar only on a terminal.

    Returns:
      A `FitRun`; on divergence training stopped and `divergence.diverged` is set (the caller reports it).
    """
    checkpoint = TrainingCheckpoint(checkpoint_dir, checkpoint_every)
    initial_epoch = max(checkpoint.restore(model), first_epoch)
    divergence = DivergenceGuard(checkpoint, watched=tuple(watched), remedies=remedies)
    callbacks = [divergence, *before_checkpoint, checkpoint,
                 TensorBoard(log_dir=str(log_dir), update_freq=update_freq, write_graph=write_graph), *after]
    start = time.perf_counter()
    history = model.fit(batches(initial_epoch), epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, shuffle=False,
                        verbose=progress_verbosity() if verbose == "auto" else verbose)
    return FitRun(history, initial_epoch, time.perf_counter() - start, checkpoint, divergence)
