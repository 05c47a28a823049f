"""TensorBoard logging that survives Keras's batch-level recording condition.

With an integer `update_freq`, Keras's TensorBoard callback (Keras 3.15) enters
`tf.summary.record_if(global_batch % update_freq == 0)` at the start of every training batch and leaves
it only at the start of the next one. At an epoch's end that condition is still in force, so every
summary written then -- Keras's own `epoch_*` scalars and any other callback's images and scalars -- is
silently dropped unless the epoch's last batch number is a multiple of `update_freq`, and a short run can
end with empty event files. Summaries written at epoch ends go through `epoch_summaries`,
which records unconditionally.
"""

import contextlib

import keras
import tensorflow as tf


@contextlib.contextmanager
def epoch_summaries(writer, step):
    """`writer` as the default summary writer at `step`, recording whatever condition is in force."""
    with writer.as_default(step=step), tf.summary.record_if(True):
        yield


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose epoch scalars are written at every epoch (module docstring)."""

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)
