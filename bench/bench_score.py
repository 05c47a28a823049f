"""Scoring throughput through SavedModels (issue 6): patches per second of `unnormalized_log_prob`.

    python -m bench.bench_score [--n 262144] [--batch 16384] [--repeats 5]

Exports a deep energy model (raw pixels and ZCA-whitened; random parameters: the cost does not depend on
them) and the 4-neighbour Gaussian, reloads each with plain `tf.saved_model.load`, and times scoring
`n` patches in batches. The cost floor is the model's multiply-adds per patch over this machine's measured
float32 matrix-multiply rate. Prints one JSON line per model.
"""

import argparse
import json
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._common import machine, peak_rss_mb, timed  # noqa: E402


def matmul_rate(repeats=5):
    """Measured float32 GFLOP/s of an [8192, 784] x [784, 784] product (the shape scoring uses)."""
    a = tf.random.normal([8192, 784])
    b = tf.random.normal([784, 784])
    f = tf.function(lambda: tf.matmul(a, b))
    median, _ = timed(lambda: f().numpy(), repeats=repeats)
    return 2 * 8192 * 784 * 784 / median / 1e9


def export_models(root):
    from energy_models import savedmodel
    from energy_models.dem.contrastive_divergence import ContrastiveDivergence
    from energy_models.dem.energy import DEMEnergy
    from energy_models.dem.export import DEMModule
    from energy_models.gaussian import export
    from energy_models.gaussian.model import GridGaussian
    from energy_models.whitening import LinearWhitening

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4000, 784)).astype(np.float32)
    paths = {}
    for name, whitening in (("dem_raw", None), ("dem_zca", LinearWhitening.zca(x, 1e-3))):
        energy = DEMEnergy(64, 64, 1.0)
        model = ContrastiveDivergence(energy, dim=784, whitening=whitening, mcmc="langevin", mcmc_steps=1)
        energy.V.assign(rng.normal(size=(64, 784)).astype(np.float32) / 28)
        module = DEMModule(model, x.mean(0), 0.1 * np.eye(784), {"name": name}, sample_sweeps=1)
        paths[name] = savedmodel.save_atomically(module, pathlib.Path(root) / name)
    gaussian = GridGaussian(28, 28, 4, diagonal_init=10.0)
    paths["gaussian_n4"] = savedmodel.save_atomically(export.gaussian_module(gaussian, {}),
                                                  pathlib.Path(root) / "gaussian")
    return paths


# Multiply-adds per patch: whitening W (x - m) is D^2; V x is H D; W g is K H.
FLOPS = {"dem_raw": 2 * (64 * 784 + 64 * 64), "dem_zca": 2 * (784 * 784 + 64 * 784 + 64 * 64),
         "gaussian_n4": 2 * 784 * 784}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=262_144)
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rate = matmul_rate()
    x = np.random.default_rng(1).uniform(0, 1, size=(args.n, 784)).astype(np.float32)
    batches = [tf.constant(x[i:i + args.batch]) for i in range(0, args.n, args.batch)]
    with tempfile.TemporaryDirectory() as root:
        for name, path in export_models(root).items():
            model = tf.saved_model.load(path)

            def score():
                return [model.unnormalized_log_prob(b) for b in batches][-1].numpy()

            median, times = timed(score, repeats=args.repeats)
            floor = rate * 1e9 / FLOPS[name]
            print(json.dumps({"bench": f"score_{name}", "patches_per_s": args.n / median,
                              "floor_patches_per_s": floor, "ratio_to_floor": args.n / median / floor,
                              "median_s": median, "times_s": times, "matmul_gflops": rate,
                              "batch": args.batch}), flush=True)
    print(json.dumps({"bench": "summary", "machine": machine(), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
