"""Patches of any height x width, grayscale or colour, through train.gaussian, train.dem and train.score:
the grid, the exact optimum, the SavedModel's stated size, the refusals, and models and patch files saved
before sizes were stated."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from energy_models import savedmodel
from energy_models.data.patch_files import load_patch_set
from energy_models.data.patch_size import parse_patch_size
from energy_models.data.patches import PATCH_FILE_FORMAT
from energy_models.errors import UserError
from energy_models.gaussian import export
from tests.conftest import ROOT
from train import _cli
from train import dem as dem_cli
from train import gaussian as gaussian_cli
from train import score as score_cli

PHOTOS = os.environ.get("ENERGY_MODELS_TEST_PHOTOS") or None
IMAGES = ["--images", PHOTOS] if PHOTOS else []


def run(main, argv, capsys):
    code = _cli.run_main(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def exact_mle(root, name, size, colour=False):
    """An exact grid Gaussian of `size` patches (train.gaussian --estimator mle): (run folder, model folder)."""
    argv = ["--dataset", "patches", "--patch-size", size, "--num-patches", "4000", "--estimator", "mle",
            "--run-dir", str(root / name), "--export-dir", str(root / f"{name}-model")] + IMAGES
    assert _cli.run_main(gaussian_cli.main, argv + (["--colour"] if colour else [])) == 0
    return root / name, root / f"{name}-model"


@pytest.fixture(scope="module")
def gaussian12x16(tmp_path_factory):
    return exact_mle(tmp_path_factory.mktemp("p12x16"), "run", "12x16")


@pytest.fixture(scope="module")
def colour6x8(tmp_path_factory):
    return exact_mle(tmp_path_factory.mktemp("c6x8"), "run", "6x8", colour=True)


def free_entries(height, width, channels):
    """The entries of a 4-neighbour grid precision that may be non-zero, from the rule itself: values i, j
    (value i = (r * W + c) * C + k) of the same pixel, or of pixels one step apart in a row or column."""
    pixel = np.arange(height * width * channels) // channels
    r, c = np.divmod(pixel, width)
    steps = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])
    return steps <= 1


def check_dempster(model_dir, patches, shape):
    """Exact optimality of covariance selection: Sigma = S on the diagonal and every free entry, Lambda = 0
    elsewhere. The SavedModel holds Lambda in float32, whose rounding is amplified by Lambda's condition
    number kappa in Sigma = Lambda^-1: measured errors were 1e-10 to 1.3e-9 kappa (kappa 6e3 to 5e5; colour
    patches are nearly gray in some directions), so the tolerance is 1e-8 kappa."""
    model = tf.saved_model.load(str(model_dir))
    info = json.loads(model.info().numpy())
    assert (info["height"], info["width"], info["channels"], info["dim"]) == shape + (int(np.prod(shape)),)
    precision = model.precision().numpy().astype(np.float64)
    sigma = np.linalg.inv(precision)
    s = np.cov(patches.train.astype(np.float64).T, bias=True)
    free = free_entries(*shape)
    kappa = np.linalg.cond(precision)
    assert kappa < 1e6
    np.testing.assert_allclose(sigma[free], s[free], rtol=1e-8 * kappa)
    assert np.abs(precision[~free]).max() == 0
    # The grid's fit, not the full covariance: off the pattern Sigma and S differ far beyond that tolerance.
    assert np.max(np.abs(sigma[~free] - s[~free]) / np.abs(s[~free])) > 0.05
    assert model.sample(3, 0).shape == (3, int(np.prod(shape)))
    return model


def test_mle_on_12x16_patches_is_the_exact_optimum_of_their_grid(gaussian12x16):
    run_dir, model_dir = gaussian12x16
    patches = load_patch_set(run_dir / "patches.npz")
    assert patches.shape == (12, 16, 1) and patches.train.shape[1] == 192
    check_dempster(model_dir, patches, (12, 16, 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_params"] == 192 + 12 * 15 + 11 * 16 and metrics["image_shape"] == [12, 16, 1]
    from PIL import Image

    samples = Image.open(run_dir / "figures" / "samples.png")  # 8 x 8 tiles of 12 x 16, 1 pixel apart, 2x
    assert samples.mode == "L" and samples.size == (2 * (8 * 17 + 1), 2 * (8 * 13 + 1))


def test_mle_above_the_dense_limit_is_the_exact_optimum_by_block_newton_cg(tmp_path_factory):
    from energy_models.gaussian.fits import DENSE_MLE_MAX_DIM

    assert 32 * 36 > DENSE_MLE_MAX_DIM  # so train.gaussian uses gaussian.mle_newton_cg
    run_dir, model_dir = exact_mle(tmp_path_factory.mktemp("p32x36"), "run", "32x36")
    patches = load_patch_set(run_dir / "patches.npz")
    check_dempster(model_dir, patches, (32, 36, 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["max_abs_residual"] < 1e-7 and metrics["newton_iterations"] > 0


def test_colour_mle_is_the_exact_optimum_of_its_block_grid(colour6x8):
    run_dir, model_dir = colour6x8
    patches = load_patch_set(run_dir / "patches.npz")
    assert patches.shape == (6, 8, 3) and patches.train.shape[1] == 144
    model = check_dempster(model_dir, patches, (6, 8, 3))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 144 diagonal, 3 x 3 couplings per neighbouring pixel pair, 3 within each of the 48 pixels.
    assert metrics["n_params"] == 144 + 9 * (6 * 7 + 5 * 8) + 3 * 48
    # Colour is kept: the three channels of the photographs' patches differ (not a gray copy).
    rgb = patches.train.reshape(-1, 6, 8, 3)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 0.02
    assert float(np.mean(model.log_prob(patches.heldout[:500]))) == pytest.approx(
        metrics["test_log_likelihood"], abs=50)  # Same sign and scale as the run's exact evaluation.
    from PIL import Image

    samples = Image.open(run_dir / "figures" / "samples.png")
    assert samples.mode == "RGB" and samples.size == (2 * (8 * 9 + 1), 2 * (8 * 7 + 1))


def test_score_cuts_patches_of_the_model_s_size_and_refuses_other_sizes(gaussian12x16, colour6x8, tmp_path,
                                                                         capsys):
    run_dir, model_dir = gaussian12x16
    colour_run, colour_model = colour6x8
    argv = ["--model", str(model_dir), "--model", str(colour_model), "--json", str(tmp_path / "s.json"),
            "--figures-dir", str(tmp_path), "--num-patches", "500"]
    code, out, err = run(score_cli.main, argv + (IMAGES or ["--images", str(run_dir / "figures")]), capsys)
    assert code == 0, err
    for entry, dim in zip(json.loads((tmp_path / "s.json").read_text())["models"], (192, 144)):
        assert entry["info"]["dim"] == dim
        assert entry["sets"][0]["set"] == "photos" and entry["sets"][0]["n"] == 500
    # A patch file of another shape: one line naming both sizes and what to do.
    code, out, err = run(score_cli.main, ["--model", str(model_dir), "--patches", str(colour_run / "patches.npz")],
                         capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("holds 6x8x3 patches (144 values), but 12x16 patches (192 values) are expected; use a model of "
            "the file's size, or cut 12x16 patches from photographs (--images)") in err
    np.save(tmp_path / "wide.npy", np.full((4, 784), 0.5, np.float32))
    code, out, err = run(score_cli.main, ["--model", str(model_dir), "--patches", str(tmp_path / "wide.npy")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "784 features, but 192 (12x16 patches) are expected; re-create the file with --patch-size 12x16" in err
    code, out, err = run(score_cli.main, ["--model", str(colour_model), "--patches", str(tmp_path / "wide.npy")],
                         capsys)
    assert code == 2 and "(6x8x3 patches) are expected; re-create the file with --patch-size 6x8 --colour" in err


def test_stochastic_estimator_and_figures_at_a_non_square_size(tmp_path, capsys):
    argv = ["--dataset", "patches", "--patch-size", "10x7", "--num-patches", "3000", "--estimator", "sm",
            "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "model")]
    code, out, err = run(gaussian_cli.main, argv + IMAGES, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_log_likelihood"]) and metrics["smallest_eigenvalue"] > 0
    assert metrics["n_params"] == 70 + 10 * 6 + 9 * 7
    from PIL import Image

    samples = Image.open(tmp_path / "run" / "figures" / "samples.png")
    assert samples.size == (2 * (8 * 8 + 1), 2 * (8 * 11 + 1))  # 8 x 8 tiles 10 high, 7 wide, upscaled 2x


def test_colour_deep_energy_model_at_another_size_scores_in_a_fresh_process(tmp_path, capsys):
    argv = ["--patch-size", "8x12", "--colour", "--num-patches", "2000", "--epochs", "1", "--hidden", "8",
            "--latents", "8", "--sample-sweeps", "5", "--run-dir", str(tmp_path / "run"),
            "--export-dir", str(tmp_path / "model")]
    code, out, err = run(dem_cli.main, argv + IMAGES, capsys)
    assert code == 0, err
    patches = load_patch_set(tmp_path / "run" / "patches.npz")
    assert patches.shape == (8, 12, 3)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["patch_shape"] == [8, 12, 3]
    np.save(tmp_path / "held.npy", patches.heldout[:50])
    model = tf.saved_model.load(str(tmp_path / "model"))
    expected = model.unnormalized_log_prob(patches.heldout[:50]).numpy()
    # A fresh process loads the model, cuts colour patches of its own size and scores the saved rows.
    result = subprocess.run(
        [sys.executable, "-m", "train.score", "--model", str(tmp_path / "model"), "--patches",
         str(tmp_path / "held.npy"), "--num-patches", "300", "--json", str(tmp_path / "s.json"),
         "--figures-dir", str(tmp_path)] + (IMAGES or ["--images", str(tmp_path / "run" / "figures")]),
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    entry = json.loads((tmp_path / "s.json").read_text())["models"][0]
    info = entry["info"]
    assert (info["height"], info["width"], info["channels"], info["dim"]) == (8, 12, 3, 288)
    rows = {row["set"]: row for row in entry["sets"]}
    assert rows["photos"]["n"] == 300 and rows["patches:held.npy"]["n"] == 50
    assert rows["patches:held.npy"]["mean"] == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_patch_size_flags_are_checked(tmp_path, capsys):
    code, out, err = run(gaussian_cli.main, ["--dataset", "patches", "--patches", str(tmp_path / "p.npz"),
                                             "--patch-size", "12"], capsys)
    assert code == 2 and "--patch-size does nothing here" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(gaussian_cli.main, ["--dataset", "patches", "--patches", str(tmp_path / "p.npz"),
                                             "--colour"], capsys)
    assert code == 2 and "--colour does nothing here" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(gaussian_cli.main, ["--colour"], capsys)
    assert code == 2 and "--colour does nothing here: it applies only with --dataset patches" in err
    for bad in ("1", "12x", "0x5", "3x4x5", "ax3"):
        code, out, err = run(dem_cli.main, ["--patch-size", bad], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert (f"--patch-size must be a side p or height x width such as 16 or 16x32 (each at least 2 pixels), "
                f"got {bad}") in err
    assert parse_patch_size("16X32") == (16, 32) and parse_patch_size(28) == (28, 28)


def test_models_and_patch_files_saved_before_sizes_were_stated(tmp_path, capsys):
    """A SavedModel whose info() has no height, width, channels or dim is 28 x 28 grayscale; a patch file
    without height, width and channels holds patch_size x patch_size grayscale patches."""
    rng = np.random.default_rng(0)
    old = export.GaussianModule(np.full(784, 0.5), 100 * np.eye(784), {"kind": "grid_gaussian", "estimator": "old"})
    old_dir = savedmodel.save_atomically(old, tmp_path / "old")
    loaded = savedmodel.load_model(old_dir)
    assert loaded.shape == (28, 28, 1) and loaded.dim == 784 and "height" not in loaded.info
    np.save(tmp_path / "x.npy", np.full((10, 784), 0.5, np.float32))
    argv = ["--model", old_dir, "--patches", str(tmp_path / "x.npy"), "--json", str(tmp_path / "s.json"),
            "--figures-dir", str(tmp_path)]
    code, out, err = run(score_cli.main, argv, capsys)
    assert code == 0, err
    row = json.loads((tmp_path / "s.json").read_text())["models"][0]["sets"][0]
    assert row["mean"] == pytest.approx(784 / 2 * np.log(100 / (2 * np.pi)), rel=1e-5)
    # An older patch file: only patch_size (28) records the size.
    arrays = dict(format=np.asarray(PATCH_FILE_FORMAT), train=rng.random((6, 784), dtype=np.float32),
                  heldout=rng.random((4, 784), dtype=np.float32), image_names=np.array(["a.png", "b.png"]),
                  is_heldout=np.array([False, True]), train_positions=np.zeros((6, 3), np.int32),
                  heldout_positions=np.zeros((4, 3), np.int32), patch_size=np.asarray(28), seed=np.asarray(0),
                  source=np.asarray("photos"))
    np.savez(tmp_path / "old.npz", **arrays)
    assert load_patch_set(tmp_path / "old.npz").shape == (28, 28, 1)
    code, out, err = run(score_cli.main, ["--model", old_dir, "--patches", str(tmp_path / "old.npz")], capsys)
    assert code == 0, err
    # A model without a stated size whose mean is not 784 wide, and one whose stated size is not its width.
    for info, said in (({"kind": "grid_gaussian"}, "states no patch size in info(), so it is read as 28x28 (D = 784)"),
                       ({"kind": "grid_gaussian", "height": 10, "width": 10, "channels": 1},
                        "states 10x10x1 patches (D = 100) in info()")):
        bad = export.GaussianModule(np.zeros(64), np.eye(64), info)
        path = savedmodel.save_atomically(bad, tmp_path / f"bad{len(info)}")
        with pytest.raises(UserError, match=re.escape(f"{said}, but its mean() has 64 values; it does not keep")):
            savedmodel.load_model(path)
        code, out, err = run(score_cli.main, ["--model", path, "--patches", str(tmp_path / "x.npy")], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "does not keep the contract" in err


def test_colour_and_non_square_patches_are_the_image_windows(tmp_path):
    """Each patch is the h x w (x 3) window at its recorded position, flattened row-major with a pixel's
    R, G, B adjacent; a grayscale file in colour has R = G = B."""
    from PIL import Image

    from energy_models.data.images import load_images
    from energy_models.data.patches import extract_patches

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(30, 41, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(25, 20), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(gray).save(tmp_path / "b.png")
    images = load_images(tmp_path, min_size=(6, 9), colour=True)
    np.testing.assert_array_equal(images[0].pixels, rgb.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(images[1].pixels, np.repeat(gray[..., None], 3, -1).astype(np.float32) / np.float32(255))
    patches, positions = extract_patches(images, 400, (6, 9), seed=1)
    assert patches.shape == (400, 6 * 9 * 3) and set(positions[:, 0]) == {0, 1}
    for patch, (i, top, left) in zip(patches, positions):
        window = images[i].pixels[top:top + 6, left:left + 9]
        assert window.shape == (6, 9, 3)
        np.testing.assert_array_equal(patch, window.reshape(-1))
    gray_images = load_images(tmp_path, min_size=(6, 9))
    gray_patches, gray_positions = extract_patches(gray_images, 50, (6, 9), seed=1)
    i, top, left = gray_positions[0]
    assert gray_patches.shape == (50, 54)
    np.testing.assert_array_equal(gray_patches[0], gray_images[i].pixels[top:top + 6, left:left + 9].reshape(-1))
    assert positions[:, 1].max() <= 30 - 6 and positions[:, 2].max() <= 41 - 9
