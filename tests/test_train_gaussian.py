"""python -m train.gaussian end to end on real MNIST, and its one-line errors on bad input."""

import json
import os
import re
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from energy_models.data import mnist
from energy_models.errors import NotPositiveDefiniteError
from train import _cli
from train import gaussian as gaussian_cli


def run_cli(argv, capsys):
    code = _cli.run_main(gaussian_cli.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def tensorboard_tags(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_mle_end_to_end_on_real_mnist(tmp_path, capsys, tfds_data_dir):
    run_dir, export_dir = tmp_path / "run", tmp_path / "model"
    code, out, err = run_cli(["--estimator", "mle", "--data-dir", tfds_data_dir, "--limit", "20000",
                              "--run-dir", str(run_dir), "--export-dir", str(export_dir)], capsys)
    assert code == 0, err
    assert "mle on mnist, 4 neighbours, 2296 parameters" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("dataset", "estimator", "neighbourhood", "n_params", "train_log_likelihood",
                "test_log_likelihood", "log_z_analytic", "log_z_estimate", "seconds"):
        assert key in metrics
    assert metrics["log_z_estimate"] is None and metrics["smallest_eigenvalue"] > 0
    # 20,000 training images: the held-out value sits a little below the full-data 362.5.
    assert 340 < metrics["test_log_likelihood"] < 366
    assert -760 < metrics["log_z_analytic"] < -740
    config = json.loads((run_dir / "config.json").read_text())
    assert config["neighbourhood"] == 4 and config["export_dir"] == str(export_dir)
    for name in ("samples.png", "precision_maps.png", "test_data.png"):
        assert (run_dir / "figures" / name).stat().st_size > 1000
    # TensorBoard's own reader finds the promised scalars and images.
    train = tensorboard_tags(run_dir / "train")
    assert "loss" in train.Tags()["tensors"]
    losses = [tf.make_ndarray(e.tensor_proto) for e in train.Tensors("loss")]
    assert losses[-1] < losses[0]  # Newton steps lower the negative log-likelihood.
    evaluation = tensorboard_tags(run_dir / "eval")
    tags = evaluation.Tags()["tensors"]
    for tag in ("samples", "precision_maps", "test_log_likelihood", "log_z_analytic"):
        assert tag in tags
    ll = tf.make_ndarray(evaluation.Tensors("test_log_likelihood")[0].tensor_proto)
    assert ll == pytest.approx(metrics["test_log_likelihood"], rel=1e-5)
    # The SavedModel scores raw pixels like the run's own evaluation.
    loaded = tf.saved_model.load(str(export_dir))
    data = mnist.load_noisy_mnist(0.1, 0, tfds_data_dir, limit=20000)
    test_ll = float(np.mean(loaded.log_prob(tf.constant(data.test)).numpy()))
    assert test_ll == pytest.approx(metrics["test_log_likelihood"], abs=1e-2)


@pytest.mark.parametrize("argv, message", [
    (["--neighbourhood", "6"], "argument --neighbourhood: invalid choice: 6"),
    (["--estimator", "bogus"], "argument --estimator: invalid choice: 'bogus'"),
    (["--noise-std", "-1"], "--noise-std must be >= 0, got -1.0"),
    (["--epochs", "0", "--estimator", "sm"], "--epochs must be a positive integer, got 0"),
    (["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
    (["--learning-rate", "0"], "--learning-rate must be > 0, got 0.0"),
])
def test_bad_flags_give_one_line_and_nonzero_exit(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        _cli.run_main(gaussian_cli.main, argv + ["--run-dir", str(tmp_path / "r")])
        raise SystemExit(2)  # Range errors return 2 instead of exiting: treat both alike.
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_mnist_unavailable_offline_fails_fast_with_instructions(tmp_path, capsys):
    start = time.monotonic()
    code, out, err = run_cli(["--data-dir", str(tmp_path / "empty"), "--run-dir", str(tmp_path / "r"),
                              "--export-dir", str(tmp_path / "m")], capsys)
    assert time.monotonic() - start < 30
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "MNIST is not prepared in" in err and "TFDS_DATA_DIR or --data-dir" in err
    assert "downloads/manual" in err and "train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "m").exists()


def test_user_errors_become_one_line(capsys):
    def failing(argv):
        raise NotPositiveDefiniteError("the precision matrix is not positive definite (smallest "
                                       "eigenvalue -1); refit")

    assert _cli.run_main(failing) == 2
    err = capsys.readouterr().err
    assert err == "error: the precision matrix is not positive definite (smallest eigenvalue -1); refit\n"


def test_interrupt_and_unhandled_write_failures_are_one_line(capsys, tmp_path):
    """Ctrl-C says that re-running resumes; a write failure that no writer turned into a UserError (here a
    real read-only file system is not needed: the OSError is what open() raises there) is one line."""
    import errno

    def interrupted(argv):
        raise KeyboardInterrupt

    assert _cli.run_main(interrupted) == 130
    assert capsys.readouterr().err == ("interrupted: outputs already written are complete (they are written "
                                       "atomically); run the same command again to resume from the newest "
                                       "checkpoint\n")

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "x.png"))

    assert _cli.run_main(full) == 2
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'runs' / 'x.png'} (No space left on "
                                       f"device); free space on that disk or choose another folder\n")


def test_help_gives_each_default_once_and_names_both_datasets():
    from energy_models.experiments.gaussian_config import GaussianConfig

    text = " ".join(_cli.parser_for(GaussianConfig, "python -m train.gaussian",
                                    gaussian_cli.__doc__.splitlines()[0]).format_help().split())
    assert "MNIST (Exercise 1) or to patches of photographs (Exercise 2)" in text
    assert "(default: the rule of energy_models.gaussian.cnce.choose_epsilon)" in text
    assert "(default: None)" not in text
    for flag_help in text.split(" --")[1:]:
        assert flag_help.count("default") <= 1, flag_help


def test_run_dir_holding_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    code, _, err = run_cli(["--run-dir", str(tmp_path)], capsys)
    assert code == 2 and "holds other files (thesis.tex); choose another --run-dir" in err
    assert (tmp_path / "thesis.tex").read_text() == "mine"



def test_patches_end_to_end_and_reload(tmp_path, capsys):
    from energy_models.data.images import default_image_source

    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS") or None
    run_dir = tmp_path / "run"
    argv = ["--dataset", "patches", "--num-patches", "4000", "--run-dir", str(run_dir),
            "--export-dir", str(tmp_path / "model")]
    code, out, err = run_cli(argv + (["--images", photos] if photos else []), capsys)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "patches" and metrics["smallest_eigenvalue"] > 0
    # The unconstrained Gaussian is the training-data optimum; the grid one trails it.
    assert metrics["train_log_likelihood"] > 0
    for name in ("whitened_zca", "whitened_pca", "whitened_gaussian", "samples", "test_data"):
        assert (run_dir / "figures" / f"{name}.png").exists()
        assert name in tensorboard_tags(run_dir / "eval").Tags()["tensors"]
    # The saved patch set reproduces the run exactly.
    assert (run_dir / "patches.npz").exists()
    code, _, err = run_cli(["--dataset", "patches", "--patches", str(run_dir / "patches.npz"),
                            "--run-dir", str(tmp_path / "again"), "--export-dir", str(tmp_path / "m2")],
                           capsys)
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test_log_likelihood"] == pytest.approx(metrics["test_log_likelihood"], rel=1e-9)
    assert again["n_train"] == metrics["n_train"] and again["n_test"] == metrics["n_test"]
    assert default_image_source()  # The offline default exists on a fresh install.


def test_empty_image_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    code, _, err = run_cli(["--dataset", "patches", "--images", str(tmp_path / "photos"),
                            "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_command_line_prints_exactly_one_line_on_bad_input(tmp_path):
    """In a real process, TensorFlow's start-up noise must not bury the message."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "train.gaussian", "--dataset", "patches", "--images",
                          str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: image source {tmp_path / 'missing'} does not exist; pass a folder, a glob pattern such "
        f"as 'photos/*.jpg', or an image file"]
    # A half-made tensorflow-datasets folder: absl's "Variant folder ... has no dataset_info.json" used to
    # come first (issue 18, item 14).
    (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "train.gaussian", "--data-dir", str(tmp_path / "tfds"),
                          "--run-dir", str(tmp_path / "r2"), "--export-dir", str(tmp_path / "m2")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: MNIST is not prepared in"), lines
    # A skipped image is one "warning:" line (not Python's warning format with its source line), its size
    # given as width x height.
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.new("L", (40, 20)).save(tmp_path / "photos" / "tiny.png")
    out = subprocess.run([sys.executable, "-m", "train.gaussian", "--dataset", "patches", "--images",
                          str(tmp_path / "photos"), "--run-dir", str(tmp_path / "r3")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 2, lines
    assert lines[0] == (f"warning: skipping {tmp_path / 'photos' / 'tiny.png'}: 40x20 pixels (width x height) is "
                        f"smaller than 28x28")
    assert lines[1].startswith("error: no usable image in")


@pytest.mark.parametrize("estimator", ["sm", "nce"])
def test_stochastic_estimators_run_on_patches(estimator, tmp_path, capsys):
    photos = os.environ.get("ENERGY_MODELS_TEST_PHOTOS") or None
    argv = ["--dataset", "patches", "--num-patches", "3000", "--estimator", estimator, "--epochs", "1",
            "--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "model")]
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "my run")  # A space: the printed hint is quoted.
    argv += ["--images", photos] if photos else []
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "my run" / "metrics.json").read_text())
    assert metrics["estimator"] == estimator and metrics["smallest_eigenvalue"] > 0
    assert np.isfinite(metrics["test_log_likelihood"])
    assert (metrics["log_z_estimate"] is not None) == (estimator == "nce")
    # Issue 18, items 11 and 14: stdout is not a terminal here, so Keras writes one plain line per epoch.
    assert not set(out) & {"\x1b", "\r", "\b"}
    assert re.search(r"^\d+/\d+ - \d+s - .*loss: ", out, re.MULTILINE), out
    assert f"(tensorboard --logdir '{tmp_path / 'my run'}')" in out
    # The epoch's summaries reach TensorBoard although its 10 steps are not a multiple of update_freq 50.
    from tests.conftest import tensorboard_tags

    tags = tensorboard_tags(tmp_path / "my run")
    assert {("epoch_loss", 0), ("epoch_heldout_log_likelihood", 1), ("epoch_samples", 1)} <= tags, tags
    if estimator == "sm":
        # Item 12: the same command on the finished run trains no epoch and reports the run's own figures.
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        again = json.loads((tmp_path / "my run" / "metrics.json").read_text())
        assert again["resumed_from_epoch"] == 1 and again["timings_from"].startswith("the run that trained")
        assert (again["seconds"], again["fit_seconds"]) == (metrics["seconds"], metrics["fit_seconds"])
        assert f"fitted in {metrics['seconds']:.1f} s" in out
        assert again["test_log_likelihood"] == pytest.approx(metrics["test_log_likelihood"], rel=1e-6)


def test_progress_is_a_bar_on_a_terminal_and_one_line_per_epoch_elsewhere():
    import io

    from energy_models.training.console import progress_verbosity

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_verbosity(Terminal()) == 1 and progress_verbosity(io.StringIO()) == 2
    closed = io.StringIO()
    closed.close()
    assert progress_verbosity(closed) == 2


def test_readme_and_requirements_point_only_inside_the_repository():
    """Issue 18, item 16: a user has only the repository (no ../shared, no internal issue history)."""
    from tests.conftest import ROOT

    for name in ("README.md", "requirements.txt"):
        text = (ROOT / name).read_text()
        assert not re.search(r"(?<!\.)\.\./", text), name  # "runs/.../x" is an ellipsis, not a parent.
        for outside in ("Issue 5", "the issue's", "data README"):
            assert outside not in text, (name, outside)
