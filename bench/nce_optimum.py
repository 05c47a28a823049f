"""NCE's exact optimum on full MNIST for a sweep of nu: what the NCE trainer would converge to.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m bench.nce_optimum [--nu 1 10 100]
        [--noise full] [--noise-samples 60000] [--neighbourhood 4] [--out bench/results/nce_optimum.json]

One fixed draw of the noisy training split (60,000 rows) and `--noise-samples` draws of p_n (each with
weight nu / m); `energy_models.gaussian.nce_optimum.nce_optimum` minimises the NCE objective by L-BFGS
from Lambda~ = I and the balanced c. Prints one JSON line per nu: smallest eigenvalue of Lambda, and when
it is positive definite the test log-likelihood, gap to the exact `mle`, log Z estimate (-c), analytic
log Z and their difference, the relative Frobenius distance to the `mle` Lambda, and the wall time.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from bench._common import machine, peak_rss_mb  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nu", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--noise", default="full", choices=("isotropic", "diagonal", "full", "model"))
    parser.add_argument("--noise-model", default=None,
                        help="--noise model: a Gaussian SavedModel whose N(mu, Lambda^-1) is the noise (e.g. "
                             "the score-matching fit: a grid Gaussian close to the data)")
    parser.add_argument("--noise-samples", type=int, default=60_000)
    parser.add_argument("--neighbourhood", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/nce_optimum.json")
    args = parser.parse_args()

    from energy_models.data.mnist import load_noisy_mnist
    from energy_models.gaussian.mle import fit_grid_mle
    from energy_models.gaussian.model import GridGaussian, average_log_likelihood
    from energy_models.gaussian.nce import LOG_2PI, dj_dc_root, noise_scale
    from energy_models.gaussian.nce_optimum import nce_optimum
    from energy_models.linalg import grid

    data = load_noisy_mnist(0.1, args.seed, None)
    s = data.covariance()
    pattern = grid.grid_pattern(28, 28, args.neighbourhood)
    mle = fit_grid_mle(s, pattern).precision
    reference = GridGaussian(28, 28, args.neighbourhood)
    reference.set_mean(data.mean)
    reference.precision_layer.set_dense(mle)
    mle_ll = average_log_likelihood(reference, data.test)

    rng = np.random.default_rng(args.seed + 1)
    sigma = np.sqrt(np.diag(s))
    x = data.noisy_train(args.seed).astype(np.float64) - data.mean
    eps = rng.standard_normal((args.noise_samples, len(sigma)))
    if args.noise == "model":
        import tensorflow as tf

        loaded = tf.saved_model.load(args.noise_model)
        chol = np.linalg.cholesky(loaded.precision().numpy().astype(np.float64))  # Lambda_n = L L^T
        y = scipy.linalg.solve_triangular(chol, eps.T, lower=True, trans="T").T  # L^-T eps: Cov Lambda_n^-1
        norm = np.sum(np.log(np.diag(chol))) - 0.5 * len(sigma) * LOG_2PI
        log_pn_x = -0.5 * np.sum((x @ chol) ** 2, axis=1)  # x^T Lambda_n x = ||L^T x||^2
    elif args.noise == "full":
        scale = noise_scale(args.noise, s)
        y = eps @ scale.T
        log_pn_x = -0.5 * np.sum(np.linalg.solve(scale, x.T) ** 2, axis=0)
        norm = -np.sum(np.log(np.diag(scale))) - 0.5 * len(sigma) * LOG_2PI
    else:
        scale = noise_scale(args.noise, s)
        y = eps * scale
        log_pn_x = -0.5 * np.sum((x / scale) ** 2, axis=1)
        norm = -np.sum(np.log(scale)) - 0.5 * len(sigma) * LOG_2PI
    log_pn_x, log_pn_y = log_pn_x + norm, -0.5 * np.sum(eps ** 2, axis=1) + norm
    x_std, y_std = (x / sigma).astype(np.float32), (y / sigma).astype(np.float32)
    del eps, y
    q0 = lambda u: np.sum(u.astype(np.float64) ** 2, axis=1)  # noqa: E731  (Lambda~ = I)
    results = []
    for nu in args.nu:
        start = time.perf_counter()
        c0 = dj_dc_root(-0.5 * q0(x_std) - log_pn_x - np.log(nu), -0.5 * q0(y_std) - log_pn_y - np.log(nu), nu)
        opt = nce_optimum(x_std, log_pn_x, y_std, log_pn_y, pattern, nu, c0, max_iter=args.max_iter)
        seconds = time.perf_counter() - start
        tilde = pattern.dense(opt.diag.reshape(28, 28), pattern.edges_to_couplings(opt.edges))
        lam = tilde / sigma[:, None] / sigma[None, :]
        eig = np.linalg.eigvalsh(lam)
        row = {"nu": nu, "noise": args.noise, "noise_samples": args.noise_samples,
               "neighbourhood": args.neighbourhood, "iterations": opt.iterations,
               "gradient_max_abs": opt.gradient_norm, "objective": opt.objective,
               "lambda_min": float(eig[0]), "negative_eigenvalues": int(np.sum(eig < 0)),
               "log_z_estimate": -opt.c,
               "rel_frobenius": float(np.linalg.norm(lam - mle) / np.linalg.norm(mle)),
               "mle_test_ll": mle_ll, "seconds": seconds}
        if eig[0] > 0:
            model = GridGaussian(28, 28, args.neighbourhood)
            model.set_mean(data.mean)
            model.precision_layer.set_dense(lam)
            row["test_ll"] = average_log_likelihood(model, data.test)
            row["gap"] = mle_ll - row["test_ll"]
            row["log_z_analytic"] = 0.5 * len(sigma) * LOG_2PI - 0.5 * float(np.sum(np.log(eig)))
            row["log_z_error"] = row["log_z_estimate"] - row["log_z_analytic"]
        row.update(peak_rss_mb=peak_rss_mb(), machine=machine())
        results.append(row)
        print(json.dumps(row), flush=True)
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
