"""Exercise 2's four runs: sigma in {1, 0.1}, whitened (ZCA) and raw patches; prints and saves a table.

Usage (from the project root):
    python -m bench.dem_exercises --images ../shared/data/photos
    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m bench.dem_exercises --images ../shared/data/photos

All four runs use the same patch file (cut once, 50,000 patches by default) and `python -m train.dem`'s
defaults otherwise; each writes runs/dem-WHITEN-sigmaSIGMA (figures/filters.png, metrics.json) and
saved_models/dem-WHITEN-sigmaSIGMA. The table reports wall time, held-out log p~ and the AUROCs of
held-out patches against samples of the fitted Gaussian (and against MNIST digits when TFDS_DATA_DIR is
set), with the fitted Gaussian's own AUROC as the baseline. The table goes to RESULTS (JSON).
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


if __name__ == "__main__":
    main()
