"""Benchmark of issue 7: what checkpointing costs each trainer at its defaults (one checkpoint per epoch).

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
        python -m bench.bench_checkpoints --images ../shared/data/photos [--epochs 2] [--repeats 3]

Runs each trainer (sm, cnce, nce on full MNIST; the deep energy model on 50,000 patches) for `--epochs`
epochs at its default settings, `--repeats` times in fresh run folders, and prints one JSON line per
trainer: the wall time spent writing checkpoints (the start, then one per epoch: epochs + 1 saves)
against the training wall time of `model.fit`, as medians over the repeats. Writing the start
checkpoint is a cost per run, not per epoch, so the ratio over a short run overstates the cost of a
long one; `per_epoch_ratio` is (seconds per save) / (seconds per epoch).
"""

import argparse
import json
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # As train/gaussian.py sets it.

from bench._common import machine, peak_rss_mb  # noqa: E402


def run_gaussian(estimator, epochs, root):
    from energy_models.experiments import gaussian
    from energy_models.experiments.gaussian_config import GaussianConfig

    metrics = gaussian.train_and_evaluate(GaussianConfig(
        estimator=estimator, epochs=epochs, run_dir=os.path.join(root, "run"),
        export_dir=os.path.join(root, "model")))
    return metrics["checkpoint_seconds"], metrics["fit_seconds"]


def run_dem(epochs, root, images):
    from energy_models.experiments import dem
    from energy_models.experiments.dem_config import DEMConfig

    metrics = dem.train_and_evaluate(DEMConfig(images=images, epochs=epochs,
                                                   run_dir=os.path.join(root, "run"),
                                                   export_dir=os.path.join(root, "model")))
    return metrics["checkpoint_seconds"], metrics["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", default=None, help="photographs for the deep energy model")
    parser.add_argument("--only", nargs="*", default=["sm", "cnce", "nce", "dem"])
    args = parser.parse_args()
    for name in args.only:
        saves, fits = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as root:
                save, fit = (run_dem(args.epochs, root, args.images) if name == "dem"
                             else run_gaussian(name, args.epochs, root))
            saves.append(save)
            fits.append(fit)
        save, fit = statistics.median(saves), statistics.median(fits)
        per_save, per_epoch = save / (args.epochs + 1), fit / args.epochs
        print(json.dumps({"bench": f"checkpoints_{name}", "epochs": args.epochs, "repeats": args.repeats,
                          "checkpoint_s": save, "fit_s": fit, "ratio": save / fit,
                          "per_save_s": per_save, "per_epoch_s": per_epoch,
                          "per_epoch_ratio": per_save / per_epoch, "checkpoint_s_all": saves,
                          "fit_s_all": fits, "peak_rss_mb": peak_rss_mb(), "machine": machine()}),
              flush=True)


if __name__ == "__main__":
    main()
