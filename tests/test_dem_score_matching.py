"""Score matching for the deep energy model: the closed-form score and Laplacian, the objectives' known
optima, the subspace (--whiten-components) model and train.dem's per-method defaults."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem.energy import DEMEnergy, unnormalized_log_prob
from energy_models.dem.score_matching import DEMScoreMatching, laplacian, score
from energy_models.errors import UserError
from energy_models.experiments import dem
from energy_models.experiments.dem_config import DEMConfig
from train import _cli


def _random_energy(dim=9, components=6, seed=1):
    keras.utils.set_random_seed(seed)
    energy = DEMEnergy(5, 4, sigma=0.7, use_bias=True, components=components, v_stddev=0.5)
    energy.build((None, dim))
    rng = np.random.default_rng(seed)
    if components is not None:
        energy.set_basis(np.linalg.qr(rng.standard_normal((dim, components)))[0].T)
    for weight in (energy.b, energy.c, energy.d, energy.W):
        weight.assign(rng.standard_normal(weight.shape).astype(np.float32))
    return energy


@pytest.mark.parametrize("components", [None, 6])
def test_closed_form_score_and_laplacian_equal_autodiff(components):
    energy = _random_energy(components=components)
    params = [p if p is None or isinstance(p, float) else tf.cast(tf.convert_to_tensor(p), tf.float64)
              for p in energy.params]
    u = tf.constant(np.random.default_rng(3).standard_normal((7, 9)))
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(u)
        with tf.GradientTape() as inner:
            inner.watch(u)
            log_p = unnormalized_log_prob(u, *params)
        grad = inner.gradient(log_p, u)
        columns = [grad[:, i] for i in range(9)]
    trace = sum(outer.gradient(columns[i], u)[:, i] for i in range(9))
    np.testing.assert_allclose(score(u, *params), grad, atol=1e-10)
    np.testing.assert_allclose(laplacian(u, *params), trace, atol=1e-10)
    assert np.max(np.abs(trace)) > 1  # Not trivially zero.


def test_basis_confines_the_rows_of_v_to_its_span():
    energy = _random_energy(components=6)
    V, basis = np.asarray(energy.effective_V), np.asarray(energy.basis)
    np.testing.assert_allclose(V @ basis.T @ basis, V, atol=1e-5)  # Rows in span(B).
    assert V.shape == (5, 9) and energy.V.shape == (5, 6)


@pytest.mark.parametrize("noise_std", [0.0, 0.5])
def test_score_matching_of_the_gaussian_special_case_recovers_its_mean(noise_std):
    """With V = 0 the model is N(sigma^2 b, sigma^2 I) (softplus of a constant): exact and denoising score
    matching both have the optimum b = E[u] / sigma^2 (the noise is zero-mean), whatever the data's spread."""
    dim, sigma = 12, 0.8
    rng = np.random.default_rng(0)
    mean = rng.normal(size=dim).astype(np.float32)
    x = (mean + 0.6 * rng.standard_normal((4096, dim))).astype(np.float32)
    keras.utils.set_random_seed(0)
    energy = DEMEnergy(4, 4, sigma=sigma)
    model = DEMScoreMatching(energy, noise_std=noise_std, dim=dim)
    energy.V.assign(np.zeros((4, dim), np.float32))
    energy.V.trainable = False
    # Cosine decay: the denoising gradient is noisy, and a constant rate would leave b jittering by ~0.05.
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.05, 16 * 30)))
    model.fit(x, batch_size=256, epochs=30, verbose=0, shuffle=True)
    np.testing.assert_allclose(energy.b.numpy(), x.mean(axis=0) / sigma ** 2, atol=0.03)


def test_exact_score_matching_learns_sigma_of_the_gaussian_special_case():
    """With V = 0 and --learn-sigma the model is N(sigma^2 b, sigma^2 I); score matching's optimum is the
    data's mean and its (isotropic) variance: sigma = 0.6 for data drawn with std 0.6, not the start 1."""
    dim = 12
    rng = np.random.default_rng(1)
    mean = rng.normal(size=dim).astype(np.float32)
    x = (mean + 0.6 * rng.standard_normal((4096, dim))).astype(np.float32)
    keras.utils.set_random_seed(0)
    energy = DEMEnergy(4, 4, sigma=1.0, learn_sigma=True)
    model = DEMScoreMatching(energy, noise_std=0.0, dim=dim)
    energy.V.assign(np.zeros((4, dim), np.float32))
    energy.V.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.05, 16 * 40)))
    model.fit(x, batch_size=256, epochs=40, verbose=0, shuffle=True)
    sigma = float(energy.scale)
    assert sigma == pytest.approx(np.sqrt(np.mean(np.var(x, axis=0))), rel=0.02)
    np.testing.assert_allclose(energy.b.numpy() * sigma ** 2, x.mean(axis=0), atol=0.03)


def _resolved(flags):
    args = _cli.parser_for(DEMConfig, "train.dem", "").parse_args(flags)
    return DEMConfig(**vars(args)).resolve()


def test_defaults_are_per_method(tmp_path):
    plain = _resolved(["--run-dir", str(tmp_path / "a")])
    assert (plain.method, plain.whiten_components, plain.batch_size, plain.learning_rate, plain.g_bias,
            plain.epochs) == ("dsm", 150, 128, 1e-2, True, 20)
    cd = _resolved(["--method", "cd", "--run-dir", str(tmp_path / "b")])
    assert (cd.whiten_components, cd.batch_size, cd.learning_rate, cd.g_bias, cd.epochs) == (None, 256, 3e-2,
                                                                                              False, 10)
    assert _resolved(["--method", "cd", "--g-bias", "--run-dir", str(tmp_path / "c")]).g_bias is True
    assert _resolved(["--no-g-bias", "--run-dir", str(tmp_path / "d")]).g_bias is False
    assert _resolved(["--whiten", "none", "--run-dir", str(tmp_path / "e")]).whiten_components is None


@pytest.mark.parametrize("flags, message", [
    (["--whiten-components", "0"], "--whiten-components must be a positive integer, got 0"),
    (["--whiten", "none", "--whiten-components", "100"],
     "--whiten-components does nothing here: it applies only with --whiten zca or pca"),
    (["--method", "cd", "--dsm-noise", "0.5"], "--dsm-noise does nothing here: it applies only with --method dsm"),
    (["--mcmc-steps", "3"], "--mcmc-steps does nothing here: it applies only with --method cd"),
    (["--dsm-noise", "0"], "--dsm-noise must be > 0, got 0"),
])
def test_bad_score_matching_flags_get_one_line(flags, message, capsys):
    from train import dem as dem_cli

    code = _cli.run_main(dem_cli.main, flags + ["--run-dir", "/nonexistent/run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_unknown_method_is_one_argparse_line(capsys):
    from train import dem as dem_cli

    with pytest.raises(SystemExit) as exit_:
        _cli.run_main(dem_cli.main, ["--method", "ml"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "invalid choice: 'ml'" in err


def test_more_components_than_pixels_is_one_line(tmp_path):
    config = DEMConfig(whiten="zca", whiten_components=1000, run_dir=str(tmp_path / "r")).resolve()
    x = np.random.default_rng(0).random((300, 784), dtype=np.float32)
    with pytest.raises(UserError, match="--whiten-components 1000 is more than the 784 pixels"):
        dem.build_model(config, x, dem.make_whitening(config, x, None))


@pytest.fixture(scope="module")
def dsm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsm")
    config = DEMConfig(images=os.environ.get("ENERGY_MODELS_TEST_PHOTOS"), num_patches=3000, hidden=16,
                           latents=16, epochs=3, whiten_components=40, sample_sweeps=3,
                           run_dir=str(root / "run"), export_dir=str(root / "model"))
    return config, dem.train_and_evaluate(config)


def test_dsm_run_reports_filters_and_exports_what_it_trained(dsm_run):
    from energy_models.data.patch_files import load_patch_set
    from energy_models.training.checkpoints import TrainingCheckpoint

    config, metrics = dsm_run
    assert metrics["method"] == "dsm" and metrics["whiten_components"] == 40 and metrics["g_bias"] is True
    # Loss of order D/2 (= 392) and falling below the V = 0 model's; the trained filters are finite rows.
    assert 300 < metrics["final"]["loss"] < 392
    assert 0 < metrics["filter_localisation"] <= 1 and np.isfinite(metrics["filter_kurtosis"])
    patch_set = load_patch_set(os.path.join(config.run_dir, "patches.npz"))
    # The full-covariance baseline against a plain numpy N(m, S + 1e-6 I) on the whole held-out split
    # (fewer than n_eval patches here, so the metric averages over all of them). No ordering against the
    # grid Gaussian is asserted: with ~2,300 training patches in 784 dimensions the full covariance
    # overfits and loses to the grid on held-out patches; on 50,000 patches it wins (README).
    train, held = patch_set.train.astype(np.float64), patch_set.heldout.astype(np.float64)
    assert len(held) == metrics["n_eval"]
    m = train.mean(0)
    cov = np.cov(train, rowvar=False, bias=True) + 1e-6 * np.eye(784)
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ij,ij->i", held - m, np.linalg.solve(cov, (held - m).T).T)
    expected = np.mean(-0.5 * (maha + logdet + 784 * np.log(2 * np.pi)))
    np.testing.assert_allclose(metrics["full_gaussian_heldout_log_prob"], expected, rtol=1e-6)
    heldout = patch_set.heldout[:200]
    module = tf.saved_model.load(config.export_dir)
    # A fresh model restored from the last checkpoint (basis included) scores as the export does.
    gaussian = dem.FittedGaussian.grid(patch_set.train)
    fresh_config = DEMConfig(**{**config.__dict__, "seed": 7})
    model = dem.build_model(fresh_config, patch_set.train, dem.make_whitening(fresh_config, patch_set.train,
                                                                              gaussian), gaussian)
    model.energy.set_basis(np.zeros(model.energy.basis.shape))  # The checkpoint must restore it.
    assert TrainingCheckpoint(os.path.join(config.run_dir, "checkpoints"), 1).restore(model) == config.epochs
    np.testing.assert_allclose(module.unnormalized_log_prob(heldout).numpy(), model.unnormalized_log_prob(heldout),
                               rtol=2e-5)
    V = np.asarray(model.energy.effective_V)
    assert np.linalg.matrix_rank(V @ np.asarray(model.whitening.matrix).T) <= 40 < 784
