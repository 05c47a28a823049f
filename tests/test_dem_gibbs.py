"""The block Gibbs sampler of the deep energy model (`energy_models.dem.gibbs`) and its noise
(`energy_models.sampling`): latents, moments on a Gaussian, equality with tfp's kernels, step-size adaptation."""


import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem import gibbs as dem_gibbs
from energy_models.dem.contrastive_divergence import ContrastiveDivergence
from energy_models.dem.energy import DEMEnergy, sample_latents, sigmoid
from tests.test_dem_energy import _layer


def test_gibbs_latents_have_frequency_s_of_logits():
    layer = _layer()
    x = np.random.default_rng(3).normal(size=(1, 12))
    logits = layer.latent_logits(np.repeat(x, 40_000, axis=0))
    z = sample_latents(tf.cast(logits, tf.float32), tf.constant([7, 1])).numpy()
    p = sigmoid(logits[0]).numpy()
    # Binomial standard error; 5 of them keeps the false-alarm rate negligible.
    np.testing.assert_array_less(np.abs(z.mean(0) - p), 5 * np.sqrt(p * (1 - p) / 40_000) + 1e-9)
    assert set(np.unique(z)) <= {0.0, 1.0}


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_negative_phase_samples_gaussian_when_V_is_zero(method):
    # With V = 0, g = s(0) = 1/2 for every x, so log p~ = -||x||^2/(2 sigma^2) + b^T x + const:
    # the model is N(sigma^2 b, sigma^2 I), whatever W and c are.
    dim, sigma, n = 16, 0.5, 4000
    energy = DEMEnergy(6, 5, sigma)
    model = ContrastiveDivergence(energy, dim=dim, mcmc=method, mcmc_steps=1, step_size=0.1, seed=3)
    energy.V.assign(np.zeros((6, dim)))
    b = np.linspace(-2, 2, dim).astype(np.float32)
    energy.b.assign(b)
    start = np.zeros((n, dim), np.float32)  # far from the mean sigma^2 b in most coordinates
    samples = model.sample(start, 150, seed=11, step_size=0.2 * sigma ** 2)
    # Independent chains give independent final states: mean error ~ sigma / sqrt(n),
    # variance error ~ sigma^2 sqrt(2 / n) per coordinate.
    np.testing.assert_array_less(np.abs(samples.mean(0) - sigma ** 2 * b), 5 * sigma / np.sqrt(n))
    np.testing.assert_array_less(np.abs(samples.var(0) - sigma ** 2), 5 * sigma ** 2 * np.sqrt(2 / n))


def test_standard_normal_noise_has_normal_moments_and_is_a_function_of_the_seed():
    from scipy import stats

    from energy_models.sampling import standard_normal

    z = standard_normal([10, 256, 784], tf.constant([5, 9])).numpy()
    n = z.size
    flat = z.ravel().astype(np.float64)
    # Standard errors: mean 1/sqrt(n), variance sqrt(2/n), fourth moment sqrt(96/n); 5 of each.
    assert abs(flat.mean()) < 5 / np.sqrt(n)
    assert abs(flat.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(flat ** 4) - 3) < 5 * np.sqrt(96 / n)
    assert stats.kstest(flat[:200_000], "norm").pvalue > 1e-3
    # The cos and sin halves of each Box-Muller pair are uncorrelated.
    half = n // 2
    assert abs(np.corrcoef(flat[:half], flat[half:])[0, 1]) < 5 / np.sqrt(half)
    np.testing.assert_array_equal(standard_normal([10, 256, 784], tf.constant([5, 9])).numpy(), z)
    assert not np.allclose(standard_normal([10, 256, 784], tf.constant([5, 10])).numpy(), z)
    assert standard_normal([3, 5], tf.constant([1, 2])).shape == (3, 5)


def _float32_layer_and_states(n):
    """A float32 layer with _layer's bias-free weights (tfp's kernels draw float32 noise) and n states."""
    layer = DEMEnergy(5, 4, 0.7)
    layer.build((None, 12))
    for weight, value in zip(layer.weights, _layer(use_bias=False, seed=4).weights):
        weight.assign(np.asarray(value, np.float32))
    return layer, tf.constant(np.random.default_rng(5).normal(size=(n, 12)), tf.float32)


def test_langevin_sweep_is_tfp_uncalibrated_langevin():
    # Without noise, a Langevin sweep draws z and then makes exactly tfp.mcmc.UncalibratedLangevin's move.
    import tensorflow_probability as tfp

    layer, x = _float32_layer_and_states(7)
    seed, eta = tf.constant([3, 8]), tf.constant(0.05)
    swept, accept = dem_gibbs.gibbs_sweep(x, eta, seed, layer.latent_logits, layer.joint, "langevin")
    z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    z = sample_latents(layer.latent_logits(x), z_seed)
    kernel = tfp.mcmc.UncalibratedLangevin(lambda state: layer.joint(state, z), eta, compute_acceptance=False)
    expected, _ = kernel.one_step(x, kernel.bootstrap_results(x), seed=x_seed)
    np.testing.assert_allclose(swept.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(accept.numpy(), np.ones(7))
    # The move with given noise: x + (eta / 2) grad f + sqrt(eta) eps.
    eps = tf.constant(np.random.default_rng(6).normal(size=(7, 12)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = layer.joint(x, z)
    moved = dem_gibbs.langevin_move(x, lambda state: layer.joint(state, z), eta, eps)
    np.testing.assert_allclose(moved.numpy(), (x + 0.025 * tape.gradient(f, x) + np.sqrt(0.05) * eps).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_mala_sweep_is_tfp_mala():
    # Without noise, a MALA sweep draws z and then makes exactly tfp's MALA move; the acceptance
    # probability is min(1, exp(tfp's log accept ratio)).
    import tensorflow_probability as tfp

    layer, x = _float32_layer_and_states(400)
    for eta in (0.05, 0.6):  # nearly all accepted, about half
        seed, step = tf.constant([3, 8]), tf.constant(eta)
        swept, accept = dem_gibbs.gibbs_sweep(x, step, seed, layer.latent_logits, layer.joint, "mala")
        z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        z = sample_latents(layer.latent_logits(x), z_seed)
        kernel = tfp.mcmc.MetropolisAdjustedLangevinAlgorithm(lambda state: layer.joint(state, z), step)
        expected, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=x_seed)
        np.testing.assert_allclose(swept.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
        expected_accept = np.exp(np.minimum(results.log_accept_ratio.numpy(), 0.0))
        np.testing.assert_allclose(accept.numpy(), expected_accept, atol=1e-4)
        if eta == 0.6:  # rejections happen, so the accept/reject decision was compared too
            assert 0.05 < np.any(swept.numpy() != x.numpy(), axis=1).mean() < 0.95


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_training_noise_path_samples_the_gaussian_when_V_is_zero(method):
    # The trainer's path (noise drawn by normal_noise and passed in) on the Gaussian N(mu, sigma^2 I),
    # mu = sigma^2 b. Langevin: x' - mu = (1 - a)(x - mu) + sqrt(eta) eps with a = eta / (2 sigma^2), whose
    # stationary law is N(mu, sigma^2 / (1 - eta / (4 sigma^2)) I) (its bias, known exactly); MALA's is
    # the target itself.
    from energy_models.sampling import standard_normal

    dim, sigma, n, eta = 16, 0.5, 4000, 0.1
    energy = DEMEnergy(6, 5, sigma)
    model = ContrastiveDivergence(energy, dim=dim, mcmc=method, mcmc_steps=10, step_size=eta, seed=3)
    energy.V.assign(np.zeros((6, dim)))
    b = np.linspace(-2, 2, dim).astype(np.float32)
    energy.b.assign(b)
    x = tf.zeros((n, dim))
    for step in range(8):  # 80 sweeps; for Langevin (1 - a)^80 = 1e-4 of the start's distance remains
        seed = tf.constant([step, 1])
        x, _, _ = model.negative_phase(x, seed, tf.constant(eta), 0.0, standard_normal([10, n, dim], seed))
    samples = x.numpy()
    variance = sigma ** 2 / (1 - eta / (4 * sigma ** 2)) if method == "langevin" else sigma ** 2
    np.testing.assert_array_less(np.abs(samples.mean(0) - sigma ** 2 * b), 5 * np.sqrt(variance / n))
    np.testing.assert_array_less(np.abs(samples.var(0) - variance), 5 * variance * np.sqrt(2 / n))


def test_mcmc_and_ais_switch_tensor_float_32_off():
    from energy_models.evaluation import ais

    energy = DEMEnergy(3, 2, 1.0)
    energy.build((None, 4))
    try:
        tf.config.experimental.enable_tensor_float_32_execution(True)
        dem_gibbs.run_chains(tf.zeros((2, 4)), 0.1, tf.constant([0, 1]), 1, energy.latent_logits, energy.joint, "mala")
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(True)
        base = ais.base_gaussian(np.zeros(4), np.eye(4))
        ais.forward_ais(lambda x: -0.5 * tf.reduce_sum(x * x, axis=-1), base, num_steps=2, num_chains=2)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(False)


def test_step_size_adaptation_moves_towards_target():
    eta = tf.constant(0.1)
    assert dem_gibbs.adapt_step_size(eta, tf.constant([0.9, 0.8]), 0.574, 0.01).numpy() == pytest.approx(0.101)
    assert dem_gibbs.adapt_step_size(eta, tf.constant([0.1]), 0.574, 0.01).numpy() == pytest.approx(0.1 / 1.01)
