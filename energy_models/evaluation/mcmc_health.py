"""MCMC health: split R-hat and effective sample size of a set of chains, and the effective sample size of
importance weights (AIS).

For M chains of length T of a scalar summary y (the log density, or a fixed projection of the state),
with W the mean within-half-chain variance and B / n the variance of the half-chain means
(each chain split in two, n = T / 2, so that a chain that drifts also disagrees with itself),

    R-hat = sqrt( ((n - 1) / n W + B / n) / W )              (Gelman and Rubin 1992; Gelman et al., BDA3)

tends to 1 when every chain samples the same distribution and exceeds it while they still remember
their starts. `tfp.mcmc.potential_scale_reduction` computes it; `tfp.mcmc.effective_sample_size` gives
the ESS M T / (1 + 2 sum_t rho_t) from the autocorrelations pooled across chains.

Threshold: R-hat > 1.1 (Gelman's) means "not mixed". The sampling noise of R-hat is large for the short
traces affordable during training, so the threshold and the trace (TRACE_*: 64 chains, 20 records 20
sweeps apart) were chosen from R-hat's spread on exact draws and on well-mixed MALA chains (BENCHMARKS.md,
"energy_models/evaluation/mcmc_health.py: R-hat threshold and trace size"). Vehtari et al. (2021)'s 1.01
would fire on most perfectly mixed runs at these sizes, and records 5 sweeps apart are too correlated for
any threshold; 20 sweeps apart, chains that sample their target exactly stay clearly below 1.1, so a
warning means the chains disagree, not that the trace was short.

For importance weights w_n = exp(log w_n) (AIS), Kish's effective sample size

    ESS = (sum_n w_n)^2 / sum_n w_n^2

is N for equal weights and 1 when one chain carries all the weight; beside the standard error it says
how many chains the estimate of log Z effectively rests on.
"""

import weakref

import numpy as np
import tensorflow as tf

RHAT_THRESHOLD = 1.1
TRACE_CHAINS = 64
TRACE_LENGTH = 20
TRACE_THIN = 20
NUM_PROJECTIONS = 4
_COMPILED = weakref.WeakKeyDictionary()  # model -> {(length, thin, warmup): compiled trace loop}


def chain_diagnostics(trace):
    """Split R-hat and ESS of a trace [T, M, k] (T steps, M chains, k scalar summaries).

    Returns a dict: `rhat` [k], `ess` [k] (total over chains), `rhat_max`, `ess_min` and `mixed`
    (rhat_max <= RHAT_THRESHOLD).
    """
    import tensorflow_probability as tfp  # Imported on use: TFP pulls in tf_keras.

    trace = tf.convert_to_tensor(np.asarray(trace, np.float64))
    rhat = tfp.mcmc.potential_scale_reduction(trace, independent_chain_ndims=1, split_chains=True).numpy()
    ess = tfp.mcmc.effective_sample_size(trace, cross_chain_dims=1).numpy()
    rhat_max = float(np.max(rhat))
    return {"rhat": rhat, "ess": ess, "rhat_max": rhat_max, "ess_min": float(np.min(ess)),
            "mixed": bool(rhat_max <= RHAT_THRESHOLD)}


def projection_directions(dim, rng):
    """NUM_PROJECTIONS random unit directions in R^dim (float32 [dim, NUM_PROJECTIONS]), drawn from `rng`."""
    directions = rng.standard_normal((dim, NUM_PROJECTIONS))
    return tf.constant(directions / np.linalg.norm(directions, axis=0), tf.float32)


def trace_summaries(log_p, x, directions):
    """The scalar summaries a trace records per chain: [n, 1 + NUM_PROJECTIONS] = (log p, x . directions)."""
    return tf.concat([log_p[:, None], tf.matmul(x, directions)], axis=1)


def importance_ess(log_weights):
    """Kish's (sum w)^2 / sum w^2 from log-weights, computed as exp(2 lse(log w) - lse(2 log w)) (no
    overflow); non-finite log-weights count as zero weight."""
    w = np.asarray(log_weights, np.float64)
    w = w[np.isfinite(w)]
    if w.size == 0:
        return 0.0
    shift = w.max()
    scaled = np.exp(w - shift)
    return float(scaled.sum() ** 2 / np.sum(scaled ** 2))


def trace_chains(model, start, seed, length=TRACE_LENGTH, thin=TRACE_THIN, warmup=None):
    """Runs the model's Gibbs sweeps from pixel-space `start` [M, D] and records `summaries` every `thin`
    sweeps, `length` times, after `warmup` sweeps (default: the recorded span again, BDA3's discard of the
    first half). Returns (trace [length, M, 1 + NUM_PROJECTIONS], final model-space states).

    The projections are fixed random unit directions (seeded), so a chain that moves only along them or
    only in its energy is caught by either. All sweeps run in one compiled loop, at the model's step size.
    """
    warmup = length * thin if warmup is None else warmup
    rng = np.random.default_rng(seed)
    directions = projection_directions(model.dim, rng)
    u = model.to_model_space(tf.constant(np.asarray(start, np.float32)))
    seed = tf.constant(rng.integers(0, 2 ** 31 - 1, size=2), tf.int32)
    compiled = _COMPILED.setdefault(model, {})
    key = (int(length), int(thin), int(warmup))
    if key not in compiled:  # Traced once per model and setting, not per call: tracing takes about a check's time.
        compiled[key] = _trace_loop(model, *key)
    trace, u = compiled[key](u, model.step_size, seed, directions)
    return trace.numpy().astype(np.float64), u


def _trace_loop(model, length, thin, warmup):
    from energy_models.dem import gibbs as dem_gibbs

    energy = model.energy

    def sweeps(u, eta, n, s):
        x, _, _ = dem_gibbs.run_chains(u, eta, s, tf.constant(n), energy.latent_logits, energy.joint,
                                       model.mcmc, model.leapfrog_steps, unroll=False)
        return x

    @tf.function(reduce_retracing=True)  # Not XLA: compiling takes several checks' time, for no speed-up.
    def run(u, eta, seed, directions):
        seeds = tf.random.experimental.stateless_split(seed, length + 1)
        if warmup > 0:
            u = sweeps(u, eta, warmup, seeds[length])
        records = tf.TensorArray(tf.float32, size=length)

        def body(t, u, records):
            u = sweeps(u, eta, thin, seeds[t])
            return t + 1, u, records.write(t, trace_summaries(energy(u), u, directions))

        _, u, records = tf.while_loop(lambda t, *_: t < length, body, (tf.constant(0), u, records))
        return records.stack(), u

    return run


def not_mixed_line(where, rhat_max, ess_min, advice="run the chains longer"):
    """The one-line warning for chains whose split R-hat exceeds RHAT_THRESHOLD (None when they mixed)."""
    if rhat_max <= RHAT_THRESHOLD:
        return None
    return (f"warning: {where}: MCMC chains have not mixed (split R-hat {rhat_max:.3f} > {RHAT_THRESHOLD}, "
            f"ESS {ess_min:.0f}); samples and AIS from this model are unreliable: {advice}")


def model_diagnostics(model, gaussian, heldout, seed):
    """Chain health of a deep energy model's sampler: `trace_chains` from the persistent chains (persistent
    CD once they exist) or from draws of the fitted Gaussian, and the energy gap

        gap = mean -log p~(final chain states) - mean -log p~(held-out patches)

    (model space; log|det W| cancels): about 0 when the chains sample the model and the model fits the
    held-out patches, large when the chains sit where the model puts little mass, or the data does.

    Returns a dict for metrics.json and TensorBoard: mcmc_rhat_max, mcmc_ess_min, mcmc_energy_gap,
    mcmc_mixed, mcmc_chains, mcmc_start.
    """
    persistent = bool(getattr(model, "persistent", False)) and float(model.chains_ready.numpy()) > 0
    if persistent:
        start, origin = model.to_pixel_space(model.chains[:TRACE_CHAINS]), "persistent chains"
    else:
        start, origin = gaussian.sample(TRACE_CHAINS, seed), "fitted Gaussian draws"
    trace, u = trace_chains(model, np.asarray(start, np.float32), seed)
    diagnostics = chain_diagnostics(trace)
    held = model.to_model_space(tf.constant(np.asarray(heldout, np.float32)[:2000]))
    gap = float(tf.reduce_mean(model.energy(held)) - tf.reduce_mean(model.energy(u)))
    return {"mcmc_rhat_max": diagnostics["rhat_max"], "mcmc_ess_min": diagnostics["ess_min"],
            "mcmc_energy_gap": gap, "mcmc_mixed": diagnostics["mixed"], "mcmc_chains": int(trace.shape[1]),
            "mcmc_start": origin}
