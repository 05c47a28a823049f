"""Patches of any square size through train.gaussian, train.dem and train.score: the grid, the exact
optimum, the SavedModel's stated width, and the refusals."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from energy_models.data.patches import load_patch_set
from train import _cli
from train import dem as dem_cli
from train import gaussian as gaussian_cli
from train import score as score_cli

PHOTOS = os.environ.get("ENERGY_MODELS_TEST_PHOTOS") or None


def run(main, argv, capsys):
    code = _cli.run_main(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def gaussian12(tmp_path_factory):
    """An exact 12 x 12 grid Gaussian of 12 x 12 patches: (run folder, model folder)."""
    root = tmp_path_factory.mktemp("p12")
    argv = ["--dataset", "patches", "--patch-size", "12", "--num-patches", "4000", "--estimator", "mle",
            "--run-dir", str(root / "run"), "--export-dir", str(root / "model")]
    assert _cli.run_main(gaussian_cli.main, argv + (["--images", PHOTOS] if PHOTOS else [])) == 0
    return root / "run", root / "model"


def test_mle_on_12x12_patches_is_the_exact_optimum_of_their_grid(gaussian12):
    run_dir, model_dir = gaussian12
    patches = load_patch_set(run_dir / "patches.npz")
    assert patches.patch_size == 12 and patches.train.shape[1] == 144
    model = tf.saved_model.load(str(model_dir))
    info = json.loads(model.info().numpy())
    assert (info["height"], info["width"], info["channels"], info["dim"]) == (12, 12, 1, 144)
    # Dempster's condition on the 12 x 12 grid: Sigma = S on the diagonal and every 4-neighbour edge.
    sigma = np.linalg.inv(model.precision().numpy().astype(np.float64))
    x = patches.train.astype(np.float64)
    s = np.cov(x.T, bias=True)
    idx = np.arange(144).reshape(12, 12)
    pairs = [(idx[:, :-1].ravel(), idx[:, 1:].ravel()), (idx[:-1].ravel(), idx[1:].ravel()),
             (np.arange(144), np.arange(144))]
    for i, j in pairs:
        np.testing.assert_allclose(sigma[i, j], s[i, j], atol=2e-6)
    assert model.sample(3, 0).shape == (3, 144)
    assert json.loads((run_dir / "metrics.json").read_text())["n_params"] == 144 + 2 * 12 * 11


def test_score_cuts_patches_of_the_model_s_size_and_refuses_another(gaussian12, tmp_path, capsys):
    run_dir, model_dir = gaussian12
    argv = ["--model", str(model_dir), "--patches", str(run_dir / "patches.npz"), "--json", str(tmp_path / "s.json"),
            "--figures-dir", str(tmp_path)]
    code, out, err = run(score_cli.main, argv + (["--images", PHOTOS] if PHOTOS else []) + ["--num-patches", "500"],
                         capsys)
    assert code == 0, err
    sets = {row["set"]: row for row in json.loads((tmp_path / "s.json").read_text())["models"][0]["sets"]}
    assert sets["photos"]["n"] == 500 and np.isfinite(sets["photos"]["mean"])
    np.save(tmp_path / "wide.npy", np.full((4, 784), 0.5, np.float32))
    code, out, err = run(score_cli.main, ["--model", str(model_dir), "--patches", str(tmp_path / "wide.npy")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "784 features, but 144 (12x12 patches) are expected" in err


def test_stochastic_estimator_and_figures_at_another_size(tmp_path, capsys):
    argv = ["--dataset", "patches", "--patch-size", "10", "--num-patches", "3000", "--estimator", "sm",
            "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "model")]
    code, out, err = run(gaussian_cli.main, argv + (["--images", PHOTOS] if PHOTOS else []), capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_log_likelihood"]) and metrics["smallest_eigenvalue"] > 0
    from PIL import Image

    samples = Image.open(tmp_path / "run" / "figures" / "samples.png")
    assert samples.size == (2 * (8 * 11 + 1), 2 * (8 * 11 + 1))  # 8 x 8 tiles of 10 pixels, upscaled 2x


def test_deep_energy_model_at_another_size_exports_its_width(tmp_path, capsys):
    argv = ["--patch-size", "14", "--num-patches", "3000", "--epochs", "1", "--hidden", "8", "--latents", "8",
            "--sample-sweeps", "5", "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "model")]
    code, out, err = run(dem_cli.main, argv + (["--images", PHOTOS] if PHOTOS else []), capsys)
    assert code == 0, err
    model = tf.saved_model.load(str(tmp_path / "model"))
    info = json.loads(model.info().numpy())
    assert (info["height"], info["width"], info["dim"]) == (14, 14, 196)
    x = load_patch_set(tmp_path / "run" / "patches.npz").heldout[:5]
    assert model.unnormalized_log_prob(x).shape == (5,) and model.sample(2, 0).shape == (2, 196)


def test_patch_size_is_refused_with_a_patch_file_and_out_of_range(tmp_path, capsys):
    code, out, err = run(gaussian_cli.main, ["--dataset", "patches", "--patches", str(tmp_path / "p.npz"),
                                             "--patch-size", "12"], capsys)
    assert code == 2 and "--patch-size" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(dem_cli.main, ["--patch-size", "1"], capsys)
    assert code == 2 and "--patch-size must be at least 2 (pixels), got 1" in err
