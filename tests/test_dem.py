"""Tests for the deep energy model: S and s, the energy layer, Gibbs latents, MCMC, CD training, export."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from energy_models.errors import UserError
from energy_models.estimators.contrastive_divergence import ContrastiveDivergence
from energy_models.experiments import dem
from energy_models.layers.dem_energy import DEMEnergy, sample_latents, sigmoid, softplus
from energy_models.samplers import dem_gibbs
from train import _cli
from train import dem as dem_cli


def test_softplus_and_sigmoid_exact_values_and_extremes():
    u = tf.constant([-1e4, -2.0, 0.0, 1.0, 1e4], tf.float64)
    u_np = np.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(softplus(u).numpy()[1:4], np.log1p(np.exp(u_np)), rtol=1e-12)
    np.testing.assert_allclose(sigmoid(u).numpy()[1:4], 1 / (1 + np.exp(-u_np)), rtol=1e-12)
    assert softplus(u).numpy()[0] == 0.0 and softplus(u).numpy()[4] == 1e4
    assert sigmoid(u).numpy()[0] == 0.0 and sigmoid(u).numpy()[4] == 1.0
    for dtype in (tf.float32, tf.float64):
        x = tf.constant([-1e4, 0.0, 1e4], dtype)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            s_values, big_s = sigmoid(x), softplus(x)
        grad_s, grad_big_s = tape.gradient(s_values, x).numpy(), tape.gradient(big_s, x).numpy()
        assert np.all(np.isfinite(big_s.numpy())) and np.all(np.isfinite(s_values.numpy()))
        np.testing.assert_allclose(grad_big_s, [0.0, 0.5, 1.0])  # S'(u) = s(u)
        np.testing.assert_allclose(grad_s, [0.0, 0.25, 0.0])  # s'(u) = s(u)(1 - s(u))


def _layer(dim=12, hidden=5, latents=4, sigma=0.7, use_bias=True, seed=0):
    layer = DEMEnergy(hidden, latents, sigma, use_bias=use_bias, dtype="float64")
    layer.build((None, dim))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape))
    return layer


def _numpy_log_p(layer, x):
    V, W, b, c = (np.asarray(w, np.float64) for w in (layer.V, layer.W, layer.b, layer.c))
    d = 0.0 if layer.d is None else np.asarray(layer.d, np.float64)
    g = 1 / (1 + np.exp(-(x @ V.T + d)))
    a = g @ W.T + c
    return -np.sum(x ** 2, 1) / (2 * layer.sigma ** 2) + x @ b + np.sum(np.logaddexp(0, a), 1)


def test_layer_log_p_matches_numpy_and_config_round_trips():
    layer = _layer()
    x = np.random.default_rng(1).normal(size=(9, 12))
    np.testing.assert_allclose(layer(x).numpy(), _numpy_log_p(layer, x), rtol=1e-12)
    # Summing z out of exp f: log p~(x) = log sum_z exp f(x, z), checked by brute force over {0,1}^4.
    zs = np.array(np.meshgrid(*[[0, 1]] * 4)).reshape(4, -1).T.astype(np.float64)
    joint = np.stack([layer.joint(x, np.tile(z, (9, 1))).numpy() for z in zs])
    np.testing.assert_allclose(np.logaddexp.reduce(joint, axis=0), layer(x).numpy(), rtol=1e-10)
    clone = DEMEnergy.from_config(layer.get_config())
    assert (clone.hidden, clone.latents, clone.sigma, clone.use_bias) == (5, 4, 0.7, True)
    with pytest.raises(ValueError, match="sigma must be a positive finite number, got sigma=0"):
        DEMEnergy(sigma=0)


def test_grad_x_log_p_matches_finite_differences():
    layer = _layer(use_bias=False)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 12)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_p = layer(x)
    grad = tape.gradient(log_p, x).numpy()
    h = 1e-6
    numeric = np.zeros_like(grad)
    for j in range(12):
        step = np.zeros((1, 12))
        step[0, j] = h
        numeric[:, j] = (_numpy_log_p(layer, x.numpy() + step) - _numpy_log_p(layer, x.numpy() - step)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


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

    from energy_models.samplers.normal_noise import standard_normal

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
    from energy_models.samplers.normal_noise import standard_normal

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


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_prefetched_noise_gives_the_steps_of_fresh_draws(method):
    # train_step uses the noise the previous step drew for it; a model that draws fresh noise every
    # step (its buffer tag reset before each step) must end with the same parameters.
    rng = np.random.default_rng(8)
    batches = [tf.constant(rng.random((32, 20), dtype=np.float32)) for _ in range(4)]
    import keras

    models = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        model = ContrastiveDivergence(DEMEnergy(5, 4, 1.0), dim=20, mcmc=method, mcmc_steps=3,
                                      step_size=0.05, persistent=True, num_chains=32, seed=2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
        models.append(model)
    prefetched, fresh = models
    assert prefetched.prefetches_noise and not prefetched.jit_compile  # the update alone is compiled
    step_a, step_b = tf.function(prefetched.train_step), tf.function(fresh.train_step)
    for batch in batches:
        step_a(batch)
        fresh._noise_step.assign(-1)
        step_b(batch)
    assert int(prefetched._noise_step.numpy()) == int(prefetched.seed_counter.numpy()) + 1
    np.testing.assert_allclose(prefetched._noise_buffer.numpy(),
                               prefetched._draw_noise(prefetched.seed_counter + 1, 32).numpy())
    for a, b in zip(prefetched.energy.weights, fresh.energy.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # The buffer is what the step uses: zeros in it (tag intact) change the next step.
    prefetched._noise_buffer.assign(tf.zeros_like(prefetched._noise_buffer))
    step_a(batches[0])
    fresh._noise_step.assign(-1)
    step_b(batches[0])
    assert not np.allclose(prefetched.energy.V.numpy(), fresh.energy.V.numpy(), rtol=1e-5, atol=1e-6)


def _forbid_host_noise(*args):
    raise AssertionError("the numpy noise path was used")


@pytest.mark.parametrize("gpu", [False, True])
def test_host_noise_feeds_the_step_only_without_a_gpu(monkeypatch, gpu):
    # On a GPU the numpy draw would be copied from the host every step: the sweeps draw on the device.
    import keras

    from energy_models.samplers import normal_noise

    monkeypatch.setattr(normal_noise, "host_noise_pays", lambda: not gpu)
    keras.utils.set_random_seed(1)
    model = ContrastiveDivergence(DEMEnergy(5, 4, 1.0), dim=20, mcmc="mala", mcmc_steps=3, step_size=0.05, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    assert model.prefetches_noise is (not gpu) and hasattr(model, "_noise_buffer") is (not gpu)
    monkeypatch.setattr(normal_noise, "standard_normal", _forbid_host_noise)
    before = model.energy.V.numpy().copy()
    batch = tf.constant(np.random.default_rng(0).random((32, 20), dtype=np.float32))
    if not gpu:
        with pytest.raises(Exception, match="numpy noise path"):
            model.train_on_batch(batch)
        return
    logs = model.train_on_batch(batch, return_dict=True)
    assert model.jit_compile and np.isfinite(logs["loss"]) and 0.0 < logs["acceptance"] <= 1.0
    assert not np.allclose(model.energy.V.numpy(), before)


def test_mcmc_and_ais_switch_tensor_float_32_off():
    from energy_models import ais

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dem")
    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS")
    config = dem.DEMConfig(images=photos, num_patches=2000, whiten="zca", method="cd", mcmc="langevin", mcmc_steps=3,
                           step_size=0.01, hidden=16, latents=16, epochs=2, batch_size=64,
                           learning_rate=3e-3, sample_sweeps=5, run_dir=str(root / "run"),
                           export_dir=str(root / "model"))
    return config, dem.train_and_evaluate(config)


def test_short_training_lowers_data_energy_below_negatives(trained):
    config, metrics = trained
    final = metrics["final"]
    assert final["energy_data"] < final["energy_negatives"]
    assert np.isfinite(metrics["heldout_log_prob_mean"]) and 0 <= metrics["auroc_vs_gaussian_samples"] <= 1
    assert 0 <= metrics["auroc_vs_full_gaussian_samples"] <= 1
    for name in ("config.json", "metrics.json", "patches.npz", "figures/filters.png", "figures/samples.png",
                 "checkpoints/epoch-000002.weights.h5"):
        assert os.path.exists(os.path.join(config.run_dir, name)), name


def test_mcmc_health_reaches_tensorboard_and_metrics(trained):
    # Persistent CD: the check starts at the persistent chains, after the last epoch (2 < --mcmc-health-every).
    config, metrics = trained
    assert metrics["mcmc_start"] == "persistent chains" and metrics["mcmc_chains"] == 64
    assert metrics["mcmc_rhat_max"] >= 1.0 and metrics["mcmc_ess_min"] > 0
    assert (metrics["mcmc_warning"] is None) == (metrics["mcmc_rhat_max"] <= 1.1)
    # Every epoch's images and Keras's epoch scalars are there too (2 epochs of 24 steps, update_freq 50).
    from tests.conftest import tensorboard_tags

    tags = tensorboard_tags(config.run_dir)
    for epoch in (1, 2):
        assert {("samples", epoch), ("filters_pixel", epoch), ("epoch_loss", epoch - 1)} <= tags, tags
    scalars = {}
    for path in (pathlib.Path(config.run_dir) / "eval").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("mcmc/"):
                    scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert set(scalars) == {("mcmc/rhat_max", 2), ("mcmc/ess_min", 2), ("mcmc/energy_gap", 2)}
    for name in ("rhat_max", "ess_min", "energy_gap"):
        assert scalars[(f"mcmc/{name}", 2)] == pytest.approx(metrics[f"mcmc_{name}"], rel=1e-5)


def test_export_loads_in_fresh_process_without_project(trained):
    config, metrics = trained
    from energy_models.data.patches import load_patch_set

    heldout = load_patch_set(os.path.join(config.run_dir, "patches.npz")).heldout
    module = tf.saved_model.load(config.export_dir)
    log_p = module.unnormalized_log_prob(heldout).numpy()
    assert np.mean(log_p) == pytest.approx(metrics["heldout_log_prob_mean"], rel=1e-4)
    assert np.all(np.isnan(module.log_prob(heldout[:3]).numpy()))
    assert module.sample(5, 1).shape == (5, 784) and module.filters().shape == (16, 784)
    assert json.loads(module.info().numpy())["kind"] == "deep_energy_model"
    np.save(os.path.join(config.run_dir, "x.npy"), heldout[:20])
    code = ("import numpy as np, tensorflow as tf, sys; m = tf.saved_model.load(sys.argv[1]); "
            "x = np.load(sys.argv[2]); print(repr(m.unnormalized_log_prob(x).numpy().tolist())); "
            "print(m.sample(4, 3).numpy().shape)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code, config.export_dir, os.path.join(config.run_dir, "x.npy")],
                         capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    np.testing.assert_allclose(eval(lines[-2]), log_p[:20], rtol=1e-5)
    assert lines[-1] == "(4, 784)"


def test_nce_training_on_real_patches_exports_a_normalised_model(tmp_path):
    """train.dem --method nce: the data beat the noise (accuracy above chance), log Z is learnt and the
    SavedModel's log_prob is its unnormalized_log_prob minus that log Z. With --g-bias, g's bias d is
    trained and exported."""
    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS")
    config = dem.DEMConfig(images=photos, num_patches=2000, whiten="gaussian", method="nce", nu=2,
                           hidden=16, latents=16, epochs=2, batch_size=64, learning_rate=1e-2, g_bias=True,
                           sample_sweeps=2, run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "model"))
    metrics = dem.train_and_evaluate(config)
    assert metrics["final"]["accuracy"] > 0.5 and np.isfinite(metrics["log_z"])
    d = tf.saved_model.load(config.export_dir)._d.numpy()  # Started at 0.
    assert d.shape == (16,) and np.min(np.abs(d)) > 1e-4
    assert metrics["final"]["log_z"] == pytest.approx(metrics["log_z"], abs=1.0)  # The epoch's mean.
    module = tf.saved_model.load(config.export_dir)
    info = json.loads(module.info().numpy())
    assert info["log_z"] == pytest.approx(metrics["log_z"]) and "NCE" in info["log_z_source"]
    x = np.random.default_rng(0).uniform(0, 1, size=(5, 784)).astype(np.float32)
    np.testing.assert_allclose(module.log_prob(x).numpy(),
                               module.unnormalized_log_prob(x).numpy() - metrics["log_z"], rtol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--sigma", "0"], "--sigma must be > 0"),
    (["--mcmc-steps", "0"], "--mcmc-steps must be a positive integer, got 0"),
    (["--steps-per-execution", "0"], "--steps-per-execution must be a positive integer, got 0"),
    (["--nu", "0"], "--nu must be a positive integer, got 0"),
    (["--step-size", "-1"], "--step-size must be > 0, got -1"),
    (["--learning-rate", "0"], "--learning-rate must be > 0"),
    (["--whiten-epsilon", "0"], "--whiten-epsilon must be > 0"),
])
def test_bad_flag_values_raise_user_error(flags, message):
    args = _cli.parser_for(dem.DEMConfig, "train.dem", "").parse_args(flags)
    with pytest.raises(UserError, match=message):
        dem.DEMConfig(**vars(args)).resolve()


def test_cli_prints_one_line_for_a_bad_patch_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    code = _cli.run_main(dem_cli.main, ["--patches", str(bad), "--run-dir", str(tmp_path / "run"),
                                        "--export-dir", str(tmp_path / "model")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not a patch file" in err


def test_resumed_training_ends_with_the_uninterrupted_parameters(trained, tmp_path):
    """The run folder as a kill after epoch 1's checkpoint leaves it (epoch 2's checkpoint and the outputs
    not yet written), re-run with the same flags: it resumes at epoch 1 and ends where the uninterrupted
    run ended (weights, Adam moments, persistent chains, step size, random-number counter)."""
    import dataclasses
    import shutil

    from tests.conftest import checkpoint_arrays

    config, metrics = trained
    run = tmp_path / "run"
    shutil.copytree(config.run_dir, run, ignore=shutil.ignore_patterns("x.npy"))
    (run / "checkpoints" / "epoch-000002.weights.h5").unlink()
    (run / "metrics.json").unlink()
    resumed = dem.train_and_evaluate(dataclasses.replace(config, run_dir=str(run),
                                                         export_dir=str(tmp_path / "model")))
    assert resumed["resumed_from_epoch"] == 1
    a = checkpoint_arrays(os.path.join(config.run_dir, "checkpoints", "epoch-000002.weights.h5"))
    b = checkpoint_arrays(run / "checkpoints" / "epoch-000002.weights.h5")
    assert len(a) > 10
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert resumed["heldout_log_prob_mean"] == pytest.approx(metrics["heldout_log_prob_mean"], rel=1e-5)


def test_training_that_diverges_stops_with_the_message_and_exports_nothing(tmp_path, capsys):
    root = tmp_path
    argv = ["--num-patches", "1200", "--method", "cd", "--mcmc", "langevin", "--mcmc-steps", "1", "--hidden", "8", "--latents", "8",
            "--epochs", "2", "--batch-size", "64", "--learning-rate", "1e30", "--optimizer", "sgd",
            "--sample-sweeps", "1", "--run-dir", str(root / "run"), "--export-dir", str(root / "model")]
    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS")
    if photos:
        argv += ["--images", photos]
    code = _cli.run_main(dem_cli.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: training diverged at epoch 1, step ")
    assert "try a smaller --learning-rate (now 1e+30) or --step-size (now 0.1), or more --mcmc-steps (now 1); " \
           "the last good state (from the start) is kept in" in err[0]
    assert (root / "run" / "checkpoints" / "epoch-000000.weights.h5").exists()
    assert not (root / "model").exists()


@pytest.mark.parametrize("whitened", [False, True])
def test_exported_score_equals_the_energy_formula(whitened):
    """The SavedModel's scoring expression (one product with [V; b], row sums as products with ones)
    against the layer's log p~ on the whitened input plus log|det A|, for a raw and a whitened model."""
    from energy_models.export_dem import DEMModule
    from energy_models.whitening import LinearWhitening

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(300, 784)).astype(np.float32)
    whitening = LinearWhitening.zca(x, 1e-2) if whitened else None
    energy = DEMEnergy(12, 10, 0.5, use_bias=True)
    model = ContrastiveDivergence(energy, dim=784, whitening=whitening, mcmc="langevin", mcmc_steps=1)
    for weight in (energy.V, energy.W, energy.b, energy.c, energy.d):
        weight.assign(rng.normal(size=weight.shape).astype(np.float32) * 0.3)
    module = DEMModule(model, x.mean(0), 0.1 * np.eye(784), {}, sample_sweeps=1)
    u = x if whitening is None else np.asarray(whitening(x))
    expected = energy(tf.constant(u)).numpy() + (whitening.log_abs_det if whitened else 0.0)
    np.testing.assert_allclose(module.unnormalized_log_prob(x).numpy(), expected, rtol=2e-5, atol=1e-3)


def test_fitted_gaussian_is_the_constrained_grid_mle():
    """train.dem's fitted Gaussian: grid-patterned precision whose covariance equals the sample covariance
    (plus the ridge) on the pattern, and a log_prob equal to scipy's multivariate normal."""
    from scipy.stats import multivariate_normal

    from energy_models import grid
    from energy_models.experiments.dem import GAUSSIAN_RIDGE, FittedGaussian

    rng = np.random.default_rng(3)
    # Smooth-ish correlated rows: a running sum along each row makes neighbouring pixels covary.
    x = np.cumsum(rng.normal(size=(4000, 784)), axis=1) * 0.05 + rng.normal(size=(4000, 784))
    g = FittedGaussian.grid(x)
    pattern = grid.grid_pattern(28, 28, 4)
    on_pattern = np.eye(784, dtype=bool)
    on_pattern[pattern.rows, pattern.cols] = on_pattern[pattern.cols, pattern.rows] = True
    precision = g.precision
    assert np.abs(precision[~on_pattern]).max() < 1e-6 * np.abs(precision).max()
    sample_cov = np.cov(x.T, bias=True) + GAUSSIAN_RIDGE * np.eye(784)
    np.testing.assert_allclose(g.covariance[on_pattern], sample_cov[on_pattern], rtol=1e-5, atol=1e-6)
    assert np.abs(g.covariance - sample_cov)[~on_pattern].max() > 1e-3  # A constrained fit, not the full one.
    small = FittedGaussian.grid(x[:, :100])  # 10 x 10 patches: the grid follows the patch size.
    assert small.covariance.shape == (100, 100)
    with pytest.raises(UserError, match="99 pixels, not a square number"):
        FittedGaussian.grid(x[:, :99])
    rows = g.sample(5, 1)
    np.testing.assert_allclose(g.log_prob(rows), multivariate_normal(g.mean, g.covariance).logpdf(rows),
                               rtol=1e-8)


def test_ranking_probe_loss_and_training_on_a_known_ranking():
    """bench.dem_ranking_probe: the loss is the logistic surrogate of 1 - AUROC, and training finds a ranking
    the Gaussian term alone gets backwards (positives at +-3 e_1, negatives N(0, I) around the model's mean)."""
    from bench.dem_ranking_probe import pairwise_ranking_loss, train_ranker
    from energy_models.scoring import auroc

    a, b = np.array([0.5, -1.0, 2.0]), np.array([0.0, 1.5])
    expected = np.mean(np.log1p(np.exp(b[None, :] - a[:, None])))
    np.testing.assert_allclose(pairwise_ranking_loss(tf.constant(a), tf.constant(b)).numpy(), expected, rtol=1e-12)

    rng = np.random.default_rng(0)
    positive = rng.normal(0, 0.3, (2000, 4)).astype(np.float32)
    positive[:, 0] += np.where(rng.random(2000) < 0.5, -3.0, 3.0)
    negative = rng.normal(0, 1.0, (2000, 4)).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    energy = DEMEnergy(8, 8, 1.0, use_bias=True)
    energy.build((None, 4))
    before = auroc(energy(positive).numpy(), energy(negative).numpy())
    train_ranker(energy, positive, negative, steps=600, batch_size=128, learning_rate=3e-2, seed=0)
    after = auroc(energy(positive).numpy(), energy(negative).numpy())
    assert before < 0.2 and after > 0.9, (before, after)


def test_exercise_filters_figure_puts_each_runs_filters_in_one_grey_panel(tmp_path):
    """bench.dem_exercises.filters_figure: one panel per run that has figures/filters.png, grey PNG."""
    from PIL import Image

    from bench.dem_exercises import filters_figure

    rows = [{"method": "dsm", "whiten": w, "sigma": s, "filter_localisation": 0.6, "kurtosis_ratio": 2.0}
            for w, s in (("zca", 1.0), ("none", 0.1))]
    for row in rows:
        folder = tmp_path / f"dem-{row['whiten']}-sigma{row['sigma']:g}-dsm" / "figures"
        folder.mkdir(parents=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(folder / "filters.png")
    filters_figure(rows, tmp_path, tmp_path / "two.png")
    filters_figure(rows + [{"method": "dsm", "whiten": "pca", "sigma": 1.0, "filter_localisation": 0.6,
                            "kurtosis_ratio": 2.0}], tmp_path, tmp_path / "still_two.png")
    filters_figure(rows[:1], tmp_path, tmp_path / "one.png")
    two, still_two, one = (Image.open(tmp_path / f"{n}.png") for n in ("two", "still_two", "one"))
    assert two.mode == "L" and two.size == still_two.size
    assert two.size[0] > 1.7 * one.size[0]


def test_summary_names_each_auroc_set_and_says_the_spread_is_a_standard_deviation():
    """Issue 18, item 14: "gaussian samples" named as the fitted grid Gaussian's, and +- spelled out."""
    from energy_models.experiments.dem import summary_lines

    metrics = {"method": "cd", "mcmc": "mala", "whiten": "zca", "sigma": 1.0, "n_train": 100, "seconds": 10.0,
               "patches_per_second": 10.0, "heldout_log_prob_mean": 5.0, "heldout_log_prob_std": 2.0,
               "n_eval": 50, "auroc_vs_gaussian_samples": 0.8, "gaussian_auroc_vs_gaussian_samples": 0.6,
               "auroc_vs_full_gaussian_samples": 0.7, "gaussian_auroc_vs_full_gaussian_samples": 0.6,
               "full_gaussian_auroc_vs_gaussian_samples": 0.65, "full_gaussian_auroc_vs_full_gaussian_samples": 0.63,
               "filter_localisation": 0.65, "random_localisation": 0.44, "filter_kurtosis": 12.0,
               "kurtosis_ratio": 2.8, "export_dir": "m"}
    text = "\n".join(summary_lines(metrics))
    assert "mean 5.0, standard deviation 2.0 over 50 patches" in text and "+-" not in text
    assert ("AUROC held-out patches vs samples of the fitted 4-neighbour grid Gaussian: 0.800 (the grid "
            "Gaussian's own: 0.600, the full-covariance Gaussian's: 0.650)") in text
    assert "localisation 0.650 (random rows 0.440), response kurtosis 12.00 (2.80x random rows)" in text
    assert "vs samples of the full-covariance Gaussian: 0.700" in text


def test_rerunning_a_finished_run_reports_its_own_timings(trained, tmp_path):
    """Issue 18, item 12: the same command on a finished run trains no epoch; its metrics keep the run's
    seconds and patches/s instead of "0 s (0 patches/s)"."""
    import dataclasses
    import shutil

    config, metrics = trained
    run = tmp_path / "run"
    shutil.copytree(config.run_dir, run, ignore=shutil.ignore_patterns("x.npy"))
    again = dem.train_and_evaluate(dataclasses.replace(config, run_dir=str(run), export_dir=str(tmp_path / "m")))
    assert again["resumed_from_epoch"] == config.epochs
    assert (again["seconds"], again["patches_per_second"]) == (metrics["seconds"], metrics["patches_per_second"])
    assert again["patches_per_second"] > 0 and again["timings_from"].startswith("the run that trained")
    assert f"({metrics['patches_per_second']:.0f} patches/s)" in dem.summary_lines(again)[0]
