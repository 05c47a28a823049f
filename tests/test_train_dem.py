"""`python -m train.dem` end to end (`energy_models.experiments.dem`): short CD and NCE training on real patches,
MCMC health, export in a fresh process, bad flags, resuming, divergence, summaries and timings."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from energy_models.errors import UserError
from energy_models.experiments import dem
from energy_models.experiments.dem_config import DEMConfig
from train import _cli
from train import dem as dem_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dem")
    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS")
    config = DEMConfig(images=photos, num_patches=2000, whiten="zca", method="cd", mcmc="langevin", mcmc_steps=3,
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
    from energy_models.data.patch_files import load_patch_set

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
    config = DEMConfig(images=photos, num_patches=2000, whiten="gaussian", method="nce", nu=2,
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
    args = _cli.parser_for(DEMConfig, "train.dem", "").parse_args(flags)
    with pytest.raises(UserError, match=message):
        DEMConfig(**vars(args)).resolve()


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
