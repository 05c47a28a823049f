"""GridGaussian: normaliser, sampling moments, positive-definiteness errors, SavedModel in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from energy_models import savedmodel
from energy_models.errors import NotPositiveDefiniteError, UserError
from energy_models.gaussian import export
from energy_models.gaussian.model import GridGaussian
from energy_models.linalg.positive_definite import checked_cholesky


def fitted_model(height=4, width=5, neighbourhood=8, seed=0):
    rng = np.random.default_rng(seed)
    model = GridGaussian(height, width, neighbourhood)
    pattern = model.pattern
    couplings = rng.uniform(-0.5, 0.5, size=pattern.masks.shape) * pattern.masks
    lam = pattern.dense(np.full((height, width), 3.0), couplings)
    lam += (0.5 - np.linalg.eigvalsh(lam)[0]) * np.eye(pattern.dim)
    model.precision_layer.set_dense(lam)
    model.set_mean(rng.uniform(0, 1, size=pattern.dim))
    return model, model.precision_dense()


def test_log_prob_matches_scipy():
    model, lam = fitted_model()
    mu = np.asarray(model.mu, np.float64)
    x = np.random.default_rng(1).normal(size=(6, 20)).astype(np.float32)
    expected = scipy.stats.multivariate_normal(mu, np.linalg.inv(lam)).logpdf(x)
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5)
    d = 20
    log_z = d / 2 * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(np.linalg.inv(lam))[1]
    assert model.log_normalizer() == pytest.approx(log_z, rel=1e-10)


def test_sample_moments_match_mean_and_inverse_precision():
    model, lam = fitted_model()
    n = 40_000
    x = model.sample(n, seed=3).astype(np.float64)
    sigma = np.linalg.inv(lam)
    # Standard error of a sample mean is sqrt(Sigma_ii / n); of a sample covariance entry about
    # sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / n). Five standard errors: false alarms ~ 1e-6 per entry.
    se_mean = np.sqrt(np.diag(sigma) / n)
    assert np.all(np.abs(x.mean(0) - np.asarray(model.mu)) < 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma ** 2) / n)
    assert np.all(np.abs(np.cov(x.T, bias=True) - sigma) < 5 * se_cov)


def test_indefinite_precision_errors_everywhere_it_matters(tmp_path):
    model = GridGaussian(3, 3, 4)
    lam = model.pattern.dense(np.full((3, 3), 1.0), -0.9 * model.pattern.masks)  # Not PD.
    model.precision_layer.set_dense(lam)
    smallest = np.linalg.eigvalsh(lam)[0]
    message = rf"not positive definite \(smallest eigenvalue {smallest:.4g}\)"
    for action in (model.log_normalizer, lambda: model.sample(2),
                   lambda: export.gaussian_module(model, {})):
        with pytest.raises(NotPositiveDefiniteError, match=message):
            action()
    with pytest.raises(NotPositiveDefiniteError, match="non-finite entries"):
        checked_cholesky(np.full((2, 2), np.nan))
    assert not (tmp_path / "model").exists()


def test_export_target_holding_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    """Refused with and without --overwrite, which replaces only a SavedModel (issue 18, item 2)."""
    with pytest.raises(UserError, match=r"holds something other than a SavedModel \(notes.txt\); choose another"):
        savedmodel.check_export_target(tmp_path)
    with pytest.raises(UserError, match=r"--overwrite replaces only a SavedModel"):
        savedmodel.check_export_target(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


FRESH_PROCESS = r"""
import json, sys
import numpy as np
# As if the project were not installed (the set-up command installs it): any import of it fails, so the
# SavedModel must load and run on TensorFlow alone.
sys.modules["energy_models"] = None
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
s = m.sample(tf.constant(50000), tf.constant(7)).numpy().astype(np.float64)
print(json.dumps({"log_prob": m.log_prob(x).numpy().tolist(),
                  "unnormalized": m.unnormalized_log_prob(x).numpy().tolist(),
                  "precision": m.precision().numpy().tolist(), "mean": m.mean().numpy().tolist(),
                  "sample_mean": s.mean(0).tolist(), "sample_cov": np.cov(s.T, bias=True).tolist(),
                  "info": json.loads(m.info().numpy().decode())}))
"""


def test_saved_model_in_fresh_process_matches_in_memory_model(tmp_path):
    model, lam = fitted_model()
    path = savedmodel.save_atomically(export.gaussian_module(model, {"estimator": "test"}), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # No temporary left behind.
    x = np.random.default_rng(5).uniform(0, 1, size=(8, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script), path, str(tmp_path / "x.npy")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["log_prob"], model.log_prob(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["unnormalized"], np.asarray(model.unnormalized_log_prob(x)), rtol=1e-5)
    np.testing.assert_allclose(got["precision"], lam, rtol=1e-6)
    np.testing.assert_allclose(got["mean"], np.asarray(model.mu), rtol=1e-7)
    sigma = np.linalg.inv(lam)
    se = np.sqrt(np.diag(sigma) / 50000)
    assert np.all(np.abs(np.array(got["sample_mean"]) - np.asarray(model.mu)) < 5 * se)
    np.testing.assert_allclose(got["sample_cov"], sigma, atol=0.02)
    assert got["info"]["kind"] == "grid_gaussian" and got["info"]["estimator"] == "test"
    # Re-exporting over an existing SavedModel replaces it atomically.
    savedmodel.save_atomically(export.gaussian_module(model, {"estimator": "again"}), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["load.py", "m", "x.npy"]
