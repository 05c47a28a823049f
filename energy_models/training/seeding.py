"""Stateless seeds that a checkpoint can carry and that differ across `tf.distribute` replicas.

Every random draw of a training step uses a stateless op seeded by (seed, counter), the counter being
a non-trainable weight of the model that the step advances: checkpoints save the weight, so a resumed
run continues the same stream (a `keras.random.SeedGenerator`'s state is not in `save_weights`).
"""

import tensorflow as tf


def replica_seed(seed, counter):
    """The stateless seed [2] (seed, counter) folded with the index of the current replica (the same
    fold, 0, outside `tf.distribute` and on the first replica), so replicas draw different noise."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(tf.convert_to_tensor(counter), tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(replica, tf.int32))
