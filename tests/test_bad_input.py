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
    PatchSet.from_rows(train, np.zeros((10, 784), np.float32)).save(path)
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
    (["--images", "photos"], "--images does nothing here: it applies only with --dataset patches"),
    (["--dataset", "patches", "--noise-std", "0.2"], "--noise-std does nothing here: it applies only with "
                                                     "--dataset mnist"),
    (["--nu", "3"], "--nu does nothing here: it applies only with --estimator nce"),
    (["--epochs", "3"], "--epochs does nothing here: it applies only with --estimator nce, cnce or sm"),
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
    (["--patches", "{nan}", "--images", "x"], "--images does nothing here: it applies only with patches cut"),
    (["--nu", "3"], "--nu does nothing here: it applies only with --method nce"),
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
    assert f"run directory {run} exists and holds other files (notes.txt); choose another --run-dir " \
           "(--overwrite replaces only a run folder's own files)" in err
    model.mkdir()
    (model / "thesis.tex").write_text("mine")
    code, err = _run(main, ["--run-dir", str(tmp_path / "run2"), "--export-dir", str(model)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"export directory {model} exists and holds something other than a SavedModel" in err
    # --overwrite replaces only what this project wrote: the user's files are refused, not deleted.
    (model / "chapter").mkdir()
    code, err = _run(main, ["--run-dir", str(tmp_path / "run2"), "--export-dir", str(model), "--overwrite"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"export directory {model} exists and holds something other than a SavedModel (chapter, thesis.tex); " \
           "choose another --export-dir (--overwrite replaces only a SavedModel)" in err
    code, err = _run(main, ["--run-dir", str(run), "--export-dir", str(tmp_path / "m3"), "--overwrite"], capsys)
    assert code == 2 and "holds other files (notes.txt)" in err
    assert (run / "notes.txt").read_text() == "mine" and (model / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and not (tmp_path / "run2").exists()


# ---- Issue 18: nothing a user already has is lost; every failure is one line. ----

from tests.conftest import snapshot  # noqa: E402

QUICK_PATCHES = ["--dataset", "patches", "--num-patches", "2000"]


@pytest.fixture(scope="module")
def finished_gaussian(tmp_path_factory):
    """A finished exact fit on 2,000 patches of the bundled photographs: (run folder, model folder)."""
    root = tmp_path_factory.mktemp("finished")
    code = _cli.run_main(gaussian_cli.main, QUICK_PATCHES + ["--run-dir", str(root / "run"),
                                                             "--export-dir", str(root / "model")])
    assert code == 0
    return root / "run", root / "model"


@pytest.fixture
def finished_copy(finished_gaussian, tmp_path):
    import shutil

    run, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(finished_gaussian[0], run)
    shutil.copytree(finished_gaussian[1], model)
    return run, model


def test_a_finished_model_and_run_are_replaced_only_with_the_same_settings(finished_copy, capsys, tmp_path):
    run, model = finished_copy
    before = snapshot(run), snapshot(model)
    other = QUICK_PATCHES[:-1] + ["1500"]
    code, err = _run(gaussian_cli.main, other + ["--run-dir", str(tmp_path / "run2"), "--export-dir", str(model)],
                     capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (f"export directory {model} holds a model made with other settings (num-patches: 2000 there, 1500 "
            f"now); pass --overwrite to replace it or choose another --export-dir") in err
    code, err = _run(gaussian_cli.main, other + ["--run-dir", str(run), "--export-dir", str(tmp_path / "m2")],
                     capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (f"run directory {run} holds the results of a finished run with other settings (num-patches: 2000 "
            f"there, 1500 now)") in err
    assert (snapshot(run), snapshot(model)) == before
    assert not (tmp_path / "run2").exists() and not (tmp_path / "m2").exists()
    # The same command again re-fits and replaces them (same settings: nothing is lost).
    code, err = _run(gaussian_cli.main, QUICK_PATCHES + ["--run-dir", str(run), "--export-dir", str(model)], capsys)
    assert code == 0, err


def test_a_saved_model_without_recorded_settings_is_replaced_only_with_overwrite(finished_copy, capsys):
    run, model = finished_copy
    (model / "energy_models_settings.json").unlink()
    before = snapshot(model)
    code, err = _run(gaussian_cli.main, QUICK_PATCHES + ["--run-dir", str(run.parent / "r2"),
                                                         "--export-dir", str(model)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds a SavedModel whose settings are not recorded; pass --overwrite" in err
    assert snapshot(model) == before


@pytest.mark.parametrize("flag", ["--run-dir", "--export-dir"])
def test_an_empty_folder_flag_is_refused(flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(gaussian_cli.main, [flag, ""], capsys)
    assert code == 2 and err == f"error: {flag} is empty; give a folder, or leave the flag out for the default one"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, problem", [('{"dataset": "pat', "is unreadable (JSONDecodeError"),
                                           ('["dataset"]', "holds a JSON list, not the settings object")])
def test_a_damaged_config_json_of_a_finished_run_is_one_line(finished_copy, text, problem, capsys, tmp_path):
    run, model = finished_copy
    (run / "config.json").write_text(text)
    before = snapshot(run)
    code, err = _run(gaussian_cli.main, QUICK_PATCHES + ["--run-dir", str(run), "--export-dir", str(tmp_path / "m")],
                     capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"the run's configuration {run / 'config.json'} {problem}" in err
    assert "pass --overwrite to start the run again or choose another --run-dir" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("flag", ["--run-dir", "--export-dir"])
def test_a_read_only_folder_is_refused_before_training(flag, tmpfs, capsys, tmp_path):
    read_only = tmpfs("1m", read_only=True)
    dirs = {"--run-dir": str(tmp_path / "run"), "--export-dir": str(tmp_path / "model")}
    dirs[flag] = str(read_only / "x")
    code, err = _run(gaussian_cli.main, QUICK_PATCHES + [a for kv in dirs.items() for a in kv], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (f"cannot write {read_only} (Read-only file system); it is on a read-only file system: choose "
            f"another folder ({flag})") in err
    assert not (tmp_path / "model").exists()


def test_a_full_disk_during_export_is_one_line_and_keeps_the_old_model(finished_gaussian, tmpfs, capsys):
    """A real full file system: a 7 MB tmpfs holding the old model (4.8 MB) has no room for the new one."""
    import shutil

    disk = tmpfs("7m")
    model = disk / "model"
    shutil.copytree(finished_gaussian[1], model)
    before = snapshot(model)
    code, err = _run(gaussian_cli.main, QUICK_PATCHES + ["--run-dir", str(disk.parent / "run"),
                                                         "--export-dir", str(model), "--overwrite"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"cannot write the SavedModel {model}" in err and "the model there is unchanged" in err
    assert snapshot(model) == before and sorted(p.name for p in disk.iterdir()) == ["model"]


def test_a_failing_model_write_is_one_line_and_keeps_the_old_model(finished_copy, monkeypatch, capsys):
    """The same without a mount: TensorFlow's writer raising what it raises on a full disk."""
    import tensorflow as tf

    from energy_models import savedmodel
    from energy_models.gaussian import export

    run, model = finished_copy
    before = snapshot(model)

    def full(module, path, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables; No space left on device")

    monkeypatch.setattr(savedmodel.tf.saved_model, "save", full)
    module = export.GaussianModule(np.zeros(4), np.eye(4), {})
    with pytest.raises(savedmodel.UserError, match=r"cannot write the SavedModel .*model \(ResourceExhaustedError: "
                                               r".*No space left on device\); free space or choose another "
                                               r"--export-dir; the model there is unchanged"):
        savedmodel.save_atomically(module, model, overwrite=True)
    assert snapshot(model) == before and sorted(p.name for p in model.parent.iterdir()) == ["model", "run"]


def _images(folder, arrays):
    from PIL import Image

    folder.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array.astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.parametrize("main", [gaussian_cli.main, dem_cli.main], ids=["gaussian", "dem"])
@pytest.mark.parametrize("kind, message", [
    ("constant", "the training {rows} have zero variance in 784 of 784 pixels (e.g. constant images), so no "
                 "Gaussian can be fitted; use photographs with texture (--images)"),
    ("gradient", "the training {rows} vary in only "),
])
def test_degenerate_images_are_one_line(main, kind, message, capsys, tmp_path):
    """Issue 18, item 9: a constant image or a smooth gradient has a singular covariance."""
    y, x = np.mgrid[0:400, 0:400]
    arrays = {"constant": [np.full((60, 60), 128), np.full((60, 60), 90)],
              "gradient": [(x + y) / 800 * 255, (x - y + 400) / 800 * 255]}[kind]
    folder = _images(tmp_path / kind, arrays)
    argv = ["--images", str(folder), "--num-patches", "2000", "--run-dir", str(tmp_path / "r"),
            "--export-dir", str(tmp_path / "m")]
    if main is gaussian_cli.main:
        argv = ["--dataset", "patches"] + argv
    code, err = _run(main, argv, capsys)
    rows = "rows" if main is gaussian_cli.main else "patches"
    assert code == 2 and len(err.splitlines()) == 1 and message.format(rows=rows) in err, err
    assert not (tmp_path / "m").exists()


def test_a_patch_file_with_an_empty_held_out_split_is_one_line(capsys, tmp_path):
    """Issue 18, item 8 (train.gaussian divided by the empty split's size)."""
    from energy_models.data.patches import PatchSet

    train = np.random.default_rng(0).random((300, 784)).astype(np.float32)
    PatchSet.from_rows(train, np.zeros((0, 784), np.float32)).save(tmp_path / "p.npz")
    code, err = _run(gaussian_cli.main, ["--dataset", "patches", "--patches", str(tmp_path / "p.npz"),
                                         "--run-dir", str(tmp_path / "r"), "--export-dir", str(tmp_path / "m")],
                     capsys)
    assert code == 2 and err == ("error: the held-out split has 0 rows; a fit and its evaluation need at least 2 "
                                 "in each (for patches: cut a new set with --images, with enough images for "
                                 "--heldout-fraction to hold some out)")
    assert not (tmp_path / "m").exists()


def test_an_oversized_request_is_refused_in_one_line_before_allocating(tmp_path, capsys):
    """Issue 18, item 10: refused from the memory it would need (no folder made), with a peak far below
    1 GB (it grew to 23.9 GB before the OOM killer ended it)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    argv = ["--num-patches", "1000000000", "--run-dir", str(tmp_path / "r"), "--export-dir", str(tmp_path / "m")]
    # A fresh parent whose only child is the trainer, so that RUSAGE_CHILDREN is the trainer's own peak.
    measure = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "train.gaussian", "--dataset",
                             "patches"] + argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    peak_kb = int(result.stdout.split()[-1])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.startswith("error: --num-patches 1000000000 needs about 9.41 TB of memory (3 copies of "
                                    "1000000000 28x28 float32 patches), but ")
    assert "is available; lower --num-patches (at most about " in result.stderr
    assert peak_kb < 1024 ** 2, f"peak {peak_kb / 1024:.0f} MB"
    code, err = _run(dem_cli.main, argv, capsys)
    assert code == 2 and "--num-patches 1000000000 needs about 9.41 TB of memory" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


def test_a_json_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmpfs):
    """metrics.json, config.json and score --json on a full file system (a real 8 KB tmpfs)."""
    from energy_models import files
    from energy_models.errors import UserError

    disk = tmpfs("8k")
    path = disk / "metrics.json"
    files.write_json_atomically(path, {"seconds": 1.0})
    before = snapshot(disk)
    with pytest.raises(UserError) as raised:
        files.write_json_atomically(path, {"x": "y" * 50_000})
    assert str(raised.value) == (f"cannot write {path} (No space left on device); free space on that disk or "
                                 "choose another folder")
    assert snapshot(disk) == before  # The old file, and no temporary left behind.
