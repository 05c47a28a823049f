"""`--distribute {none,mirrored,multiworker}`: the `tf.distribute` strategy a trainer builds its model under.

- none: TensorFlow's default strategy (one device).
- mirrored: `tf.distribute.MirroredStrategy` over every local GPU, or every logical CPU device when
  there is no GPU (one CPU device unless `tf.config.set_logical_device_configuration` made more).
- multiworker: `tf.distribute.MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment
  variable (the cluster's workers and this worker's index; README, "Several machines").

`--batch-size` is the global batch: each of R replicas gets batch_size / R rows per step. The custom
`train_step`s divide their mean loss by R, because Keras sums the replicas' gradients, so every strategy
applies the gradient of the mean over the global batch, as one device does.
"""

import functools
import json
import os

from energy_models.errors import UserError

STRATEGIES = ("none", "mirrored", "multiworker")


def strategy_for(name, batch_size=None):
    """The strategy named by --distribute.

    Raises:
      UserError: an unknown name, multiworker without a usable TF_CONFIG, or a batch size that the
        replicas cannot share evenly.
    """
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise UserError(f"--distribute must be one of {', '.join(STRATEGIES)}, got {name}")
    if name == "multiworker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
    strategy = _strategy(name)
    replicas = strategy.num_replicas_in_sync
    if batch_size is not None and batch_size % replicas:
        raise UserError(f"--batch-size {batch_size} cannot be shared by {replicas} replicas; use a multiple "
                        f"of {replicas}")
    return strategy


@functools.cache
def _strategy(name):
    """One strategy of each kind per process: two strategies over the same devices can issue collective
    operations with the same keys (seen as a shape-mismatch abort in the second one's all-reduce)."""
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.MultiWorkerMirroredStrategy()


def _check_tf_config(text):
    """TF_CONFIG must name a cluster with workers and this process's task (its type and index in it)."""
    how = ('set TF_CONFIG on every machine, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}} (README, "Several machines")')
    if not text:
        raise UserError(f"--distribute multiworker needs the TF_CONFIG environment variable: {how}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        ok = bool(cluster.get("worker")) and isinstance(members, list) and 0 <= int(task["index"]) < len(members)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"TF_CONFIG is not a usable cluster description: {how}")


def replica_share(loss):
    """A replica's mean loss divided by the number of replicas in sync (1 outside a strategy).

    Keras sums the replicas' gradients, so differentiating this share makes the update that of the mean
    loss over the global batch, the update one device would make.
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / tf.cast(replicas, loss.dtype)


def track(trackers, values):
    """Adds this step's `values[name]` to each `keras.metrics.Mean` in `trackers` (a dict by name); returns
    the running means as a custom `train_step` returns them (`step_logs`)."""
    for name, tracker in trackers.items():
        tracker.update_state(values[name])
    return step_logs({name: tracker.result() for name, tracker in trackers.items()})


def step_logs(values):
    """The dict a custom `train_step` returns, shaped for Keras's reduction across workers.

    Keras 3 reduces each logged value across MultiWorkerMirroredStrategy workers with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars ("Invalid reduction dimension 0 for
    input with 0 dimensions", tensorflow/tensorflow#72388); under that strategy each value becomes [1]
    and the reduction returns the scalar mean. Elsewhere the values are returned unchanged.
    """
    import tensorflow as tf

    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return values
    return {name: tf.reshape(value, [1]) for name, value in values.items()}
