"""MCMC and AIS in full float32: TensorFloat-32 matrix products switched off.

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

import tensorflow as tf


def use_exact_float32():
    """Switches TF32 off for the rest of the process (idempotent; called where MCMC or AIS starts)."""
    if tf.config.experimental.tensor_float_32_execution_enabled():
        tf.config.experimental.enable_tensor_float_32_execution(False)
