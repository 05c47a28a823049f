"""Checkpoints, resumption after SIGKILL, divergence, and batches that depend on (seed, epoch, step) only."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from energy_models.data.batches import epoch_batches
from energy_models.errors import UserError
from energy_models.training.checkpoints import DivergenceGuard, TrainingCheckpoint
from tests.conftest import ROOT, checkpoint_arrays


def _dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_checkpoints_are_whole_files_named_by_epoch_and_only_the_newest_are_kept(tmp_path):
    model = _dense_model()
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=2, keep=2)
    checkpoint.set_model(model)
    checkpoint.set_params({"epochs": 5})
    checkpoint.on_train_begin()
    for epoch in range(5):
        checkpoint.on_epoch_end(epoch)
    # Epoch 0 (start), 2, 4 and 5 (the last) were saved; the two newest remain.
    assert [e for e, _ in checkpoint.checkpoints()] == [4, 5] and checkpoint.saves == 4
    # What a kill during a save leaves (a temporary file) is never taken for a checkpoint.
    (tmp_path / "ckpt" / ".tmp-deadbeef.weights.h5").write_bytes(b"half")
    assert checkpoint.latest()[0] == 5
    saved = [w.numpy().copy() for w in model.weights]
    model.weights[0].assign(np.zeros((3, 2), np.float32))
    assert checkpoint.restore(model) == 5
    for w, s in zip(model.weights, saved):
        np.testing.assert_array_equal(w.numpy(), s)
    model.weights[0].assign(np.full((3, 2), np.inf, np.float32))
    assert not checkpoint.save(6) and checkpoint.latest()[0] == 5  # A non-finite state is never saved.


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one_with_one_warning(tmp_path, capsys):
    """Issue 18, item 6: the newest file cut short (a full disk, a bad copy) is moved aside with one
    warning line naming it, and the run resumes from the older checkpoint; none readable: one line."""
    model = _dense_model()
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", keep=2)
    checkpoint.set_model(model)
    checkpoint.save(1)
    older = [w.numpy().copy() for w in model.weights]
    model.weights[0].assign(np.ones((3, 2), np.float32))
    checkpoint.save(2)
    newest = tmp_path / "ckpt" / "epoch-000002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:700])
    model.weights[0].assign(np.full((3, 2), 7.0, np.float32))
    assert checkpoint.restore(model) == 1
    for w, s in zip(model.weights, older):
        np.testing.assert_array_equal(w.numpy(), s)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: checkpoint {newest} is unreadable (")
    assert err[0].endswith("moved it to epoch-000002.weights.h5.unreadable and resuming from an older checkpoint")
    assert (tmp_path / "ckpt" / "epoch-000002.weights.h5.unreadable").stat().st_size == 700
    assert checkpoint.latest()[0] == 1
    oldest = tmp_path / "ckpt" / "epoch-000001.weights.h5"
    oldest.write_bytes(b"")
    with pytest.raises(UserError, match=r"no checkpoint in .*ckpt is readable \(moved aside as \*.unreadable\); "
                                        r"pass --overwrite to start the run again"):
        checkpoint.restore(model)


def test_divergence_guard_names_the_step_restores_and_freezes_the_checkpoint(tmp_path):
    model = _dense_model()
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt")
    guard = DivergenceGuard(checkpoint, watched=("loss", "energy_data"),
                            remedies="a smaller --learning-rate (now 0.01)")
    for callback in (guard, checkpoint):
        callback.set_model(model)
        callback.set_params({"epochs": 3})
    checkpoint.on_train_begin()
    good = [w.numpy().copy() for w in model.weights]
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(3, {"loss": 1.0, "energy_data": 2.0})
    assert not guard.diverged
    model.weights[0].assign(np.full((3, 2), np.nan, np.float32))  # What a diverged update leaves.
    guard.on_train_batch_end(4, {"loss": float("nan"), "energy_data": float("inf")})
    assert model.stop_training and guard.diverged
    assert guard.message == (
        "training diverged at epoch 1, step 5 (non-finite loss, energy_data); try a smaller "
        f"--learning-rate (now 0.01); the last good state (from the start) is kept in "
        f"{tmp_path / 'ckpt' / 'epoch-000000.weights.h5'}")
    for restored, expected in zip(model.weights, good):
        np.testing.assert_array_equal(restored.numpy(), expected)
    checkpoint.on_epoch_end(0)  # Keras still calls this after a stop: nothing may be saved now.
    assert [e for e, _ in checkpoint.checkpoints()] == [0]


def test_divergence_guard_catches_non_finite_parameters_at_epoch_end(tmp_path):
    model = _dense_model()
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt")
    guard = DivergenceGuard(checkpoint)
    for callback in (guard, checkpoint):
        callback.set_model(model)
    checkpoint.on_train_begin()
    model.weights[1].assign(np.array([np.nan, 0.0], np.float32))
    guard.on_epoch_end(0)
    assert guard.diverged and "the end of epoch 1 (non-finite parameters)" in guard.message
    assert np.all(np.isfinite(model.weights[1].numpy()))


def test_batches_from_a_later_epoch_equal_the_uninterrupted_stream():
    pixels = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    whole = [b.numpy() for b in epoch_batches(pixels, 8, seed=3, noise_std=0.1).take(18)]  # 3 epochs of 6
    later = [b.numpy() for b in epoch_batches(pixels, 8, seed=3, start_epoch=2, noise_std=0.1).take(6)]
    np.testing.assert_array_equal(np.stack(later), np.stack(whole[12:]))
    assert not np.allclose(whole[0], whole[6])  # Each epoch has its own order and noise.
    clean = np.concatenate([b.numpy() for b in epoch_batches(pixels, 10, seed=3).take(5)])
    np.testing.assert_array_equal(np.sort(clean, axis=0), np.sort(pixels, axis=0))  # A permutation.


def _train_gaussian_argv(run_dir, export_dir):
    # Adaptive-noise NCE on one time axis: score matching epoch 1, NCE round 1 epochs 2-4, round 2 5-7.
    return ["--estimator", "nce", "--limit", "1000", "--batch-size", "100", "--warmup-epochs", "1",
            "--rounds", "2", "--epochs", "3", "--run-dir", str(run_dir), "--export-dir", str(export_dir)]


def test_gaussian_trainer_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(
        tmp_path, tfds_data_dir):
    """SIGKILL a `train.gaussian` process during NCE's second round, after that round's first epoch's
    checkpoint; the same command run again restores the finished rounds, resumes round 2 and ends with
    the parameters of a run that was never interrupted (same seed)."""
    from energy_models.experiments import gaussian
    from energy_models.experiments.gaussian_config import GaussianConfig
    from train import gaussian as cli
    from train._cli import run_main

    env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed_run, killed_model = tmp_path / "killed", tmp_path / "killed_model"
    argv = _train_gaussian_argv(killed_run, killed_model)
    process = subprocess.Popen([sys.executable, "-m", "train.gaussian", *argv], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed_run / "checkpoints" / "round-2" / "epoch-000005.weights.h5"
    deadline = time.monotonic() + 180
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    still_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert still_running and first.exists(), "the run ended or stalled before its first checkpoint"
    assert not (killed_run / "metrics.json").exists() and not killed_model.exists()

    assert run_main(cli.main, argv) == 0  # The same command: resumes.
    resumed = json.loads((killed_run / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] >= 5  # In round 2, not from its start.

    reference = gaussian.train_and_evaluate(GaussianConfig(
        **vars(_parser().parse_args(_train_gaussian_argv(tmp_path / "ref", tmp_path / "ref_model")))))
    a = checkpoint_arrays(killed_run / "checkpoints" / "round-2" / "epoch-000007.weights.h5")
    b = checkpoint_arrays(tmp_path / "ref" / "checkpoints" / "round-2" / "epoch-000007.weights.h5")
    assert a.keys() == b.keys() and len(a) >= 8
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert resumed["test_log_likelihood"] == pytest.approx(reference["test_log_likelihood"], abs=1e-3)
    assert resumed["log_z_estimate"] == pytest.approx(reference["log_z_estimate"], abs=1e-3)
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    for mine, theirs in zip(resumed["rounds"], reference["rounds"]):
        assert mine["heldout_log_likelihood"] == pytest.approx(theirs["heldout_log_likelihood"], abs=1e-3)


def _parser():
    from energy_models.experiments.gaussian_config import GaussianConfig
    from train._cli import parser_for

    return parser_for(GaussianConfig, "train.gaussian", "")


def test_resuming_with_other_settings_is_refused(tmp_path, tfds_data_dir):
    from energy_models.experiments import rundir

    run = tmp_path / "run"
    rundir.start_or_resume(run, {"epochs": 4, "estimator": "nce"})
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-000001.weights.h5").write_bytes(b"x")
    rundir.start_or_resume(run, {"epochs": 4, "estimator": "nce", "export_dir": "elsewhere"})  # Resumes.
    with pytest.raises(UserError, match=r"holds checkpoints of a run with other settings \(epochs: 4 there, "
                                        r"6 now\); re-run with the same flags to resume it"):
        rundir.start_or_resume(run, {"epochs": 6, "estimator": "nce"})
    rundir.start_or_resume(run, {"epochs": 6, "estimator": "nce"}, overwrite=True)  # Starts again.
    assert not (run / "checkpoints").exists()


def test_a_run_from_before_a_new_flag_resumes_at_the_flags_default(tmp_path):
    """config.json without a setting (the flag came later) resumes when the setting is at its default,
    and is refused with the setting's name when it is not."""
    from energy_models.experiments import rundir

    run = tmp_path / "run"
    rundir.start_or_resume(run, {"epochs": 4})
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-000001.weights.h5").write_bytes(b"x")
    defaults = {"epochs": 10, "g_bias": False}
    rundir.start_or_resume(run, {"epochs": 4, "g_bias": False}, defaults=defaults)  # Resumes.
    (run / "config.json").write_text('{"epochs": 4}')
    with pytest.raises(UserError, match=r"other settings \(g-bias: False there, True now\)"):
        rundir.start_or_resume(run, {"epochs": 4, "g_bias": True}, defaults=defaults)


def test_gaussian_trainer_that_diverges_stops_with_the_message_and_keeps_the_checkpoint(
        tmp_path, tfds_data_dir, capsys):
    from train import gaussian as cli
    from train._cli import run_main

    run, model = tmp_path / "run", tmp_path / "model"
    code = run_main(cli.main, ["--estimator", "sm", "--optimizer", "sgd", "--learning-rate", "1e30",
                               "--limit", "1000", "--epochs", "2", "--run-dir", str(run),
                               "--export-dir", str(model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: training diverged at epoch 1, step ")
    assert "; try a smaller --learning-rate (now 1e+30); the last good state (from the start) is kept in " \
           f"{run / 'checkpoints' / 'epoch-000000.weights.h5'}" in err[0]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch-000000.weights.h5"]
    kept = checkpoint_arrays(run / "checkpoints" / "epoch-000000.weights.h5")
    assert all(np.all(np.isfinite(v)) for v in kept.values())
    assert not model.exists() and not (run / "metrics.json").exists()  # Nothing exported or reported.


_EXPORT_SCRIPT = """
import sys
from energy_models import savedmodel
from energy_models.gaussian import export
from energy_models.gaussian.model import GridGaussian
model = GridGaussian(28, 28, 8)
savedmodel.save_atomically(export.gaussian_module(model, {}), sys.argv[1])
"""


def test_a_kill_during_export_leaves_no_directory_that_loads_as_a_model(tmp_path, capsys):
    """SIGKILL while `save_atomically` writes (its temporary folder exists): the model path stays absent,
    and `train.score` says it cannot load it, in one line."""
    import tensorflow as tf

    from train import score as score_cli
    from train._cli import run_main

    target = tmp_path / "model"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-c", _EXPORT_SCRIPT, str(target)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (not list(tmp_path.glob(".model.tmp-*")) and process.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.001)
    writing = process.poll() is None and bool(list(tmp_path.glob(".model.tmp-*")))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert writing, "the export finished or failed before it could be interrupted"
    assert not target.exists()
    with pytest.raises(Exception):
        tf.saved_model.load(str(target))
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.float32))
    code = run_main(score_cli.main, ["--model", str(target), "--patches", str(tmp_path / "x.npy"),
                                     "--figures-dir", str(tmp_path / "figs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot load a SavedModel from" in err[0]


def test_a_run_folder_with_a_killed_writers_temporary_is_still_recognised(tmp_path):
    """What a kill leaves in a run folder (a writer's temporary file) is the run's own, not the user's; the
    refusal of foreign files (which --overwrite does not lift) is not triggered by it."""
    from energy_models.experiments import rundir

    run = tmp_path / "run"
    rundir.start_or_resume(run, {"epochs": 4})
    for name in (".config.json.tmp-deadbeef", ".patches.npz.123.abcd1234.tmp", ".write-test-0123abcd"):
        (run / name).write_text("half")
    rundir.start_or_resume(run, {"epochs": 4})
    (run / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"holds other files \(notes.txt\); choose another --run-dir "
                                            r"\(--overwrite replaces only a run folder's own files\)"):
            rundir.start_or_resume(run, {"epochs": 4}, overwrite=overwrite)
    assert (run / "notes.txt").read_text() == "mine"
