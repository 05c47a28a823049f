"""Exports the reference SavedModels that tests/test_savedmodel_compat.py loads, and their expected numbers.

The models in this folder were exported at commit bd985bd (before the package's modules were moved
between folders), so that the test proves that SavedModels written by an older version still load and
score. They were made from a detached worktree of that commit, from its repository root, by

    git worktree add /tmp/ref bd985bd
    cd /tmp/ref
    PYTHONPATH=/tmp/ref python saved_models/reference/export_reference.py \
        --images /work/shared/data/photos --out /work/main/saved_models/reference

(this file was copied into the worktree to run it; `--out` pointed back at this folder).

What it does:
  1. cuts 5000 grayscale 8x8 patches from the photographs (`energy_models.data.patches.make_patch_set`,
     seed 0, 20% of the images held out) and saves them with `PatchSet.save` to a temporary folder;
  2. trains and exports, through the command-line trainers only (`python -m train.gaussian`,
     `python -m train.dem`, run as subprocesses), into OUT:
       gaussian-8x8-mle-n4  grid Gaussian, 4 neighbours, exact maximum likelihood;
       dem-8x8-cd           deep energy model, train.dem's defaults except --method cd and --epochs 3
                            (ZCA whitening, sigma 1, 64 hidden units, 64 latents, MALA; about 30 s on
                            2 CPU cores);
  3. loads both exports with `tf.saved_model.load` and writes OUT/expected.json: 16 fixed input rows
     (numpy.random.default_rng(0).uniform(0, 1, (16, 64)) as float32, stored in the file) and, per model,
     unnormalized_log_prob and log_prob of those rows (null where NaN: the CD model has no log Z),
     mean() and its sum, info() parsed, and the sum of sample(4, 7); for the Gaussian also the table
     `python -m train.score` prints for those rows and for 64 of the model's own samples (seed 0).

Run directories, the patch file and the score figures live in a temporary folder that is deleted at
the end; OUT receives only the two SavedModels and expected.json. Only `make_patch_set` is imported
from the library (at its bd985bd location); everything else goes through the command line, whose
names do not move with the modules.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

COMMIT = "bd985bd"
PATCH_SIZE = 8
NUM_PATCHES = 5000
SEED = 0
INPUT_SEED, INPUT_ROWS = 0, 16
SAMPLE_N, SAMPLE_SEED = 4, 7
SCORE_SAMPLES, SCORE_SEED = 64, 0
GAUSSIAN, DEM = "gaussian-8x8-mle-n4", "dem-8x8-cd"


def input_rows():
    """The fixed rows every model is scored on: float32 [16, 64], uniform in [0, 1)."""
    dim = PATCH_SIZE * PATCH_SIZE
    return np.random.default_rng(INPUT_SEED).uniform(0, 1, (INPUT_ROWS, dim)).astype(np.float32)


def run(command, env):
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def make_patches(images, path):
    import energy_models
    from energy_models.data.patches import make_patch_set  # bd985bd's location

    print(f"energy_models: {energy_models.__file__}", flush=True)
    patch_set = make_patch_set(images, NUM_PATCHES, seed=SEED, patch_size=PATCH_SIZE)
    patch_set.save(path)
    print(f"patches: {patch_set.train.shape[0]} training, {patch_set.heldout.shape[0]} held-out, "
          f"{PATCH_SIZE}x{PATCH_SIZE} -> {path}", flush=True)


def nullable(values):
    """A list of floats with NaN written as null (JSON has no NaN)."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, np.float64)]


def model_numbers(path, rows):
    import tensorflow as tf

    module = tf.saved_model.load(str(path))
    x = tf.constant(rows)
    mean = module.mean().numpy()
    sample = module.sample(tf.constant(SAMPLE_N, tf.int32), tf.constant(SAMPLE_SEED, tf.int32)).numpy()
    return {
        "unnormalized_log_prob": nullable(module.unnormalized_log_prob(x).numpy()),
        "log_prob": nullable(module.log_prob(x).numpy()),
        "mean": [float(v) for v in mean],
        "mean_sum": float(np.sum(mean, dtype=np.float64)),
        "info": json.loads(module.info().numpy().decode()),
        "sample": {"n": SAMPLE_N, "seed": SAMPLE_SEED, "shape": list(sample.shape),
                   "sum": float(np.sum(sample, dtype=np.float64))},
    }


def score_table(model, rows_path, work, env):
    """The sets of `python -m train.score`'s JSON for the rows and for the model's own samples."""
    out = work / "score.json"
    run([sys.executable, "-m", "train.score", "--model", str(model), "--patches", str(rows_path),
         "--gaussian-samples", str(model), "--num-patches", str(SCORE_SAMPLES), "--seed", str(SCORE_SEED),
         "--json", str(out), "--figures-dir", str(work / "score-figures")], env)
    report = json.loads(out.read_text())
    return {"args": {"num_patches": SCORE_SAMPLES, "seed": SCORE_SEED, "rows_file": rows_path.name},
            "sets": report["models"][0]["sets"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="saved_models/reference", help="where the models and expected.json go")
    parser.add_argument("--images", default="/work/shared/data/photos",
                        help="folder of photographs to cut the patches from")
    parser.add_argument("--epochs", type=int, default=3, help="train.dem epochs")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports in OUT")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (GAUSSIAN, DEM):
        if (out / name).exists():
            if not args.overwrite:
                parser.error(f"{out / name} exists; pass --overwrite to replace it")
            shutil.rmtree(out / name)

    env = dict(os.environ)
    # The DEM trainer scores MNIST digits when TFDS_DATA_DIR is set; keep the export independent of it.
    env.pop("TFDS_DATA_DIR", None)
    rows = input_rows()
    with tempfile.TemporaryDirectory(prefix="energy-models-reference-") as tmp:
        work = Path(tmp)
        patches = work / f"patches-{PATCH_SIZE}x{PATCH_SIZE}.npz"
        make_patches(args.images, patches)
        run([sys.executable, "-m", "train.gaussian", "--dataset", "patches", "--estimator", "mle",
             "--neighbourhood", "4", "--patches", str(patches), "--seed", str(SEED),
             "--run-dir", str(work / "run-gaussian"), "--export-dir", str(out / GAUSSIAN)], env)
        run([sys.executable, "-m", "train.dem", "--method", "cd", "--patches", str(patches),
             "--epochs", str(args.epochs), "--seed", str(SEED),
             "--run-dir", str(work / "run-dem"), "--export-dir", str(out / DEM)], env)

        rows_path = work / "rows.npy"
        np.save(rows_path, rows)
        import tensorflow as tf

        expected = {
            "commit": COMMIT,
            "command": "PYTHONPATH=$PWD python saved_models/reference/export_reference.py "
                       f"--images {args.images} --out {args.out} --epochs {args.epochs}",
            "versions": {"tensorflow": tf.__version__, "numpy": np.__version__},
            "inputs": {"generator": f"numpy.random.default_rng({INPUT_SEED}).uniform(0, 1, "
                                    f"({INPUT_ROWS}, {rows.shape[1]})).astype(numpy.float32)",
                       "rows": rows.tolist()},
            "models": {GAUSSIAN: model_numbers(out / GAUSSIAN, rows), DEM: model_numbers(out / DEM, rows)},
        }
        expected["models"][GAUSSIAN]["train_score"] = score_table(out / GAUSSIAN, rows_path, work, env)

    for leftover in out.rglob("*.tmp"):
        leftover.unlink()
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out / GAUSSIAN}, {out / DEM} and {out / 'expected.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
