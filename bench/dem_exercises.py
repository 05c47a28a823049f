"""Exercise 2's four runs: sigma in {1, 0.1}, whitened (ZCA) and raw patches; prints and saves a table.

Usage (from the project root):
    python -m bench.dem_exercises --images ../shared/data/photos
    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m bench.dem_exercises --images ../shared/data/photos

All four runs use the same patch file (cut once, 50,000 patches by default) and `python -m train.dem`'s
defaults otherwise; each writes runs/dem-WHITEN-sigmaSIGMA (figures/filters.png, metrics.json) and
saved_models/dem-WHITEN-sigmaSIGMA. The table reports wall time, held-out log p~ and the AUROCs of
held-out patches against samples of the fitted Gaussian (and against MNIST digits when TFDS_DATA_DIR is
set), with the fitted Gaussian's own AUROC as the baseline. The table goes to RESULTS (JSON) and the four
filter grids, side by side with their AUROCs, to FIGURE (the README's figure).
"""

import argparse
import dataclasses
import json
import pathlib

CONFIGS = [("zca", 1.0), ("zca", 0.1), ("none", 1.0), ("none", 0.1)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None)
    parser.add_argument("--num-patches", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=None, help="override train.dem's default")
    parser.add_argument("--root", default="runs/dem-exercises", help="folder of the runs and models")
    parser.add_argument("--results", default="bench/dem_exercises.json")
    parser.add_argument("--figure", default="docs/dem_filters.png")
    args = parser.parse_args(argv)

    from energy_models.data.images import default_image_source
    from energy_models.data.patches import make_patch_set
    from energy_models.errors import UserError
    from energy_models.experiments import dem

    root = pathlib.Path(args.root)
    patch_file = root / "patches.npz"
    make_patch_set(args.images or default_image_source(), args.num_patches, seed=0).save(patch_file)
    rows = []
    for whiten, sigma in CONFIGS:
        name = f"dem-{whiten}-sigma{sigma:g}"
        config = dem.DEMConfig(patches=str(patch_file), whiten=whiten, sigma=sigma,
                               run_dir=str(root / name), export_dir=str(root / "models" / name), overwrite=True)
        if args.epochs:
            config.epochs = args.epochs
        try:
            metrics = dem.train_and_evaluate(config)
        except UserError as error:  # a diverged configuration is a result too
            metrics = {"error": str(error)}
        row = {"whiten": whiten, "sigma": sigma, **{k: v for k, v in metrics.items() if not isinstance(v, dict)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    pathlib.Path(args.results).write_text(json.dumps({"runs": rows, "config": dataclasses.asdict(dem.DEMConfig())},
                                                     indent=2) + "\n")
    filters_figure(rows, root, pathlib.Path(args.figure))


def filters_figure(rows, root, path):
    """The runs' figures/filters.png (rows of V in pixel space) in one row of panels, titled with each
    run's AUROC against samples of the fitted Gaussian; runs without a filter image or scores are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(row, root / f"dem-{row['whiten']}-sigma{row['sigma']:g}" / "figures" / "filters.png") for row in rows]
    panels = [(row, image) for row, image in panels if image.exists() and "auroc_vs_gaussian_samples" in row]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (row, image) in zip(axes[0], panels):
        ax.imshow(plt.imread(image))
        ax.set_axis_off()
        ax.set_title(f"{row['whiten']}, sigma {row['sigma']:g}\nAUROC vs Gaussian {row['auroc_vs_gaussian_samples']:.3f}",
                     fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("L").save(path, optimize=True)  # grey filters: a quarter of the RGBA bytes


if __name__ == "__main__":
    main()
