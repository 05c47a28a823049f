"""Scoring held-out sets with SavedModels: mean and std of log p per set, AUROC against the first set.

`score(config)` is what `python -m train.score` runs.
"""

import dataclasses
import pathlib

import numpy as np

from energy_models import figures, rundir, scoring
from energy_models.errors import UserError


def _help(text, default=None, **meta):
    return dataclasses.field(default=default, metadata={"help": text, **meta})


@dataclasses.dataclass
class ScoreConfig:
    """Every setting of `python -m train.score` (each field is a command-line flag)."""

    model: list = _help("a SavedModel folder to score with (repeat the flag for several models)",
                        action="append", metavar="DIR")
    images: str = _help("score patches cut from these photographs (folder, glob or file)")
    patches: str = _help("score a saved patch set (.npz: its held-out split) or an .npy array [n, 784]")
    mnist: str = _help("score MNIST digits (pixels / 255) of this split", nargs="?", const="test",
                       choices=("train", "test"))
    gaussian_samples: str = _help("score samples drawn from this Gaussian SavedModel", metavar="DIR")
    num_patches: int = _help("number of patches (and of samples, and at most of MNIST digits) per set",
                             default=10_000)
    seed: int = _help("seed of patch positions and samples", default=0)
    data_dir: str = _help("tensorflow-datasets data folder for --mnist")
    json: str = _help("write the tables as JSON to this file")
    figures_dir: str = _help("where the histograms of log p go", default="runs/score")

    def resolve(self):
        if not self.model:
            raise UserError("no model given; pass --model DIR (a SavedModel from train.gaussian or "
                            "train.dem)")
        if self.num_patches < 1:
            raise UserError(f"--num-patches must be a positive integer, got {self.num_patches}")
        if not (self.images or self.patches or self.mnist or self.gaussian_samples):
            raise UserError("nothing to score; pass at least one of --images, --patches, --mnist, "
                            "--gaussian-samples")
        return self


def load_sets(config, dim):
    """The named sets to score, in a fixed order (natural images first: the AUROC reference)."""
    sets = {}
    if config.images:
        from energy_models.data import images, patches

        loaded = images.load_images(config.images)
        sets["photos"] = patches.extract_patches(loaded, config.num_patches, seed=config.seed)[0]
    if config.patches:
        from energy_models.data.patches import load_patch_array

        sets[f"patches:{pathlib.Path(config.patches).name}"] = load_patch_array(config.patches)
    if config.mnist:
        from energy_models.data.mnist import load_mnist_images

        digits = load_mnist_images(config.mnist, config.data_dir)[:config.num_patches]
        sets[f"mnist-{config.mnist}"] = digits.reshape(len(digits), -1).astype(np.float32) / 255.0
    if config.gaussian_samples:
        gaussian = scoring.load_model(config.gaussian_samples)
        sets["gaussian-samples"] = gaussian.module.sample(config.num_patches, config.seed).numpy()
    return {name: scoring.check_rows(x, dim, f"set {name}") for name, x in sets.items()}


def score(config):
    """Scores every set with every model; prints nothing, returns the report dict (also JSON/PNG)."""
    config.resolve()
    models = [scoring.load_model(path) for path in config.model]
    report = {"models": []}
    cached_sets = {}
    for model in models:
        if model.dim not in cached_sets:
            cached_sets[model.dim] = load_sets(config, model.dim)
        sets = cached_sets[model.dim]
        scores = {name: scoring.score_samples(model, x, normalised=model.normalised)
                  for name, x in sets.items()}
        histogram = pathlib.Path(config.figures_dir) / f"log_p_{_slug(model.path)}.png"
        figures.histograms(scores, histogram, title=f"log p under {model.path}",
                           xlabel="log p(x)" if model.normalised else "unnormalised log p(x)")
        report["models"].append({"model": model.path, "info": model.info,
                                 "normalised": model.normalised, "histogram": str(histogram),
                                 "sets": scoring.summarise(scores)})
    if config.json:
        rundir.write_json_atomically(config.json, report)
    return report


def _slug(path):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in pathlib.Path(path).name) or "model"


def table_lines(report):
    """The human-readable tables, one per model."""
    lines = []
    for entry in report["models"]:
        kind = "log p" if entry["normalised"] else "unnormalised log p (no log Z stored)"
        lines.append(f"{entry['model']}  [{kind}]")
        lines.append(f"  {'set':<28} {'n':>7} {'mean':>11} {'std':>9} {'AUROC vs first':>15}")
        for row in entry["sets"]:
            auc = "" if row["auroc_vs_first"] is None else f"{row['auroc_vs_first']:.4f}"
            lines.append(f"  {row['set']:<28} {row['n']:>7} {row['mean']:>11.2f} {row['std']:>9.2f} "
                         f"{auc:>15}")
    return lines
