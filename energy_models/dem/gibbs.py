"""Block Gibbs sweeps for the deep energy model: z ~ p(z | x) exactly, then an MCMC move of x given z.

One sweep from x_t:

    z_t     ~ p(z | x_t) = prod_k Bernoulli(s(w_k^T g(x_t) + c_k)),
    x_{t+1} ~ K_z(x_t, .),  a tensorflow-probability kernel whose invariant density is
              p(x | z_t) ∝ exp f(x, z_t) = exp(-||x||^2 / (2 sigma^2) + b^T x + z_t^T W g(x)).

Both moves leave p(x, z) invariant, so the x-marginal of the chain converges to p(x). x given z is not
Gaussian (g(x) = s(V x) is non-linear), hence a gradient-based move:

    langevin  x' = x + (eta / 2) grad f + sqrt(eta) eps, eps ~ N(0, I), no accept/reject (biased for
              finite eta; every proposal is accepted, acceptance reported 1). This is the move of
              tfp.mcmc.UncalibratedLangevin, written out (`langevin_move`) so that the caller can pass
              eps in: the trainer draws the noise of all its sweeps at once, outside XLA and a step
              ahead, beside the compiled update (`normal_noise`). Without eps it draws exactly what
              tfp's kernel draws from the same seed, and gives the kernel's x' (tested);
    mala      tfp.mcmc.MetropolisAdjustedLangevinAlgorithm: the same proposal, Metropolis-corrected,
              also written out (`mala_move`, equal to tfp's kernel for its own draws, tested) so that
              the trainer can pass eps in;
    hmc       tfp.mcmc.HamiltonianMonteCarlo with `leapfrog_steps` leapfrog steps of size eta.

eta is `step_size` (for Langevin and MALA it is the variance of the injected noise, tfp's convention).
Where the kernel accepts or rejects, eta is adapted after every sweep towards a target acceptance rate,
the rule of tfp.mcmc.SimpleStepSizeAdaptation applied per sweep (the kernel is rebuilt each sweep because
its target changes with z):

    eta <- eta * (1 + rate)  if mean acceptance probability > target,  eta / (1 + rate) otherwise.

The callers pass the model's tensor functions (`energy_models.dem.energy`), so the Keras model
and the exported `tf.Module` run the same sweep. Sweeps are unrolled in Python by the trainer: under XLA
the matrix product V x of a proposal is then shared with the next sweep's draw of z, and gradients that
are never used (the uncalibrated kernel's at its proposal) are removed as dead code.

References: Roberts and Tweedie, "Exponential convergence of Langevin distributions and their discrete
approximations", Bernoulli (1996); Neal, "MCMC using Hamiltonian dynamics" (2011); Hinton, "Training
products of experts by minimizing contrastive divergence", Neural Computation (2002).
"""

import tensorflow as tf

from energy_models import sampling as exact_float32
from energy_models.dem.energy import row_sum, sample_latents

METHODS = ("langevin", "mala", "hmc")
# The moves that take their Gaussian noise as an argument (`langevin_move`, `mala_move`).
NOISE_METHODS = ("langevin", "mala")
# Optimal acceptance rates in high dimension: MALA 0.574 (Roberts and Rosenthal, 1998), HMC 0.651
# (Beskos et al., 2013).
TARGET_ACCEPTANCE = {"mala": 0.574, "hmc": 0.651}


def _value_and_grad(target_log_prob_fn, x):
    """(log pi(x) [n], grad_x log pi(x) [n, D]). The gradient of the sum over rows is every row's own
    gradient: rows are independent chains."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = target_log_prob_fn(x)
    return value, tape.gradient(value, x)


def _langevin_proposal(x, grad, step_size, noise):
    """x + (eta / 2) grad log pi(x) + sqrt(eta) eps."""
    return x + 0.5 * step_size * grad + tf.sqrt(step_size) * noise


def _acceptance(log_ratio):
    """min(1, exp(log r)) [n]; 0 where log r is NaN or -inf (a proposal into overflow is a rejection, as
    in tfp's Metropolis-Hastings)."""
    return tf.where(tf.math.is_finite(log_ratio), tf.exp(tf.minimum(log_ratio, 0.0)), tf.zeros_like(log_ratio))


def langevin_move(x, target_log_prob_fn, step_size, noise):
    """x' = x + (eta / 2) grad log pi(x) + sqrt(eta) eps for eps = `noise` ~ N(0, I) [n, D]: the
    proposal of tfp.mcmc.UncalibratedLangevin (volatility 1), i.e. Euler-Maruyama for the Langevin
    diffusion dx = (1/2) grad log pi(x) dt + dB_t over a time step eta."""
    _, grad = _value_and_grad(target_log_prob_fn, x)
    return _langevin_proposal(x, grad, step_size, noise)


def tfp_langevin_noise(x, seed):
    """The N(0, I) draw tfp.mcmc.UncalibratedLangevin.one_step(x, ..., seed) makes for a single-part state."""
    import tensorflow_probability as tfp

    part_seed = tfp.random.split_seed(seed, n=1, salt="langevin.one_step")[0]
    return tf.random.stateless_normal(tf.shape(x), seed=part_seed, dtype=x.dtype)


def mala_move(x, target_log_prob_fn, step_size, noise, uniform):
    """One Metropolis-adjusted Langevin move per row of x [n, D], with its randomness given:

        x*  = x + (eta / 2) grad log pi(x) + sqrt(eta) eps,                       eps = `noise`,
        log r = log pi(x*) - log pi(x) + log q(x | x*) - log q(x* | x),
        q(b | a) = N(b; a + (eta / 2) grad log pi(a), eta I),  so  log q(x* | x) = -||eps||^2 / 2 + const,
        x' = x* if U < r else x,                                                   U = `uniform` [n].

    This is tfp.mcmc.MetropolisAdjustedLangevinAlgorithm's move (MetropolisHastings around
    UncalibratedLangevin, volatility 1). Returns (x', min(1, r) [n], 0 where log r is not finite).
    """
    log_p, grad = _value_and_grad(target_log_prob_fn, x)
    proposal = _langevin_proposal(x, grad, step_size, noise)
    log_p_proposal, grad_proposal = _value_and_grad(target_log_prob_fn, proposal)
    backward = x - proposal - 0.5 * step_size * grad_proposal
    log_ratio = (log_p_proposal - log_p - 0.5 * row_sum(tf.square(backward)) / step_size
                 + 0.5 * row_sum(tf.square(noise)))
    accepted = tf.logical_and(tf.math.is_finite(log_ratio), tf.math.log(uniform) < log_ratio)
    x_new = tf.where(accepted[:, None], proposal, x)
    return x_new, _acceptance(log_ratio)


def tfp_mala_draws(x, seed):
    """(eps [n, D], U [n]): the draws tfp.mcmc.MetropolisAdjustedLangevinAlgorithm.one_step(x, ..., seed)
    makes for a single-part state (MetropolisHastings splits the seed into the proposal's and U's)."""
    import tensorflow_probability as tfp

    proposal_seed, acceptance_seed = tf.unstack(tfp.random.split_seed(seed))
    uniform = tf.random.stateless_uniform(tf.shape(x)[:1], seed=acceptance_seed, dtype=x.dtype)
    return tfp_langevin_noise(x, proposal_seed), uniform


def gibbs_sweep(x, step_size, seed, logits_fn, joint_fn, method, leapfrog_steps=5, noise=None):
    """One sweep z ~ p(z | x), x' ~ K_z(x, .).

    Args:
        x: current states [n, D].
        step_size: eta, scalar tensor.
        seed: stateless seed [2] int32; split into one seed for z and one for the kernel.
        logits_fn: x -> w_k^T g(x) + c_k [n, K].
        joint_fn: (x, z) -> f(x, z) [n].
        method: "langevin", "mala" or "hmc".
        leapfrog_steps: HMC only.
        noise: Langevin and MALA: eps [n, D] of the x-move; None draws tfp's kernel's eps (and, for
            MALA, its U) from the seed. Given eps, MALA draws U from the seed itself.

    Returns:
        (x' [n, D], acceptance probability min(1, exp(log accept ratio)) [n]; ones for Langevin).
    """
    z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    z = sample_latents(logits_fn(x), z_seed)
    target = lambda state: joint_fn(state, z)  # noqa: E731
    if method == "langevin":
        noise = tfp_langevin_noise(x, x_seed) if noise is None else noise
        x_new = langevin_move(x, target, tf.cast(step_size, x.dtype), noise)
        return x_new, tf.ones(tf.shape(x)[:1], x.dtype)
    if method == "mala":
        if noise is None:
            noise, uniform = tfp_mala_draws(x, x_seed)
        else:
            uniform = tf.random.stateless_uniform(tf.shape(x)[:1], seed=x_seed, dtype=x.dtype)
        return mala_move(x, target, tf.cast(step_size, x.dtype), noise, uniform)
    if method != "hmc":
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    import tensorflow_probability as tfp

    kernel = tfp.mcmc.HamiltonianMonteCarlo(target, step_size, num_leapfrog_steps=leapfrog_steps)
    x_new, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=x_seed)
    return x_new, tf.cast(_acceptance(results.log_accept_ratio), x.dtype)


def adapt_step_size(step_size, acceptance, target, rate):
    """eta * (1 + rate) if mean(acceptance) > target else eta / (1 + rate) (SimpleStepSizeAdaptation)."""
    factor = tf.where(tf.reduce_mean(acceptance) > target, 1.0 + rate, 1.0 / (1.0 + rate))
    return step_size * tf.cast(factor, step_size.dtype)


def run_chains(x, step_size, seed, num_sweeps, logits_fn, joint_fn, method, leapfrog_steps=5,
               adapt_rate=0.0, target_acceptance=None, unroll=True, noise=None):
    """`num_sweeps` Gibbs sweeps from x, adapting eta per sweep when the kernel has an acceptance.

    Args:
        x, step_size, logits_fn, joint_fn, method, leapfrog_steps: as for `gibbs_sweep`.
        seed: stateless seed [2]; sweep t uses the t-th of `num_sweeps` split seeds.
        num_sweeps: Python int (unrolled) or, with unroll=False, a scalar tensor (tf.while_loop).
        adapt_rate: rate of the step-size rule (0 keeps eta fixed; Langevin never adapts).
        target_acceptance: defaults to TARGET_ACCEPTANCE[method].
        unroll: Python loop (short chains in training; lets XLA share work between sweeps) or
            tf.while_loop (long chains when sampling).
        noise: Langevin or MALA with unroll only: eps of every sweep [num_sweeps, n, D] (None: drawn
            per sweep).

    Returns:
        (x after the sweeps, mean acceptance probability over sweeps and chains, final eta).
    """
    exact_float32.use_exact_float32()  # Runs when traced, before any sweep executes.
    adapt = adapt_rate > 0 and method in TARGET_ACCEPTANCE
    target = TARGET_ACCEPTANCE.get(method, 1.0) if target_acceptance is None else target_acceptance
    step_size = tf.convert_to_tensor(step_size, x.dtype)

    def body(t, x, eta, accept_sum, seeds):
        eps = None if noise is None else noise[t]
        x, accept = gibbs_sweep(x, eta, seeds[t], logits_fn, joint_fn, method, leapfrog_steps, eps)
        if adapt:
            eta = adapt_step_size(eta, accept, target, adapt_rate)
        return t + 1, x, eta, accept_sum + tf.reduce_mean(accept), seeds

    if noise is not None and (not unroll or method not in NOISE_METHODS):
        raise ValueError("noise is only taken by unrolled Langevin and MALA sweeps")
    if unroll:
        seeds = tf.random.experimental.stateless_split(seed, num_sweeps)
        state = (0, x, step_size, tf.zeros([], x.dtype), seeds)
        for _ in range(num_sweeps):
            state = body(*state)
    else:
        seeds = tf.random.experimental.stateless_split(seed, tf.maximum(num_sweeps, 1))
        state = tf.while_loop(lambda t, *_: t < num_sweeps, body,
                              (tf.constant(0), x, step_size, tf.zeros([], x.dtype), seeds))
    _, x, eta, accept_sum, _ = state
    return x, accept_sum / tf.cast(tf.maximum(num_sweeps, 1), x.dtype), eta
