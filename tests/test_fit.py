"""`energy_models.experiments.fit.fit_grid_gaussian`: a grid Gaussian fitted to an array from Python, against the exact
optimum and a known model; wrong arguments get a ValueError that names them."""

import dataclasses

import numpy as np
import pytest

import energy_models
from energy_models.experiments.fit import SETTINGS, fit_grid_gaussian
from energy_models.experiments.gaussian_config import GaussianConfig
from energy_models.gaussian.mle import fit_grid_mle
from energy_models.linalg import grid


@pytest.fixture(scope="module")
def known():
    """10,000 + 2,000 rows of a known 6 x 8 grid Gaussian with mean 0.5: (train, held-out, Lambda)."""
    rng = np.random.default_rng(0)
    pattern = grid.grid_pattern(6, 8, 4)
    lam = pattern.dense(rng.uniform(20.0, 40.0, (6, 8)),
                        pattern.edges_to_couplings(rng.uniform(-8.0, 2.0, pattern.num_edges)))
    assert np.linalg.eigvalsh(lam)[0] > 0
    x = 0.5 + rng.multivariate_normal(np.zeros(48), np.linalg.inv(lam), size=12_000)
    return x[:10_000].astype(np.float32), x[10_000:].astype(np.float32), lam


def test_mle_on_an_array_is_the_exact_optimum(known):
    x, held, _ = known
    model, report = fit_grid_gaussian(x, "mle", image_shape=(6, 8), heldout=held)
    centred = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    exact = fit_grid_mle(centred.T @ centred / len(x), grid.grid_pattern(6, 8, 4))
    np.testing.assert_allclose(model.precision_dense(), exact.precision, rtol=1e-5, atol=1e-4)
    assert report["newton_iterations"] == exact.iterations
    assert report["test_log_likelihood"] == pytest.approx(float(np.mean(model.log_prob(held))), abs=1e-3)
    assert model.sample(5, seed=1).shape == (5, 48)


@pytest.mark.parametrize("estimator, tolerance", [("nce", 0.08), ("sm", 0.05)])
def test_stochastic_estimators_on_an_array_recover_the_known_precision(known, estimator, tolerance):
    x, held, lam = known
    model, report = fit_grid_gaussian(x, estimator, image_shape=(6, 8), heldout=held, epochs=20)
    distance = np.linalg.norm(model.precision_dense() - lam) / np.linalg.norm(lam)
    assert distance < tolerance, distance
    if estimator == "nce":  # NCE's own log Z against the analytic one of the Lambda it learnt
        assert report["log_z_estimate"] == pytest.approx(report["log_z"], abs=0.5)


def test_square_rows_need_no_shape_and_the_top_level_exports_the_function(known):
    x = known[0][:, :36]  # any 36 columns: a 6 x 6 image for the fit's purposes
    model, _ = fit_grid_gaussian(x, "mle")
    assert (model.pattern.height, model.pattern.width, model.dim) == (6, 6, 36)
    assert energy_models.fit_grid_gaussian is fit_grid_gaussian


def test_wrong_arguments_are_named(known):
    x, held, _ = known
    cases = [
        (dict(x=x[:, :47]), "x.*not square.*image_shape"),
        (dict(x=x, image_shape=(6, 9)), r"image_shape \(6, 9\)"),
        (dict(x=x[0]), "x must be 2-D"),
        (dict(x=x[:1]), "x has 1 rows"),
        (dict(x=np.where(np.arange(48) == 3, np.nan, x)), "x contains NaN"),
        (dict(x=x, heldout=held[:, :40]), "heldout has rows of 40 values, but x has 48"),
        (dict(x=x, estimator="ml"), "estimator must be one of mle, nce, cnce, sm"),
        (dict(x=x, neighbourhood=6), "neighbourhood must be 4 or 8"),
        (dict(x=x, estimator="nce", epoch=3), "unknown setting.*epoch"),
        (dict(x=x, estimator="nce", epochs=0), "epochs must be"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("image_shape", (6, 8) if kwargs["x"].ndim == 2 and kwargs["x"].shape[-1] == 48 else None)
        with pytest.raises(ValueError, match=message):
            fit_grid_gaussian(**kwargs)


def test_every_setting_is_a_trainer_setting():
    assert set(SETTINGS) <= {field.name for field in dataclasses.fields(GaussianConfig)}


def test_deep_energy_model_on_an_array_returns_a_saved_model_that_scores_it(tmp_path):
    """A small run (8 x 8 rows from a smooth random field, 3 epochs): the returned SavedModel keeps the
    contract, states the rows' shape, and scores the held-out rows as the run's metrics say."""
    from energy_models.experiments.fit import fit_deep_energy_model

    rng = np.random.default_rng(0)
    field = rng.normal(size=(3000, 12, 12)).cumsum(1).cumsum(2)[:, :8, :8]
    rows = ((field - field.min()) / (field.max() - field.min())).reshape(3000, 64).astype(np.float32)
    model, metrics = fit_deep_energy_model(rows[:2500], heldout=rows[2500:], seed=1, log_dir=tmp_path,
                                           epochs=3, batch_size=100, hidden=16, latents=8)
    import json

    info = json.loads(model.info().numpy())
    assert (info["height"], info["width"], info["channels"], info["dim"]) == (8, 8, 1, 64)
    scores = model.unnormalized_log_prob(rows[2500:]).numpy()
    assert np.all(np.isfinite(scores)) and model.sample(4, 0).shape == (4, 64)
    assert (tmp_path / "run" / "metrics.json").exists() and metrics["patch_shape"][:2] == [8, 8]
    with pytest.raises(ValueError, match="unknown setting.*epoch"):
        fit_deep_energy_model(rows, epoch=3)
    with pytest.raises(ValueError, match="batch_size"):  # the trainer's own check, in this function's words
        fit_deep_energy_model(rows[:50], heldout=rows[2500:], log_dir=tmp_path / "small", batch_size=100)


def test_models_name_a_wrong_input_width():
    """Not TensorFlow's 'Matrix size-incompatible': the argument and both widths."""
    from energy_models.dem.contrastive_divergence import ContrastiveDivergence
    from energy_models.dem.energy import DEMEnergy
    from energy_models.gaussian.model import GridGaussian

    gaussian = GridGaussian(6, 8)
    dem = ContrastiveDivergence(DEMEnergy(4, 3, 1.0), dim=48, mcmc="mala", mcmc_steps=1, step_size=1e-3, seed=0)
    for model in (gaussian, dem):
        with pytest.raises(ValueError, match="x has rows of 40 values, but the model's images have 48"):
            model(np.zeros((5, 40), np.float32))
        with pytest.raises(ValueError, match=r"x must be \[n, 48\]"):
            model(np.zeros(48, np.float32))
    with pytest.raises(ValueError, match="x has rows of 40 values"):
        gaussian.log_prob(np.zeros((5, 40), np.float32))
    assert gaussian.unnormalized_log_prob(np.zeros((5, 48), np.float32)).shape == (5,)
