"""The tutorials in docs/tutorials run as notebooks (executed, every cell) and reproduce the numbers the
README quotes, to the tolerance stated there."""

import importlib.util
import json
import os
import pathlib
import re

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorials"


def readme_table():
    """README's "Tutorials" table as {(tutorial, row number within it): (values, tolerances)}, the numbers
    of each cell in order: the tests check against what the README says, not a copy of it."""
    text = (TUTORIALS.parents[1] / "README.md").read_text()
    section = text.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    number = re.compile(r"[-+]?\d+(?:\.\d+)?")
    rows, seen = {}, {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            k = int(cells[0])
            seen[k] = seen.get(k, 0) + 1
            values = [float(v) for v in number.findall(cells[2])]
            tolerances = [float(v) for v in number.findall(cells[3].replace("+-", ""))]
            rows[(k, seen[k])] = (values, tolerances)
    return rows


def _render():
    spec = importlib.util.spec_from_file_location("render", TUTORIALS / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tutorial(name, tmp_path, monkeypatch, **env):
    """Executes a tutorial in a Jupyter kernel; returns (its results JSON, the executed notebook)."""
    monkeypatch.setenv("TUTORIAL_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TUTORIAL_RESULTS", str(tmp_path / "results.json"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = _render().execute(TUTORIALS / name)
    return json.loads((tmp_path / "results.json").read_text()), notebook


def figures(notebook):
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


def test_tutorial_1_grid_gaussian_estimators_against_the_exact_answer(tmp_path, monkeypatch):
    results, notebook = run_tutorial("01_grid_gaussian.py", tmp_path, monkeypatch)
    assert figures(notebook) == 2
    table = readme_table()
    distances, (tol,) = table[(1, 1)]
    for estimator, distance in zip(("mle", "nce", "cnce", "sm"), distances, strict=True):
        assert results[estimator]["distance_to_truth"] == pytest.approx(distance, abs=tol), estimator
    (error,), (tol,) = table[(1, 2)]
    nce = results["nce"]
    assert nce["log_z_estimate"] - nce["log_z_analytic"] == pytest.approx(error, abs=tol)
    # Maximum likelihood is the best held-out fit of the four here (its rows are the truth's).
    fits = [results[estimator]["test_log_likelihood"] for estimator in ("mle", "nce", "cnce", "sm")]
    assert fits[0] >= max(fits) - 1e-6


@pytest.mark.skipif(not os.environ.get("ENERGY_MODELS_TEST_PHOTOS"),
                    reason="the README's numbers are for the shared photographs (ENERGY_MODELS_TEST_PHOTOS)")
def test_tutorials_2_and_3_deep_energy_model_and_its_likelihood(tmp_path, monkeypatch):
    photos = os.environ["ENERGY_MODELS_TEST_PHOTOS"]
    results, notebook = run_tutorial("02_deep_energy_model.py", tmp_path / "2", monkeypatch, PHOTOS=photos)
    assert figures(notebook) == 3
    table = readme_table()
    (localisation, kurtosis), (tol_localisation, tol_kurtosis) = table[(2, 1)]
    assert results["filter_localisation"] == pytest.approx(localisation, abs=tol_localisation)
    assert results["kurtosis_ratio"] == pytest.approx(kurtosis, rel=tol_kurtosis / 100)
    results, notebook = run_tutorial("03_likelihood_and_auroc.py", tmp_path / "3", monkeypatch, PHOTOS=photos)
    assert figures(notebook) == 1
    # Forward AIS is a lower bound and reverse an upper one: they must agree within the stated gap.
    (gap,), (limit,) = table[(3, 1)]
    assert abs(results["log_z_reverse"] - results["log_z_forward"]) < limit
    (gain,), (tol,) = table[(3, 2)]
    assert results["heldout_log_p"] - results["full_gaussian_log_p"] == pytest.approx(gain, abs=tol)
    (value,), (tol,) = table[(3, 3)]
    assert results["aurocs"]["grid Gaussian samples"] == pytest.approx(value, abs=tol)
    (rhat,), (limit,) = table[(3, 4)]
    assert results["rhat_forward"] < limit
