"""Helpers of the benchmark scripts (run with `python3 -m pytest -q bench/tests`; the library's tests do not
import bench)."""


import numpy as np
import tensorflow as tf

from energy_models.dem.energy import DEMEnergy


def test_ranking_probe_loss_and_training_on_a_known_ranking():
    """bench.dem_ranking_probe: the loss is the logistic surrogate of 1 - AUROC, and training finds a ranking
    the Gaussian term alone gets backwards (positives at +-3 e_1, negatives N(0, I) around the model's mean)."""
    from bench.dem_ranking_probe import pairwise_ranking_loss, train_ranker
    from energy_models.evaluation.metrics import auroc

    a, b = np.array([0.5, -1.0, 2.0]), np.array([0.0, 1.5])
    expected = np.mean(np.log1p(np.exp(b[None, :] - a[:, None])))
    np.testing.assert_allclose(pairwise_ranking_loss(tf.constant(a), tf.constant(b)).numpy(), expected, rtol=1e-12)

    rng = np.random.default_rng(0)
    positive = rng.normal(0, 0.3, (2000, 4)).astype(np.float32)
    positive[:, 0] += np.where(rng.random(2000) < 0.5, -3.0, 3.0)
    negative = rng.normal(0, 1.0, (2000, 4)).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    energy = DEMEnergy(8, 8, 1.0, use_bias=True)
    energy.build((None, 4))
    before = auroc(energy(positive).numpy(), energy(negative).numpy())
    train_ranker(energy, positive, negative, steps=600, batch_size=128, learning_rate=3e-2, seed=0)
    after = auroc(energy(positive).numpy(), energy(negative).numpy())
    assert before < 0.2 and after > 0.9, (before, after)


def test_exercise_filters_figure_puts_each_runs_filters_in_one_grey_panel(tmp_path):
    """bench.dem_exercises.filters_figure: one panel per run that has figures/filters.png, grey PNG."""
    from PIL import Image

    from bench.dem_exercises import filters_figure

    rows = [{"method": "dsm", "whiten": w, "sigma": s, "filter_localisation": 0.6, "kurtosis_ratio": 2.0}
            for w, s in (("zca", 1.0), ("none", 0.1))]
    for row in rows:
        folder = tmp_path / f"dem-{row['whiten']}-sigma{row['sigma']:g}-dsm" / "figures"
        folder.mkdir(parents=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(folder / "filters.png")
    filters_figure(rows, tmp_path, tmp_path / "two.png")
    filters_figure(rows + [{"method": "dsm", "whiten": "pca", "sigma": 1.0, "filter_localisation": 0.6,
                            "kurtosis_ratio": 2.0}], tmp_path, tmp_path / "still_two.png")
    filters_figure(rows[:1], tmp_path, tmp_path / "one.png")
    two, still_two, one = (Image.open(tmp_path / f"{n}.png") for n in ("two", "still_two", "one"))
    assert two.mode == "L" and two.size == still_two.size
    assert two.size[0] > 1.7 * one.size[0]
