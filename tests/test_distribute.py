"""--distribute: the same update on two replicas as on one device, and one-line errors for bad setups."""

import json
import os
import subprocess
import sys

import pytest

from energy_models.errors import UserError
from energy_models.training import distribute
from tests.conftest import ROOT, checkpoint_arrays


def test_mirrored_training_on_two_logical_cpus_equals_one_device(tmp_path):
    """tests/mirrored_vs_one_device.py trains score matching and the deep energy model on one device and
    on two replicas (two logical CPUs, a fresh process) and reports the largest parameter differences
    beside how far training moved the parameters."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "tests.mirrored_vs_one_device", str(tmp_path)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # Score matching draws no noise: float32 round-off only.
    assert report["sm.precision"]["max_abs_difference"] < 1e-5
    assert report["sm.precision"]["max_abs_change"] > 0.1
    # The deep energy model's replicas draw their own MCMC noise of std 1e-5 (step size 1e-10): the
    # parameters agree to 1% of what training changed; a gradient summed over replicas without the 1/R
    # scaling measured a difference as large as the change itself.
    for name in ("V", "W", "b", "c"):
        entry = report[f"dem.{name}"]
        assert entry["max_abs_change"] > 0 and entry["max_abs_difference"] < 0.01 * entry["max_abs_change"], name
    assert report["dem.chains"]["max_abs_difference"] < 1e-3 < report["dem.chains"]["max_abs_change"]
    end = report["end_to_end"]
    assert end["dem"]["replicas"] == 2 and end["dem"]["exported_scores_finite"]
    if os.environ.get("TFDS_DATA_DIR"):
        assert end["gaussian"]["replicas"] == 2


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_on_one_machine_train_like_one_device(tmp_path, tfds_data_dir, capsys):
    """`--distribute multiworker`: two worker processes configured by TF_CONFIG (as on two machines)
    end with the parameters of a one-device run of the same command."""
    import numpy as np

    from train import gaussian as cli
    from train._cli import run_main

    flags = ["--estimator", "sm", "--limit", "1000", "--batch-size", "100", "--epochs", "2"]
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "3", "TFDS_DATA_DIR": tfds_data_dir}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "train.gaussian", *flags, "--distribute", "multiworker",
             "--run-dir", str(tmp_path / f"worker{index}"), "--export-dir", str(tmp_path / f"model{index}")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    assert run_main(cli.main, flags + ["--run-dir", str(tmp_path / "one"), "--export-dir",
                                       str(tmp_path / "one_model")]) == 0
    capsys.readouterr()

    def arrays(run):
        return checkpoint_arrays(tmp_path / run / "checkpoints" / "epoch-000002.weights.h5")

    one, first, second = arrays("one"), arrays("worker0"), arrays("worker1")
    for name in one:
        np.testing.assert_allclose(first[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)
    metrics = json.loads((tmp_path / "worker0" / "metrics.json").read_text())
    assert metrics["replicas"] == 2


@pytest.mark.parametrize("tf_config, message", [
    (None, "--distribute multiworker needs the TF_CONFIG environment variable: set TF_CONFIG on every machine"),
    ("{not json", "TF_CONFIG is not a usable cluster description"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG is not a usable cluster description"),
])
def test_multiworker_without_a_usable_tf_config_is_one_line(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError, match=message):
        distribute.strategy_for("multiworker", 256)


def test_unknown_strategy_and_mle_with_a_strategy_are_refused():
    from energy_models.experiments.gaussian_config import GaussianConfig

    with pytest.raises(UserError, match="--distribute must be one of none, mirrored, multiworker, got tpu"):
        distribute.strategy_for("tpu")
    with pytest.raises(UserError, match="--distribute applies to the stochastic estimators"):
        GaussianConfig(estimator="mle", distribute="mirrored").resolve()
