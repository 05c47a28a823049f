"""What the samplers share: exact float32 (`use_exact_float32`) and standard normal noise for Langevin
moves (`standard_normal`): Box-Muller on uniforms of numpy's SFC64, outside XLA.

For independent U_1, U_2 ~ Uniform[0, 1),

    R = sqrt(-2 log(1 - U_1)),  theta = 2 pi U_2,   (R cos theta, R sin theta) ~ N(0, I_2)

exactly (Box and Muller, 1958): R^2 / 2 is Exp(1) and theta is uniform and independent of it, which is the
polar form of two independent standard normals. numpy's float32 uniforms have 24 random bits, so the
largest |draw| is sqrt(2 * 24 log 2) = 5.77.

Why not tf.random.stateless_normal: a CD-10 step of the deep energy model on batch 256 draws
10 x 256 x 784 = 2.0 M normals, the largest cost of the step, and XLA's CPU code for it runs the
element-wise transcendental functions on one thread. Box-Muller with TensorFlow's multithreaded kernels
is faster, and most of its cost is the uniforms, which numpy's SFC64 makes in less CPU time than TF's
Philox kernel. Box-Muller on Philox uniforms is the fastest draw on its own, but in the training step
(`ContrastiveDivergence`), where the draw for the next step runs beside the XLA-compiled update, the
SFC64 version trains faster: its one numpy thread fits beside the update's two-thread matrix products
better than a second two-thread kernel does (BENCHMARKS.md, "energy_models/sampling.py: host-side
normal noise").

The generator is seeded by SeedSequence(seed), so a draw is a pure function of (shape, seed), as a
stateless TF op is; the op is declared stateless for the same reason, which also keeps TensorFlow from
ordering it after the step's variable updates. It runs Python (tf.numpy_function), so it cannot be
exported in a SavedModel: it is for training steps only.

On a GPU the draw would be made on the host and copied to the device every step (8 MB for CD-10 on
batch 256), while the device draws tf.random.stateless_normal faster than the update needs it; so the
trainer uses this path only when TensorFlow sees no GPU (`host_noise_pays`).
"""

import numpy as np
import tensorflow as tf


def _uniforms(seed, count):
    """[2, count] float32 uniforms in [0, 1) from numpy's SFC64 seeded by the int64 seed vector."""
    entropy = np.asarray(seed, np.int64).view(np.uint64).tolist()  # SeedSequence takes non-negative ints.
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence(entropy)))
    return rng.random((2, int(count)), dtype=np.float32)


def standard_normal(shape, seed):
    """Independent float32 N(0, 1) draws of `shape` from a stateless seed (an integer vector, e.g. [2]).

    The pairs (R cos theta, R sin theta) fill the two halves of the flattened result: the draws are
    independent, so how they are laid out does not matter.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    size = tf.reduce_prod(shape)
    half = (size + 1) // 2
    u = tf.numpy_function(_uniforms, [tf.cast(seed, tf.int64), half], tf.float32, stateful=False)
    u = tf.reshape(u, [2, half])
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[0]))  # 1 - U is in (0, 1]: log never sees 0.
    angle = (2.0 * np.pi) * u[1]
    pairs = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.reshape(pairs[:size], shape)


def host_noise_pays():
    """Whether the numpy draw can feed the training step: only on CPUs (no GPU visible to TensorFlow),
    where the host is the device and nothing is copied."""
    return not tf.config.list_logical_devices("GPU")


def use_exact_float32():
    """Switches TensorFloat-32 off for the rest of the process (idempotent; called where MCMC or AIS starts).

    On NVIDIA GPUs from Ampere on, TensorFlow runs float32 matrix products in TF32 unless told otherwise
    (`tf.config.experimental.enable_tensor_float_32_execution`): their inputs are rounded to 10 mantissa
    bits, a relative error of up to 2^-11 = 4.9e-4 each. A Metropolis step accepts with
    min(1, exp(log p(x') - log p(x) + ...)), a difference of a few nats between two log densities whose size
    is about 10^3 nats for the deep energy model on 784 pixels; a relative error of 5e-4 in the products
    behind them is up to 0.5 nat in that difference, which biases acceptance, and AIS adds one such
    difference per temperature into every log-weight. Training of the energy itself tolerates TF32, so only
    the samplers switch it off. The setting is process-wide (TensorFlow has no per-op switch) and changes
    nothing on a CPU.
    """
    if tf.config.experimental.tensor_float_32_execution_enabled():
        tf.config.experimental.enable_tensor_float_32_execution(False)
