"""SavedModels exported by an older version of the package still load and score the same.

saved_models/reference/ holds two small models exported at commit bd985bd, before the package's modules
moved between folders (gaussian-8x8-mle-n4: grid Gaussian, exact MLE; dem-8x8-cd: deep energy model
trained by contrastive divergence), and expected.json with what they computed then on 16 fixed rows
(saved_models/reference/export_reference.py made all three). Each model is loaded with
`tf.saved_model.load` and with the public `energy_models.load_model`, and every endpoint of the contract
(unnormalized_log_prob, log_prob, mean, info, sample) must give the stored numbers to float32 tolerance;
`python -m train.score` (run in this process through `train.score.main`) must print the stored table for
the Gaussian.
"""

import json
import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import energy_models

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "saved_models" / "reference"
EXPECTED = json.loads((REFERENCE / "expected.json").read_text())
MODELS = sorted(EXPECTED["models"])
GAUSSIAN = "gaussian-8x8-mle-n4"
RTOL, ATOL = 1e-5, 1e-4  # float32 round-off on values of size 1 to 1000


def load_with(loader, name):
    path = REFERENCE / name
    if loader == "tf.saved_model.load":
        return tf.saved_model.load(str(path))
    return energy_models.load_model(path).module


@pytest.fixture(scope="module", params=[(name, loader) for name in MODELS
                                        for loader in ("tf.saved_model.load", "energy_models.load_model")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def model(request):
    name, loader = request.param
    return EXPECTED["models"][name], load_with(loader, name)


def reference_rows():
    rows = np.asarray(EXPECTED["inputs"]["rows"], np.float32)
    # The rows are stored; they must also still be what the recorded generator makes.
    regenerated = np.random.default_rng(0).uniform(0, 1, rows.shape).astype(np.float32)
    np.testing.assert_array_equal(rows, regenerated)
    return rows


def assert_matches(actual, expected):
    """Per-row values against stored ones, where a stored null means NaN (a model without log Z)."""
    actual = np.asarray(actual, np.float64)
    nan = np.array([v is None for v in expected])
    assert actual.shape == nan.shape
    np.testing.assert_array_equal(np.isnan(actual), nan)
    stored = np.array([math.nan if v is None else v for v in expected])
    np.testing.assert_allclose(actual[~nan], stored[~nan], rtol=RTOL, atol=ATOL)


def test_reference_files_present():
    assert MODELS == ["dem-8x8-cd", GAUSSIAN]
    for name in MODELS:
        assert (REFERENCE / name / "saved_model.pb").is_file()
        assert (REFERENCE / name / "variables" / "variables.index").is_file()
    assert EXPECTED["commit"] == "bd985bd"


@pytest.mark.parametrize("name", MODELS)
def test_load_model_reads_the_contract(name):
    """What the public loader reports about an old model: its info(), width, patch shape, normalisation."""
    loaded = energy_models.load_model(REFERENCE / name)
    expected = EXPECTED["models"][name]
    assert loaded.info == expected["info"]
    assert loaded.dim == len(expected["mean"]) == 64
    assert tuple(loaded.shape) == (8, 8, 1)
    assert loaded.normalised == (expected["info"]["log_z"] is not None)


def test_unnormalized_log_prob(model):
    expected, module = model
    assert_matches(module.unnormalized_log_prob(tf.constant(reference_rows())).numpy(),
                   expected["unnormalized_log_prob"])


def test_log_prob(model):
    expected, module = model
    log_p = module.log_prob(tf.constant(reference_rows())).numpy()
    assert_matches(log_p, expected["log_prob"])
    if expected["info"]["log_z"] is None:
        assert np.all(np.isnan(log_p))  # contrastive divergence stores no log Z
    else:
        assert np.all(np.isfinite(log_p))


def test_mean(model):
    expected, module = model
    mean = module.mean().numpy()
    np.testing.assert_allclose(mean, expected["mean"], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(np.sum(mean, dtype=np.float64), expected["mean_sum"], rtol=RTOL, atol=ATOL)


def test_info(model):
    expected, module = model
    assert json.loads(module.info().numpy().decode()) == expected["info"]


def test_sample(model):
    expected, module = model
    stored = expected["sample"]
    sample = module.sample(tf.constant(stored["n"], tf.int32), tf.constant(stored["seed"], tf.int32)).numpy()
    assert list(sample.shape) == stored["shape"]
    assert np.all(np.isfinite(sample))
    np.testing.assert_allclose(np.sum(sample, dtype=np.float64), stored["sum"], rtol=RTOL, atol=ATOL)


def test_train_score_on_reference_gaussian(tmp_path):
    """`python -m train.score` scores the old Gaussian on an .npy of the rows and on its own samples."""
    from train import score

    stored = EXPECTED["models"][GAUSSIAN]["train_score"]
    rows_path = tmp_path / stored["args"]["rows_file"]
    np.save(rows_path, reference_rows())
    model_dir = str(REFERENCE / GAUSSIAN)
    report_path = tmp_path / "score.json"
    assert score.main(["--model", model_dir, "--patches", str(rows_path), "--gaussian-samples", model_dir,
                       "--num-patches", str(stored["args"]["num_patches"]), "--seed", str(stored["args"]["seed"]),
                       "--json", str(report_path), "--figures-dir", str(tmp_path / "figures")]) == 0
    (report,) = json.loads(report_path.read_text())["models"]
    assert report["normalised"] is True
    assert len(report["sets"]) == len(stored["sets"])
    for got, want in zip(report["sets"], stored["sets"]):
        assert got["n"] == want["n"]
        np.testing.assert_allclose([got["mean"], got["std"]], [want["mean"], want["std"]], rtol=RTOL)
        if want["auroc_vs_first"] is None:
            assert got["auroc_vs_first"] is None
        else:
            assert got["auroc_vs_first"] == pytest.approx(want["auroc_vs_first"], abs=1e-9)
