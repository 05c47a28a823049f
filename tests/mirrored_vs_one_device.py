"""Run by tests/test_distribute.py in a fresh process: two logical CPU devices must exist before TensorFlow
initialises, which the test process (already initialised) cannot arrange.

Trains each model for a few steps on one device and under MirroredStrategy over the two logical CPUs,
from the same start and on the same global batches, and prints {name: max |difference|} of the final
parameters as JSON, beside how far training moved them from the start (the scale a wrong update shows at).

usage: python -m tests.mirrored_vs_one_device OUT_DIR
"""

import json
import pathlib
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from energy_models.data.arrays import ArrayData  # noqa: E402
from energy_models.data.batches import epoch_batches  # noqa: E402
from energy_models.experiments import dem, gaussian  # noqa: E402
from energy_models.experiments.dem_config import DEMConfig
from energy_models.experiments.gaussian_config import GaussianConfig
from energy_models.training import distribute  # noqa: E402


def score_matching(strategy, out):
    """Score matching has no randomness in its step: one device and two replicas must agree exactly."""
    from energy_models.gaussian.model import GridGaussian
    from energy_models.gaussian.score_matching import fit_score_matching

    rng = np.random.default_rng(0)
    x = (rng.random((640, 784)) + 0.3 * rng.standard_normal((640, 784))).astype(np.float32)
    data = ArrayData(x[:512], x[512:])
    config = GaussianConfig(estimator="sm", epochs=2, batch_size=128, learning_rate=0.01,
                                     run_dir=str(out), export_dir=str(out / "model")).resolve()
    target = GridGaussian(28, 28, 4)
    with strategy.scope():
        extras = fit_score_matching(config, data, target, tf.summary.create_noop_writer())
    assert extras["steps"] == 8
    start = np.diag(1.0 / np.diag(data.covariance()))  # The moment-matched start (`energy_models.gaussian.trainable`).
    return {"precision": (start, target.precision_dense())}


def deep_energy_model(strategy, out):
    """Persistent CD with Langevin moves of step 1e-10: the replicas' MCMC noise (their own seeds, by
    design) moves the chains by ~1e-5, so SGD's parameters must agree to about that; a gradient summed
    without the 1/R scaling, or chains not split per replica, differs by orders of magnitude more."""
    rng = np.random.default_rng(1)
    x = rng.random((256, 784)).astype(np.float32)
    config = DEMConfig(whiten="none", method="cd", mcmc="langevin", mcmc_steps=2, step_size=1e-10, hidden=8,
                           latents=8, batch_size=64, optimizer="sgd", learning_rate=0.05,
                           z_sampling="mean").resolve()
    with strategy.scope():
        model = dem.build_model(config, x, None)
    names = ("V", "W", "b", "c")
    start = {name: np.asarray(getattr(model.energy, name)).copy() for name in names}
    model.fit(epoch_batches(x, 64, seed=0), epochs=1, steps_per_epoch=4, verbose=0)
    return {name: (start[name], np.asarray(getattr(model.energy, name))) for name in names} | \
        {"chains": (x[:64], np.asarray(model.chains))}


def end_to_end(out):
    """Both trainers' whole path (fit, evaluation, figures, export) under --distribute mirrored."""
    import os

    result = {}
    if os.environ.get("TFDS_DATA_DIR"):
        metrics = gaussian.train_and_evaluate(GaussianConfig(
            estimator="sm", distribute="mirrored", limit=1000, epochs=1, batch_size=100,
            run_dir=str(out / "gaussian"), export_dir=str(out / "gaussian_model")))
        result["gaussian"] = {"replicas": metrics["replicas"], "test_log_likelihood": metrics["test_log_likelihood"]}
    metrics = dem.train_and_evaluate(DEMConfig(
        images=os.environ.get("ENERGY_MODELS_TEST_PHOTOS"), num_patches=1200, distribute="mirrored", method="cd",
        mcmc_steps=1, hidden=8, latents=8, epochs=1, batch_size=64, sample_sweeps=1,
        run_dir=str(out / "dem"), export_dir=str(out / "dem_model")))
    module = tf.saved_model.load(metrics["export_dir"])
    result["dem"] = {"replicas": metrics["replicas"], "heldout_log_prob_mean": metrics["heldout_log_prob_mean"],
                     "exported_scores_finite": bool(np.all(np.isfinite(
                         module.unnormalized_log_prob(np.full((3, 784), 0.5, np.float32)).numpy())))}
    return result


def main(out):
    out = pathlib.Path(out)
    one = tf.distribute.get_strategy()
    mirrored = distribute.strategy_for("mirrored", 128)
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    report = {}
    for name, run in (("sm", score_matching), ("dem", deep_energy_model)):
        a, b = run(one, out / f"{name}-one"), run(mirrored, out / f"{name}-mirrored")
        for key, (start, end) in a.items():
            report[f"{name}.{key}"] = {"max_abs_difference": float(np.max(np.abs(end - b[key][1]))),
                                       "max_abs_change": float(np.max(np.abs(end - start)))}
    report["end_to_end"] = end_to_end(out)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
