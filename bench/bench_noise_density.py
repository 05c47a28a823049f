"""The NCE noise's log-density by hand (one triangular solve, log|det| computed once) against TFP's
`MultivariateNormalTriL.log_prob`, on the shapes of a training step (issue 16: why the noise stays hand-written).

    python -m bench.bench_noise_density [--repeats 5]

Prints one JSON line: the largest difference of the two log-densities, the median milliseconds per call of
each on a [256, 784] batch, and whether TFP's `sample` with the same stateless seed gives the draws the
trainers make (`tf.random.stateless_normal` through the scale), on which every seeded run's numbers rest.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from bench._common import machine  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    d, n = 784, 256
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    cov = a @ a.T + 0.1 * np.eye(d)
    scale = tf.constant(np.linalg.cholesky(cov), tf.float32)
    mu = tf.constant(rng.random(d), tf.float32)
    x = tf.constant(rng.random((n, d)), tf.float32)
    log_norm = -float(np.sum(np.log(np.diag(np.linalg.cholesky(cov))))) - 0.5 * d * np.log(2 * np.pi)

    @tf.function
    def by_hand(x):  # as `NCEGaussian.noise_log_prob`: log|det A| once, one triangular solve per call
        z = tf.transpose(tf.linalg.triangular_solve(scale, tf.transpose(x - mu), lower=True))
        return -0.5 * tf.reduce_sum(tf.square(z), -1) + log_norm

    dist = tfp.distributions.MultivariateNormalTriL(loc=mu, scale_tril=scale)
    by_tfp = tf.function(dist.log_prob)

    def per_call_ms(f, calls=200):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(calls):
                f(x).numpy()
            times.append((time.perf_counter() - start) / calls * 1e3)
        return float(np.median(times))

    eps = tf.random.stateless_normal((n, d), seed=[1, 2])
    same_stream = bool(np.allclose((mu + tf.matmul(eps, scale, transpose_b=True)).numpy(),
                                   dist.sample(n, seed=[1, 2]).numpy()))
    print(json.dumps({"max_abs_difference": float(np.max(np.abs(by_hand(x).numpy() - by_tfp(x).numpy()))),
                      "by_hand_ms": per_call_ms(by_hand), "tfp_ms": per_call_ms(by_tfp),
                      "tfp_sample_is_the_trainers_stream": same_stream, "machine": machine()}))


if __name__ == "__main__":
    main()
