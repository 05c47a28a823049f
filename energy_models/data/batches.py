"""Training batches whose content is a function of (seed, epoch, step) only, so a resumed run sees the
same batches as one that was never interrupted.

`tf.data`'s `shuffle(reshuffle_each_iteration=True)` and `Dataset.random` keep their state in the
iterator: a process restarted at epoch k would replay epoch 0's order and noise. Here epoch e's order is
the permutation argsort(u), u ~ U(0, 1)^n drawn with the stateless seed (seed, -1 - e), and batch j of epoch e
gets its noise from the stateless seed (seed, e * steps + j), so `epoch_batches(..., start_epoch=k)`
yields exactly what an uninterrupted dataset yields from epoch k on.
"""

import numpy as np


def steps_per_epoch(n, batch_size):
    """Full batches per epoch (the remainder of each permutation is dropped)."""
    return max(1, n // batch_size)


def epoch_batches(pixels, batch_size, seed, start_epoch=0, noise_std=0.0):
    """An endless `tf.data.Dataset` of [batch_size, D] batches starting at epoch `start_epoch`.

    Args:
      pixels: float32 [n, D] training rows (held once, as a constant of the pipeline), or the
        `train_constant` of their data object, so that datasets of several fits share one copy.
      batch_size: rows per batch; each epoch has `steps_per_epoch(n, batch_size)` batches.
      seed: integer seed of the permutations and the noise.
      start_epoch: the first epoch produced (the epoch a resumed run continues from).
      noise_std: std of fresh N(0, noise_std^2) noise added to every pixel of every batch (0: none).
    """
    import tensorflow as tf

    if not isinstance(pixels, tf.Tensor):
        pixels = tf.constant(np.asarray(pixels, np.float32))
    n = int(pixels.shape[0])
    steps = steps_per_epoch(n, batch_size)
    batch_size = min(batch_size, n)
    seed = int(seed)

    def one_epoch(epoch):
        # Seed (seed, -1 - e): never equal to a noise seed (seed, step >= 0).
        key = tf.stack([tf.constant(seed, tf.int64), -1 - epoch])
        order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
        order = order[:steps * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [steps, batch_size])).enumerate().map(
            lambda step, index: (epoch * steps + step, index))

    def gather(global_step, index):
        x = tf.gather(pixels, index)
        if noise_std > 0:
            eps = tf.random.stateless_normal(tf.shape(x), seed=tf.stack([tf.constant(seed, tf.int64),
                                                                         global_step]), dtype=x.dtype)
            x = x + noise_std * eps
        return x

    dataset = tf.data.Dataset.counter(start_epoch).flat_map(one_epoch)
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def train_constant(data):
    """`data.train_pixels` as one float32 tensor, made on first use and kept on `data`.

    Each `epoch_batches` call would otherwise copy the training rows into a new constant, and Keras keeps
    a finished fit's dataset alive, so every round of adaptive NCE would add a copy of the training rows
    to the peak memory (BENCHMARKS.md, "NCE and cNCE from their default commands (issue 15)")."""
    import tensorflow as tf

    if getattr(data, "_train_constant", None) is None:
        data._train_constant = tf.constant(np.asarray(data.train_pixels, np.float32))
    return data._train_constant
