"""cNCE's exact optimum on full MNIST, constrained to positive definiteness: what the cNCE trainer should
converge to, for the epsilon rule's value and a sweep.

    TFDS_DATA_DIR=$TFDS_DATA_DIR python -m bench.cnce_optimum [--epsilon rule 0.005 0.02 ...]
        [--neighbourhood 4] [--floor 1e-3] [--out bench/results/cnce_optimum_n4.json]

One fixed noisy draw of the training split (60,000 rows, the trainer's first-epoch noise seed) and one
conditional noise draw y = x + epsilon u per row; `energy_models.gaussian.cnce_optimum` minimises the cNCE
loss over {Lambda~ - floor I >= 0} by a log barrier and Newton's method from Lambda~ = I. The unconstrained
optimum's smallest eigenvalue is reported beside it (a few unconstrained Newton steps from the start
cannot find it when it does not exist; the constrained optimum always does). Prints one JSON line per
epsilon: test log-likelihood, gap to the exact mle, score matching's constrained optimum for comparison,
relative Frobenius distance to the mle, lambda_min, J, Newton steps and seconds.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from bench._common import machine, peak_rss_mb  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", nargs="+", default=["rule"],
                        help="'rule' (the trainer's default rule) and/or numbers")
    parser.add_argument("--neighbourhood", type=int, default=4, choices=(4, 8))
    parser.add_argument("--floor", type=float, default=1e-3)
    parser.add_argument("--hessian-rows", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each split (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from energy_models.data.mnist import load_noisy_mnist
    from energy_models.gaussian.cnce import CNCEGaussian, rule_epsilon
    from energy_models.gaussian.cnce_optimum import cnce_constrained_optimum, cnce_features
    from energy_models.gaussian.mle import fit_grid_mle
    from energy_models.gaussian.model import GridGaussian, average_log_likelihood
    from energy_models.gaussian.sm_optimum import score_matching_constrained_optimum
    from energy_models.gaussian.trainable import moment_matched_start

    data = load_noisy_mnist(0.1, args.seed, None, args.limit)
    s = data.covariance()
    model = GridGaussian(28, 28, args.neighbourhood)
    model.set_mean(data.mean)
    pattern = model.pattern
    mle = fit_grid_mle(s, pattern).precision

    def test_ll(lam):
        model.precision_layer.set_dense(lam)
        return average_log_likelihood(model, data.test)

    mle_ll = test_ll(mle)
    sm_ll = test_ll(score_matching_constrained_optimum(s, pattern, args.floor))
    sigma = np.sqrt(np.diag(s))
    x = data.noisy_train(args.seed).astype(np.float64) - data.mean
    u = np.random.default_rng([args.seed, 2]).standard_normal(x.shape)
    start_model = CNCEGaussian(28, 28, args.neighbourhood, seed=args.seed)
    moment_matched_start(start_model, data)
    start_model.set_mean(data.mean)
    results = []
    for value in args.epsilon:
        epsilon = rule_epsilon(start_model, data, args.seed) if value == "rule" else float(value)
        start = time.perf_counter()
        features = cnce_features(x / sigma, (x + epsilon * u) / sigma, pattern)
        opt = cnce_constrained_optimum(
            features, pattern, args.floor, hessian_rows=args.hessian_rows,
            callback=lambda t, k, j, dec: print(f"  t {t:.0e} step {k} J {j:.8f} decrement {dec:.2e} "
                                                f"{time.perf_counter() - start:.0f} s", file=sys.stderr))
        del features
        seconds = time.perf_counter() - start
        tilde = pattern.dense(opt.diag.reshape(28, 28), pattern.edges_to_couplings(opt.edges))
        lam = tilde / sigma[:, None] / sigma[None, :]
        ll = test_ll(lam)
        row = {"epsilon": epsilon, "epsilon_source": "rule" if value == "rule" else "flag",
               "neighbourhood": args.neighbourhood, "floor": args.floor, "n_pairs": len(x),
               "test_ll": ll, "gap": mle_ll - ll, "mle_test_ll": mle_ll, "sm_constrained_test_ll": sm_ll,
               "lambda_min_standardised": opt.smallest_eigenvalue,
               "lambda_min": float(np.linalg.eigvalsh(lam)[0]), "objective": opt.objective,
               "rel_frobenius": float(np.linalg.norm(lam - mle) / np.linalg.norm(mle)),
               "newton_steps": opt.iterations, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
               "machine": machine()}
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
