"""Every kind of bad input a user can give the trainers: one line on stderr, exit status 2, nothing written
over. (Scoring's bad inputs are in test_score.py, patch files' in test_patches.py, offline MNIST in
test_train_gaussian.py, resuming with other settings in test_checkpoints.py.)"""

import numpy as np
import pytest

from train import _cli
from train import dem as dem_cli
from train import gaussian as gaussian_cli


def _run(main, argv, capsys):
    try:
        code = _cli.run_main(main, argv)
    except SystemExit as e:  # argparse's own errors exit (with status 2) instead of returning.
        code = e.code
    return code, capsys.readouterr().err.strip()


def _nan_patch_file(path):
    from energy_models.data.patches import PatchSet

    train = np.random.default_rng(0).random((300, 784)).astype(np.float32)
    train[7, 100] = np.inf
    PatchSet(train=train, heldout=np.zeros((10, 784), np.float32), image_names=np.array(["a", "b"]),
             is_heldout=np.array([0, 1]), train_positions=np.zeros((300, 3), np.int32),
             heldout_positions=np.zeros((10, 3), np.int32)).save(path)
    return path


GAUSSIAN = [
    (["--nu", "nan", "--estimator", "nce"], "--nu must be a finite number, got nan"),
    (["--nu", "-2", "--estimator", "nce"], "--nu must be > 0, got -2.0"),
    (["--rounds", "0", "--estimator", "nce"], "--rounds must be a positive integer, got 0"),
    (["--warmup-epochs", "0", "--estimator", "nce"], "--warmup-epochs must be a positive integer, got 0"),
    (["--epsilon", "0", "--estimator", "cnce"], "--epsilon must be > 0, got 0.0"),
    (["--kappa", "-1", "--estimator", "cnce"], "--kappa must be an integer >= 1, got -1"),
    (["--neighbourhood", "5"], "argument --neighbourhood: invalid choice: 5"),
    (["--checkpoint-every", "0", "--estimator", "sm"], "--checkpoint-every must be a positive integer, got 0"),
    (["--learning-rate", "inf", "--estimator", "sm"], "--learning-rate must be a finite number, got inf"),
    (["--distribute", "tpu"], "argument --distribute: invalid choice: 'tpu'"),
    (["--distribute", "mirrored"], "--distribute applies to the stochastic estimators (nce, cnce, sm)"),
    (["--optimiser", "adam"], "unrecognized arguments: --optimiser adam"),
]

DEM = [
    (["--sigma", "0"], "--sigma must be > 0 (e.g. 1 or 0.1), got 0.0"),
    (["--sigma", "inf"], "--sigma must be a finite number, got inf"),
    (["--num-patches", "-5"], "--num-patches must be at least 2, got -5"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--mcmc-steps", "-1"], "--mcmc-steps must be a positive integer, got -1"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer, got 0"),
    (["--images", "/nonexistent/photos"], "image source /nonexistent/photos does not exist"),
    (["--images", "{empty}"], "found no image files"),
    (["--images", "{broken}"], "no usable image in"),
    (["--patches", "{nan}"], "contains 1 NaN or inf values"),
]


@pytest.mark.parametrize("argv, message", GAUSSIAN)
def test_gaussian_bad_flags(argv, message, capsys, tmp_path):
    code, err = _run(gaussian_cli.main, argv + ["--run-dir", str(tmp_path / "r"),
                                                "--export-dir", str(tmp_path / "m")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv, message", DEM)
def test_dem_bad_input(argv, message, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    names = {"empty": tmp_path / "empty", "broken": tmp_path / "broken"}
    if "{nan}" in argv:
        names["nan"] = _nan_patch_file(tmp_path / "nan.npz")
    argv = [a.format(**names) for a in argv]
    code, err = _run(dem_cli.main, argv + ["--run-dir", str(tmp_path / "r"), "--export-dir", str(tmp_path / "m")],
                     capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("main", [gaussian_cli.main, dem_cli.main], ids=["gaussian", "dem"])
def test_folders_that_hold_something_else_are_refused_and_left_alone(main, capsys, tmp_path):
    run, model = tmp_path / "run", tmp_path / "model"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    code, err = _run(main, ["--run-dir", str(run), "--export-dir", str(model)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"run directory {run} exists and holds other files (notes.txt); choose another --run-dir or pass " \
           "--overwrite" in err
    model.mkdir()
    (model / "thesis.tex").write_text("mine")
    code, err = _run(main, ["--run-dir", str(tmp_path / "run2"), "--export-dir", str(model)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"export directory {model} exists and holds something other than a SavedModel" in err
    assert (run / "notes.txt").read_text() == "mine" and (model / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and not (tmp_path / "run2").exists()
