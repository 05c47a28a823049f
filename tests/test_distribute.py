"""--distribute: the same update on two replicas as on one device, and one-line errors for bad setups."""

import json
import os
import subprocess
import sys

import pytest

from energy_models import distribute
from energy_models.errors import UserError
from tests.conftest import ROOT


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
    from energy_models.experiments.gaussian import GaussianConfig

    with pytest.raises(UserError, match="--distribute must be one of none, mirrored, multiworker, got tpu"):
        distribute.strategy_for("tpu")
    with pytest.raises(UserError, match="--distribute applies to the stochastic estimators"):
        GaussianConfig(estimator="mle", distribute="mirrored").resolve()
