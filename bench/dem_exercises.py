"""Exercise 2's four runs (sigma in {1, 0.1}, ZCA-whitened and raw patches) for each training method,
with what the models learnt and their AIS-normalised likelihoods; prints and saves a table.

Usage (from the project root):
    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m bench.dem_exercises --images ../shared/data/photos \
        [--methods dsm,cd] [--ais-steps 2500] [--results bench/results/dem_exercises.json]

All runs use the same patch file (cut once, 50,000 patches, seed 0) and `python -m train.dem`'s defaults
otherwise (so each method gets its own per-method defaults); each writes ROOT/dem-WHITEN-sigmaSIGMA-METHOD
(figures, metrics.json) and a SavedModel under ROOT/models. Per run the table has: wall time of training,
the median localisation and response kurtosis of the rows of V in ZCA-whitened space (and the ratio to
random rows), the held-out log-likelihood normalised by forward and by reverse AIS (`train.score
--ais-steps`, 16 chains) with its gain over the full-covariance Gaussian on the same held-out patches,
and the AUROCs of held-out patches against samples of the fitted grid Gaussian, of the full-covariance
Gaussian and against MNIST digits (with the full-covariance Gaussian's own AUROC beside them). The
(zca, sigma 1) row of the default method is `python -m train.dem` at its defaults. The filter grids of
the default method's four runs go to FIGURE.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

CONFIGS = [("zca", 1.0), ("zca", 0.1), ("none", 1.0), ("none", 0.1)]


def ais_row(export_dir, patch_file, heldout, steps, chains=16):
    """Forward and reverse AIS log Z of a SavedModel (train.score) and the held-out log-likelihood each
    gives: the mean of unnormalized_log_prob over the held-out patches minus log Z."""
    import tensorflow as tf

    from energy_models.experiments import score
    from energy_models.experiments.score_config import ScoreConfig

    start = time.perf_counter()
    report = score.score(ScoreConfig(model=[str(export_dir)], patches=str(patch_file), ais_steps=steps,
                                           ais_chains=chains, figures_dir=str(pathlib.Path(export_dir) / "score")))
    ais = report["models"][0]["ais"]
    module = tf.saved_model.load(str(export_dir))
    mean = float(np.mean(np.concatenate([module.unnormalized_log_prob(heldout[i:i + 4096]).numpy()
                                         for i in range(0, len(heldout), 4096)]).astype(np.float64)))
    return {"log_z_forward": ais["log_z_forward"], "log_z_reverse": ais["log_z_reverse"],
            "ais_gap": ais["gap"], "ais_seconds": time.perf_counter() - start,
            "heldout_ll_forward": mean - ais["log_z_forward"], "heldout_ll_reverse": mean - ais["log_z_reverse"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None)
    parser.add_argument("--num-patches", type=int, default=50_000)
    parser.add_argument("--methods", default="dsm,cd", help="comma-separated train.dem --method values")
    parser.add_argument("--configs", default=None, help="e.g. zca:1,none:0.1 (default: all four)")
    parser.add_argument("--ais-steps", type=int, default=2500, help="0: no AIS")
    parser.add_argument("--root", default="runs/dem-exercises", help="folder of the runs and models")
    parser.add_argument("--results", default="bench/results/dem_exercises.json")
    parser.add_argument("--figure", default="docs/dem_filters.png")
    args = parser.parse_args(argv)

    from energy_models.data.images import default_image_source
    from energy_models.data.patch_files import load_patch_set
    from energy_models.data.patches import make_patch_set
    from energy_models.errors import UserError
    from energy_models.experiments import dem
    from energy_models.experiments.dem_config import DEMConfig

    root = pathlib.Path(args.root)
    patch_file = root / "patches.npz"
    if not patch_file.exists():
        make_patch_set(args.images or default_image_source(), args.num_patches, seed=0).save(patch_file)
    patches = load_patch_set(patch_file)
    full_ll = float(np.mean(dem.FittedGaussian.full(patches.train).log_prob(patches.heldout)))
    configs = CONFIGS if not args.configs else [(w, float(s)) for w, s in
                                                 (item.split(":") for item in args.configs.split(","))]
    rows = []
    for method in args.methods.split(","):
        for whiten, sigma in configs:
            name = f"dem-{whiten}-sigma{sigma:g}-{method}"
            config = DEMConfig(patches=str(patch_file), whiten=whiten, sigma=sigma, method=method,
                                   run_dir=str(root / name), export_dir=str(root / "models" / name), overwrite=True)
            row = {"method": method, "whiten": whiten, "sigma": sigma, "full_gaussian_heldout_ll": full_ll}
            try:
                metrics = dem.train_and_evaluate(config)
                row.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
                if args.ais_steps:
                    row.update(ais_row(config.export_dir, patch_file, patches.heldout, args.ais_steps))
                    row["gain_over_full_gaussian"] = row["heldout_ll_forward"] - full_ll
            except UserError as error:  # a diverged configuration is a result too
                row["error"] = str(error)
            rows.append(row)
            print(json.dumps(row), flush=True)
            pathlib.Path(args.results).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.results).write_text(json.dumps(
                {"runs": rows, "default_config": dataclasses.asdict(DEMConfig())}, indent=2) + "\n")
    print(markdown_table(rows))
    default = DEMConfig().method
    filters_figure([r for r in rows if r["method"] == default], root, pathlib.Path(args.figure))


def markdown_table(rows):
    """The README's exercise table from the runs' rows."""
    head = ("| method | whiten | sigma | train s | localisation | kurtosis (x random) | held-out LL fwd / rev "
            "| gain over full Gaussian | AUROC vs grid Gaussian | vs full Gaussian (its own) | vs MNIST |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['whiten']} | {r['sigma']:g} | {r['error']} |")
            continue
        ll = (f"{r['heldout_ll_forward']:.1f} / {r['heldout_ll_reverse']:.1f}" if "heldout_ll_forward" in r
              else "")
        gain = f"{r['gain_over_full_gaussian']:+.1f}" if "gain_over_full_gaussian" in r else ""
        lines.append(f"| {r['method']} | {r['whiten']} | {r['sigma']:g} | {r['seconds']:.0f} | "
                     f"{r['filter_localisation']:.3f} | {r['filter_kurtosis']:.1f} ({r['kurtosis_ratio']:.2f}x) | "
                     f"{ll} | {gain} | {r['auroc_vs_gaussian_samples']:.3f} | "
                     f"{r['auroc_vs_full_gaussian_samples']:.3f} ({r['full_gaussian_auroc_vs_full_gaussian_samples']:.3f}) | "
                     f"{r.get('auroc_vs_mnist', float('nan')):.3f} |")
    return "\n".join(lines)


def filters_figure(rows, root, path):
    """The runs' figures/filters.png (rows of V in pixel space) in one row of panels, titled with each
    run's localisation and kurtosis; runs without a filter image are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(row, root / f"dem-{row['whiten']}-sigma{row['sigma']:g}-{row['method']}" / "figures" / "filters.png")
              for row in rows]
    panels = [(row, image) for row, image in panels if image.exists() and "filter_localisation" in row]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (row, image) in zip(axes[0], panels):
        ax.imshow(plt.imread(image))
        ax.set_axis_off()
        ax.set_title(f"{row['method']}, {row['whiten']}, sigma {row['sigma']:g}\nlocalisation "
                     f"{row['filter_localisation']:.2f}, kurtosis {row['kurtosis_ratio']:.1f}x random", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("L").save(path, optimize=True)  # grey filters: a quarter of the RGBA bytes


if __name__ == "__main__":
    main()
