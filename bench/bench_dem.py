"""Times contrastive-divergence training of the deep energy model; prints one JSON line.

Usage (from the project root):
    python -m bench.bench_dem --images ../shared/data/photos
    python -m bench.bench_dem --mcmc langevin --runs 5

Each run is one `model.fit` epoch of `--batches` steps of CD-k (batch 256, k = 10 by default; 195 steps,
one epoch of 50,000 patches) at the trainer's settings (`dem.build_model`: XLA, and for Langevin the
noise drawn outside XLA a step ahead) with `--steps-per-execution 13` (15 calls per epoch), after a warm-up epoch that compiles
the step. Reported: the median throughput in patches per second over
the runs, the process's peak resident memory, and two floors measured in the same process:

    matmul floor  = FLOPs of one step / the machine's measured float32 matrix-multiply rate (XLA, the
                    step's own shapes [256, 784] x [784, 64]), counting the matrix products only:
                    per sweep, the z draw and the x-move's gradient cost 2 (2 n D H + 2 n H K) FLOPs for
                    Langevin and one more gradient for MALA (its proposal's); the parameter gradient of
                    both phases adds 2 (2 n D H + 4 n H K);
    noise floor   = standard normals a step draws (n D per sweep) / the measured rate of the generator
                    the step uses (`normal_noise.standard_normal` for Langevin and MALA).

ratio_to_matmul_floor = measured / matmul-floor throughput (1 would be every cycle in matrix products).
"""

import argparse
import json
import statistics
import time

import numpy as np

from bench._common import peak_rss_mb, timed


def _rate(fn, units, repeats=3):
    """Median units per second of a compiled zero-argument function (after one warm-up call)."""
    return units / timed(fn, repeats=repeats)[0]


def matmul_rate(n=256, dim=784, hidden=64, reps=200):
    """float32 FLOP/s of chained [n, D] x [D, H] products under XLA."""
    import tensorflow as tf

    a, v = tf.random.normal([n, dim]), tf.random.normal([hidden, dim])

    @tf.function(jit_compile=True)
    def run():
        acc = tf.zeros([n, hidden])
        for _ in range(reps):
            # The dependency on acc keeps XLA from hoisting or merging the products.
            acc += tf.matmul(a + acc[:, :1], v, transpose_b=True)
        return acc

    return _rate(lambda: run().numpy(), reps * 2 * n * dim * hidden)


def normal_rate(sweeps=10, n=256, dim=784):
    """Standard normals per second of `normal_noise.standard_normal`, the generator of the Langevin and
    MALA moves' noise, for one [sweeps, n, D] draw outside XLA, as the training step draws it."""
    import tensorflow as tf

    from energy_models import sampling as normal_noise

    run = tf.function(lambda seed: tf.reduce_sum(normal_noise.standard_normal([sweeps, n, dim], seed)))
    seed = tf.constant([1, 2])
    return _rate(lambda: run(seed).numpy(), sweeps * n * dim)


def step_flops(n, dim, hidden, latents, sweeps, mcmc):
    sweep = 2 * (2 * n * dim * hidden + 2 * n * hidden * latents)
    if mcmc == "mala":
        sweep += 2 * n * dim * hidden + 2 * n * hidden * latents
    return sweeps * sweep + 2 * (2 * n * dim * hidden + 4 * n * hidden * latents)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="photographs (default: random pixels)")
    parser.add_argument("--mcmc", default="mala", choices=("langevin", "mala"))
    parser.add_argument("--mcmc-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=195,
                        help="steps per timed run (195: one epoch of 50,000 patches)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--whiten", default="none", choices=("none", "zca"))
    parser.add_argument("--steps-per-execution", type=int, default=13,
                        help="Keras steps_per_execution (train.dem --steps-per-execution)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from energy_models.experiments import dem
    from energy_models.experiments.dem_config import DEMConfig

    n = args.batch_size * args.batches
    if args.images:
        from energy_models.data.patches import make_patch_set

        x = make_patch_set(args.images, n + 100, seed=0, heldout_fraction=0.0).train[:n]
    else:
        x = np.random.default_rng(0).random((n, 784), dtype=np.float32)
    config = DEMConfig(whiten=args.whiten, method="cd", mcmc=args.mcmc, mcmc_steps=args.mcmc_steps,
                           batch_size=args.batch_size, steps_per_execution=args.steps_per_execution).resolve()
    model = dem.build_model(config, x, dem.make_whitening(config, x, None))
    data = tf.data.Dataset.from_tensor_slices(x).batch(args.batch_size, drop_remainder=True).cache()
    # With tf.data's defaults some timed runs (1 to 2 of 6) ran at a fixed 4,878 patches/s with one core
    # idle; with autotuning off and a one-thread pool for this in-memory pipeline none of 16 did.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    data = data.with_options(options)
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    compile_seconds = time.perf_counter() - start
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        rates.append(n / (time.perf_counter() - start))
    measured = statistics.median(rates)
    flops = step_flops(args.batch_size, 784, 64, 64, args.mcmc_steps, args.mcmc)
    mm = matmul_rate()
    normals = normal_rate(args.mcmc_steps, args.batch_size, 784)
    matmul_floor = mm / flops * args.batch_size
    noise_floor = normals / (args.mcmc_steps * 784)
    result = {"mcmc": args.mcmc, "mcmc_steps": args.mcmc_steps, "batch_size": args.batch_size,
              "steps_per_execution": args.steps_per_execution, "batches": args.batches,
              "whiten": args.whiten, "patches_per_second_median": round(measured),
              "patches_per_second_runs": [round(r) for r in rates],
              "first_epoch_seconds_with_compilation": round(compile_seconds, 1),
              "step_mflops": round(flops / 1e6, 1), "matmul_gflops": round(mm / 1e9, 1),
              "matmul_floor_patches_per_second": round(matmul_floor),
              "ratio_to_matmul_floor": round(measured / matmul_floor, 3),
              "normals_per_second": round(normals), "noise_floor_patches_per_second": round(noise_floor),
              "peak_rss_mb": round(peak_rss_mb()),
              "keras": keras.__version__, "tensorflow": tf.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
