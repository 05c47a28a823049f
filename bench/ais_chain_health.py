"""Split R-hat of forward AIS's chains (`ais.final_chain_diagnostics`): how it behaves on chains that are in
equilibrium and on chains that are not, and why the continuation is NUTS rather than AIS's own HMC.

    python -m bench.ais_chain_health [--repeats 10] [--json bench/results/ais_chain_health.json]

Target: the 30-dimensional Gaussian of tests/test_ais.py (covariance 0.05 A A^T + 0.01 I). Cases, each
`--repeats` times with different seeds, 64 chains, 20 records:
* `exact`: exact draws continued as `final_chain_diagnostics` does (NUTS whitened by the base);
* `exact_hmc`: the same draws continued by AIS's fixed-length HMC in pixel coordinates (5 leapfrog steps,
  step 0.135, AIS's adapted one), 10 transitions a record, no warm-up;
* `ais300`: forward AIS with 300 temperatures from an isotropic base, then `final_chain_diagnostics`;
* `two_modes`: the same Gaussian split into two equal modes 4 units apart along one axis (40 of its
  smallest standard deviations), forward AIS with 300 temperatures: chains end in either mode.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench._common import machine  # noqa: E402
from energy_models.evaluation import ais  # noqa: E402
from energy_models.evaluation.mcmc_health import (
    NUM_PROJECTIONS,
    TRACE_LENGTH,
    chain_diagnostics,
    projection_directions,
    trace_summaries,
)


def gaussian_30d():
    rng = np.random.default_rng(0)
    d = 30
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = 0.05 * a @ a.T + 0.01 * np.eye(d)
    prec = tf.constant(np.linalg.inv(cov), tf.float32)
    mu = rng.uniform(0, 1, d).astype(np.float32)

    def target(x):
        centred = x - mu
        return -0.5 * tf.reduce_sum(centred * tf.matmul(centred, prec), -1)

    return mu, cov, target


def two_modes(mu, cov):
    """0.5 N(mu - a, cov) + 0.5 N(mu + a, cov), a = 2 e_0 (unnormalised)."""
    prec = tf.constant(np.linalg.inv(cov), tf.float32)
    shift = np.zeros(len(mu), np.float32)
    shift[0] = 2.0

    def target(x):
        quad = [-0.5 * tf.reduce_sum(c * tf.matmul(c, prec), -1) for c in (x - mu - shift, x - mu + shift)]
        return tf.reduce_logsumexp(tf.stack(quad), 0)

    return target


def fixed_hmc_diagnostics(target, start, step_size, seed, thin=10):
    """AIS's own kernel (HMC, 5 leapfrog steps) continued from `start`, recorded as in the NUTS version."""
    import tensorflow_probability as tfp

    kernel = tfp.mcmc.HamiltonianMonteCarlo(target, step_size=step_size, num_leapfrog_steps=5)
    run = tf.function(lambda x, s: tfp.mcmc.sample_chain(TRACE_LENGTH, x, kernel=kernel, trace_fn=None,
                                                         num_steps_between_results=thin - 1, seed=s))
    states = run(start, tf.constant([seed, 7], tf.int32))
    directions = projection_directions(start.shape[-1], np.random.default_rng(seed))
    flat = tf.reshape(states, [-1, start.shape[-1]])
    summaries = trace_summaries(target(flat), flat, directions)
    return chain_diagnostics(tf.reshape(summaries, [TRACE_LENGTH, -1, 1 + NUM_PROJECTIONS]).numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    mu, cov, target = gaussian_30d()
    d = len(mu)
    base = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d))
    wide = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d) + np.diag(np.r_[4.0, np.zeros(d - 1)]))
    bimodal = two_modes(mu, cov)
    cases = {"exact": [], "exact_hmc": [], "ais300": [], "two_modes": []}
    for seed in range(args.repeats):
        exact = tf.constant(np.random.default_rng(100 + seed).multivariate_normal(mu, cov, size=64), tf.float32)
        cases["exact"].append(ais.final_chain_diagnostics(target, exact, base, (seed, 1))["rhat_max"])
        cases["exact_hmc"].append(fixed_hmc_diagnostics(target, exact, 0.135, seed)["rhat_max"])
        cases["ais300"].append(ais.forward_ais(target, base, 300, 64, 0.02, seed=(seed, 2), trace=True).rhat_max)
        cases["two_modes"].append(ais.forward_ais(bimodal, wide, 300, 64, 0.02, seed=(seed, 2), trace=True).rhat_max)
        print(seed, {k: round(v[-1], 3) for k, v in cases.items()}, flush=True)
    summary = {k: {"median": float(np.median(v)), "max": float(np.max(v)), "min": float(np.min(v)),
                   "all": [float(x) for x in v]} for k, v in cases.items()}
    print(json.dumps({k: {m: round(s[m], 3) for m in ("min", "median", "max")} for k, s in summary.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "repeats": args.repeats, "rhat_max": summary}, f, indent=1)


if __name__ == "__main__":
    main()
