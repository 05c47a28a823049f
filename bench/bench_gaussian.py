"""Benchmarks of issue 2: the exact `mle` fit on full MNIST, and the operator's matmul against dense.

    python -m bench.bench_gaussian --data-dir ../shared/data/tensorflow_datasets [--repeats 3]

Prints one JSON line per measurement. Timings are medians; the MLE time excludes loading the data
(but includes forming S, the compilation of the Hessian kernel and the Newton iterations).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._common import machine, peak_rss_mb, timed  # noqa: E402
from energy_models.data.mnist import load_noisy_mnist  # noqa: E402
from energy_models.gaussian.mle import fit_grid_mle  # noqa: E402
from energy_models.gaussian.model import GridGaussian, average_log_likelihood  # noqa: E402
from energy_models.linalg import grid  # noqa: E402
from energy_models.linalg.operators import LinearOperatorGridPrecision  # noqa: E402


def bench_mle(data, neighbourhood, repeats):
    pattern = grid.grid_pattern(28, 28, neighbourhood)
    results = []

    def fit():
        results.append(fit_grid_mle(data.covariance(), pattern))

    median, times = timed(fit, repeats=repeats, warmup=0)
    model = GridGaussian(28, 28, neighbourhood)
    model.set_mean(data.mean)
    model.precision_layer.set_dense(results[-1].precision)
    return {"bench": f"mle_n{neighbourhood}", "median_s": median, "times_s": times,
            "newton_iterations": results[-1].iterations, "max_abs_residual": results[-1].max_abs_residual,
            "test_log_likelihood": average_log_likelihood(model, data.test),
            "log_z_analytic": model.log_normalizer()}


def bench_matmul(neighbourhood, repeats, batch=1024, reps=200):
    """Lambda x for x [784, batch]: the operator against the dense product, measured two ways.

    Per call: a jit-compiled function called from Python `reps` times, which includes TensorFlow's
    dispatch of each call (about 0.5-0.7 ms here even for `x * 2`). In a loop: `reps` chained products
    x <- Lambda x inside one compiled `tf.while_loop`, the cost of the product itself as a training
    step sees it. Lambda is scaled to spectral radius 1 so the chain neither overflows nor underflows.
    """
    pattern = grid.grid_pattern(28, 28, neighbourhood)
    rng = np.random.default_rng(0)
    diag = rng.normal(size=(28, 28))
    couplings = rng.normal(size=pattern.masks.shape)
    radius = np.abs(np.linalg.eigvalsh(pattern.dense(diag, couplings * pattern.masks))).max()
    diag = tf.constant(diag / radius, tf.float32)
    couplings = tf.constant(couplings / radius, tf.float32)
    x = tf.constant(rng.normal(size=(784, batch)), tf.float32)  # Columns: matmul(x) = Lambda x.
    dense = LinearOperatorGridPrecision(diag, couplings, pattern).to_dense()

    @tf.function(jit_compile=True)
    def structured(x, diag, couplings):
        return LinearOperatorGridPrecision(diag, couplings, pattern).matmul(x)

    @tf.function(jit_compile=True)
    def dense_product(x, dense):
        return tf.matmul(dense, x)

    @tf.function(jit_compile=True)
    def structured_chain(x, diag, couplings, n):
        op = LinearOperatorGridPrecision(diag, couplings, pattern)
        return tf.while_loop(lambda i, x: i < n, lambda i, x: (i + 1, op.matmul(x)), (0, x))[1]

    @tf.function(jit_compile=True)
    def dense_chain(x, dense, n):
        return tf.while_loop(lambda i, x: i < n, lambda i, x: (i + 1, tf.matmul(dense, x)), (0, x))[1]

    np.testing.assert_allclose(structured(x, diag, couplings).numpy(), dense_product(x, dense).numpy(),
                               rtol=1e-4, atol=1e-4)
    n = tf.constant(reps)
    np.testing.assert_allclose(structured_chain(x, diag, couplings, n).numpy(),
                               dense_chain(x, dense, n).numpy(), rtol=1e-3, atol=1e-3)
    t_op, _ = timed(lambda: [structured(x, diag, couplings) for _ in range(reps)][-1].numpy(),
                    repeats=repeats)
    t_dense, _ = timed(lambda: [dense_product(x, dense) for _ in range(reps)][-1].numpy(), repeats=repeats)
    t_op_loop, _ = timed(lambda: structured_chain(x, diag, couplings, n).numpy(), repeats=repeats)
    t_dense_loop, _ = timed(lambda: dense_chain(x, dense, n).numpy(), repeats=repeats)
    return {"bench": f"matmul_n{neighbourhood}_batch{batch}",
            "per_call_operator_ms": 1e3 * t_op / reps, "per_call_dense_ms": 1e3 * t_dense / reps,
            "per_call_speedup": t_dense / t_op,
            "in_loop_operator_ms": 1e3 * t_op_loop / reps, "in_loop_dense_ms": 1e3 * t_dense_loop / reps,
            "in_loop_speedup": t_dense_loop / t_op_loop}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for neighbourhood in (4, 8):
        print(json.dumps(bench_matmul(neighbourhood, args.repeats)), flush=True)
    start = time.perf_counter()
    data = load_noisy_mnist(0.1, 0, args.data_dir)
    print(json.dumps({"bench": "load_mnist", "seconds": time.perf_counter() - start}), flush=True)
    for neighbourhood in (4, 8):
        print(json.dumps(bench_mle(data, neighbourhood, args.repeats)), flush=True)
    print(json.dumps({"bench": "summary", "machine": machine(), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
