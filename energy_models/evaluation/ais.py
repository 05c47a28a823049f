"""Annealed importance sampling (AIS) of log Z, forward and reverse, with tensorflow-probability.

Forward AIS (Neal, 2001) anneals from a normalised Gaussian base p_0 to the unnormalised target f along
the path log pi_beta = (1 - beta) log p_0 + beta log f, beta = 1/T, ..., 1 (TFP's linear schedule), with one
HMC transition per temperature. Its log-weights w_n give

    log Z_fwd = log (1/N) sum_n exp(w_n),    E[log Z_fwd] <= log Z          (Jensen: a stochastic lower bound).

Reverse AIS starts from samples of the target and anneals back to the base; its weights estimate
Z_0 / Z = 1 / Z, so

    log Z_rev = -log (1/N) sum_n exp(w_n),   E[log Z_rev] >= log Z          (a stochastic upper bound)

when the starting samples are exact (Grosse, Ghahramani and Adams, "Sandwiching the marginal likelihood
using bidirectional Monte Carlo", 2015). When the two agree, AIS has converged; a gap says by how much
it may be off, and that more steps are needed. The Monte Carlo standard error of log Z_fwd is the delta
method's std(exp(w)) / (sqrt(N) mean(exp(w))), computed from weights shifted by their maximum (no
overflow).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from energy_models.evaluation.mcmc_health import (
    NUM_PROJECTIONS,
    TRACE_LENGTH,
    chain_diagnostics,
    importance_ess,
    projection_directions,
    trace_summaries,
)
from energy_models.sampling import use_exact_float32


@dataclasses.dataclass
class AISEstimate:
    """log Z with its standard error, the per-chain log-weights, the mean HMC acceptance, the weights'
    effective sample size (Kish's, `mcmc_health.importance_ess`: how many chains the estimate rests on)
    and, for forward AIS with `trace=True`, the split R-hat and ESS of its chains after the last
    temperature (`final_chain_diagnostics`; NaN when not traced)."""

    log_z: float
    stderr: float
    log_weights: np.ndarray
    acceptance: float
    ess: float = float("nan")
    rhat_max: float = float("nan")
    chain_ess_min: float = float("nan")


# `final_chain_diagnostics`: NUTS warm-up transitions, transitions between records and the largest tree
# (2^6 - 1 = 63 leapfrog steps). Whitened by the base, NUTS needs few leapfrog steps a transition, so the
# check costs a fraction of forward AIS itself. Records are 4 transitions apart because 2 apart put
# well-sampled chains near or over the R-hat threshold (BENCHMARKS.md, "energy_models/evaluation/ais.py:
# the chain check and no XLA").
AIS_TRACE_WARMUP = 20
AIS_TRACE_THIN = 4
AIS_TRACE_TREE_DEPTH = 6


def _log_mean_exp_and_stderr(log_weights):
    w = np.asarray(log_weights, np.float64)
    w = w[np.isfinite(w)]
    if w.size == 0:
        return float("nan"), float("nan")
    shift = w.max()
    # exp(w - max) <= 1: the mean and std are computed without overflow.
    scaled = np.exp(w - shift)
    mean = scaled.mean()
    stderr = scaled.std(ddof=1) / (np.sqrt(w.size) * mean) if w.size > 1 else float("inf")
    return float(shift + np.log(mean)), float(stderr)


def _refreshed_kernel_class():
    import tensorflow_probability as tfp

    class RefreshedKernel(tfp.mcmc.TransitionKernel):
        """Re-evaluates the current state's log density before each step of the wrapped kernel.

        `sample_annealed_importance_chain` builds a new kernel for every temperature but passes on the
        previous step's kernel results, whose cached target_log_prob (and gradient) belong to the
        previous temperature. HMC then compares a proposal at beta_k with the current state at beta_(k-1):
        the Metropolis ratio is off by (beta_k - beta_(k-1)) (log f - log p_0), which is tens of nats for a
        784-dimensional model with few steps, and a chain that rejects once never accepts again (TFP
        issue #1429). Refreshing both values makes every transition leave pi_beta_k invariant, as AIS needs.
        """

        def __init__(self, inner_kernel, target_log_prob_fn):
            self._inner = inner_kernel
            self._fn = target_log_prob_fn
            self._parameters = dict(inner_kernel=inner_kernel, target_log_prob_fn=target_log_prob_fn)

        @property
        def inner_kernel(self):
            return self._inner

        @property
        def parameters(self):
            return self._parameters

        @property
        def is_calibrated(self):
            return self._inner.is_calibrated

        def bootstrap_results(self, init_state):
            return self._inner.bootstrap_results(init_state)

        def one_step(self, current_state, previous_kernel_results, seed=None):
            log_prob, grad = tfp.math.value_and_gradient(self._fn, current_state)
            adaptation = previous_kernel_results  # SimpleStepSizeAdaptationResults
            mh = adaptation.inner_results
            accepted = mh.accepted_results._replace(target_log_prob=log_prob,
                                                    grads_target_log_prob=[grad])
            refreshed = adaptation._replace(inner_results=mh._replace(accepted_results=accepted))
            return self._inner.one_step(current_state, refreshed, seed=seed)

    return RefreshedKernel


def _run_chain(proposal_log_prob_fn, target_log_prob_fn, initial_state, num_steps, step_size,
               leapfrog_steps, seed):
    import tensorflow_probability as tfp  # Imported on use: TFP pulls in tf_keras.

    refreshed = _refreshed_kernel_class()
    use_exact_float32()  # Log-weights sum one log-density difference per temperature (exact_float32).

    def make_kernel(log_prob_fn):
        hmc = tfp.mcmc.HamiltonianMonteCarlo(log_prob_fn, step_size=step_size,
                                             num_leapfrog_steps=leapfrog_steps)
        # The step size adapts towards 65% acceptance as the temperature changes.
        adaptive = tfp.mcmc.SimpleStepSizeAdaptation(hmc, num_adaptation_steps=num_steps,
                                                     target_accept_prob=0.65)
        return refreshed(adaptive, log_prob_fn)

    # Not XLA-compiled: XLA's CPU triangular solve (the base's log_prob) compiles slowly and runs slower
    # than TensorFlow's kernel (BENCHMARKS.md, "energy_models/evaluation/ais.py: the chain check and no XLA").
    @tf.function
    def run(state, seed):
        final, log_weights, results = tfp.mcmc.sample_annealed_importance_chain(
            num_steps=num_steps, proposal_log_prob_fn=proposal_log_prob_fn,
            target_log_prob_fn=target_log_prob_fn, current_state=state, make_kernel_fn=make_kernel,
            seed=seed)
        mh = results.inner_results.inner_results
        accept = tf.reduce_mean(tf.minimum(1.0, tf.exp(mh.log_accept_ratio)))
        return log_weights, accept, final

    return run(initial_state, tf.constant(seed, tf.int32))


def final_chain_diagnostics(target_log_prob_fn, final_state, base, seed, length=TRACE_LENGTH,
                            thin=AIS_TRACE_THIN, warmup=AIS_TRACE_WARMUP, max_tree_depth=AIS_TRACE_TREE_DEPTH):
    """Split R-hat and ESS (`mcmc_health.chain_diagnostics`) of forward AIS's chains after the last
    temperature: from their end states, `warmup` No-U-Turn transitions at the target (step size adapted by
    dual averaging), then `length` records `thin` transitions apart of log p~(x) and NUM_PROJECTIONS fixed random
    projections of x.

    NUTS runs in the coordinates that whiten `base` (x = loc + L y, `base` = N(loc, L L^T)), where a model
    close to its base is close to N(0, I): in pixel coordinates the deep energy model's stiffest direction
    sets a step so small that the check's transitions do not move along its widest ones, and R-hat stays far
    above 1 for chains that sample it well (BENCHMARKS.md, "Issue 17: MCMC health, image mosaics, exact MLE
    on large patches"). Chains that the annealing split between modes the sampler cannot
    cross keep disagreeing; R-hat above RHAT_THRESHOLD says so, and that the AIS weights rest on how many
    chains reached each mode. Too few temperatures in one mode shows in the forward/reverse gap instead.
    """
    import tensorflow_probability as tfp

    use_exact_float32()
    rng = np.random.default_rng(list(seed))
    directions = projection_directions(int(final_state.shape[-1]), rng)
    scale = getattr(base, "scale", None)  # a base without loc and scale: pixel coordinates
    whitening = (tfp.bijectors.Shift(base.loc)(tfp.bijectors.ScaleMatvecLinearOperator(scale))
                 if scale is not None else tfp.bijectors.Identity())
    nuts = tfp.mcmc.NoUTurnSampler(target_log_prob_fn, step_size=0.1, max_tree_depth=max_tree_depth)
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.TransformedTransitionKernel(nuts, whitening), num_adaptation_steps=warmup)

    @tf.function
    def run(state, seed):
        return tfp.mcmc.sample_chain(
            num_results=length, current_state=state, kernel=kernel, num_burnin_steps=warmup,
            num_steps_between_results=thin - 1, trace_fn=None, seed=seed)

    states = run(final_state, tf.constant(rng.integers(0, 2 ** 31 - 1, size=2), tf.int32))
    flat = tf.reshape(states, [-1, states.shape[-1]])
    summaries = trace_summaries(target_log_prob_fn(flat), flat, directions)
    return chain_diagnostics(tf.reshape(summaries, [length, -1, 1 + NUM_PROJECTIONS]).numpy())


def base_gaussian(loc, covariance):
    """A `tfp` MultivariateNormalTriL base from a mean and a covariance (float32)."""
    import tensorflow_probability as tfp

    chol = np.linalg.cholesky(np.asarray(covariance, np.float64))
    return tfp.distributions.MultivariateNormalTriL(loc=tf.constant(loc, tf.float32),
                                                    scale_tril=tf.constant(chol, tf.float32))


def forward_ais(target_log_prob_fn, base, num_steps=1000, num_chains=64, step_size=0.01,
                leapfrog_steps=5, seed=(0, 0), trace=False):
    """Forward AIS from the normalised `base` to `target_log_prob_fn`: a stochastic lower bound on log Z.

    Args:
      target_log_prob_fn: x [n, D] -> unnormalised log density [n] (a TF-traceable function).
      base: a normalised tfp distribution over [D] (e.g. `base_gaussian`).
      num_steps: number of temperatures (one HMC transition each).
      num_chains: independent chains N.
      step_size, leapfrog_steps: HMC settings (the step size adapts towards 65% acceptance).
      seed: stateless seed pair.
      trace: also run `final_chain_diagnostics` (60 more NUTS transitions, whitened by `base`).

    Returns:
      An `AISEstimate`.
    """
    x0 = base.sample(num_chains, seed=tf.constant(seed, tf.int32))
    log_weights, accept, final = _run_chain(base.log_prob, target_log_prob_fn, x0, num_steps, step_size,
                                            leapfrog_steps, [seed[0], seed[1] + 1])
    log_z, stderr = _log_mean_exp_and_stderr(log_weights.numpy())
    estimate = AISEstimate(log_z, stderr, log_weights.numpy(), float(accept), importance_ess(log_weights.numpy()))
    if trace:
        health = final_chain_diagnostics(target_log_prob_fn, final, base, (seed[0], seed[1] + 2))
        estimate.rhat_max, estimate.chain_ess_min = health["rhat_max"], health["ess_min"]
    return estimate


def reverse_ais(target_log_prob_fn, base, target_samples, num_steps=1000, step_size=0.01,
                leapfrog_steps=5, seed=(0, 0)):
    """Reverse AIS from samples of the target back to `base`: a stochastic upper bound on log Z.

    The bound holds when `target_samples` are exact; approximate (MCMC) samples make it an estimate.
    """
    log_weights, accept, _ = _run_chain(target_log_prob_fn, base.log_prob,
                                        tf.constant(target_samples, tf.float32), num_steps, step_size,
                                        leapfrog_steps, list(seed))
    log_inv_z, stderr = _log_mean_exp_and_stderr(log_weights.numpy())
    return AISEstimate(-log_inv_z, stderr, log_weights.numpy(), float(accept), importance_ess(log_weights.numpy()))
