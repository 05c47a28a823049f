"""The exact grid-Gaussian MLE on large patches: dense Newton (`mle.fit_grid_mle`) against block-tridiagonal
Newton-CG (`mle_newton_cg`), on grayscale patches of photographs at 28 x 28, 64 x 64 and 128 x 128.

    python -m bench.bench_mle_scaling --images PHOTOS [--sizes 28 64 128] [--solvers dense newton_cg]
        [--json bench/results/mle_scaling.json]

Each (size, solver) runs in its own process, so that its peak resident memory is its own. The patches are
cut in chunks of 5,000 (50,000 patches of 128 x 128 pixels would be 3.3 GB as float32): the dense solver
gets the full covariance S, Newton-CG only S's pattern entries (`mle_newton_cg.pattern_covariance`, no
D x D matrix); timings exclude cutting the patches and forming S. The log-likelihood is the training
average -D/2 log 2 pi + (log det Lambda - tr(S Lambda)) / 2 in nats per patch. The dense solver is not
run at 128 x 128: its Newton Hessian alone would be 48,896^2 x 8 bytes = 19 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench._common import machine, peak_rss_mb  # noqa: E402

CHUNK = 5_000


def patch_chunks(images, size, num_patches, seed):
    """`num_patches` random size x size patches, as chunks of CHUNK rows."""
    from energy_models.data.images import load_images
    from energy_models.data.patches import extract_patches

    pictures = load_images(images, min_size=size)
    for k, start in enumerate(range(0, num_patches, CHUNK)):
        x, _ = extract_patches(pictures, min(CHUNK, num_patches - start), size, np.random.SeedSequence([seed, k]))
        yield x


def patch_covariance(images, size, num_patches, seed):
    """(mean, covariance) of `num_patches` random size x size patches, accumulated in float64 chunks."""
    total, outer, seen = 0.0, 0.0, 0
    for x in patch_chunks(images, size, num_patches, seed):
        x = x.astype(np.float64)
        total, outer, seen = total + x.sum(0), outer + x.T @ x, seen + len(x)
    mean = total / seen
    return mean, outer / seen - np.outer(mean, mean)


def run_one(images, size, solver, num_patches, seed):
    from energy_models.gaussian.mle import fit_grid_mle
    from energy_models.gaussian.mle_newton_cg import fit_grid_mle_newton_cg, pattern_covariance
    from energy_models.linalg import grid

    pattern = grid.grid_pattern(size, size, 4)
    if solver == "dense":
        _, s = patch_covariance(images, size, num_patches, seed)
        fit = fit_grid_mle
    else:
        _, s = pattern_covariance(patch_chunks(images, size, num_patches, seed), pattern)
        fit = fit_grid_mle_newton_cg
    start = time.perf_counter()
    result = fit(s, pattern)
    seconds = time.perf_counter() - start
    d = pattern.dim
    return {"size": size, "solver": solver, "pixels": d, "free_entries": d + pattern.num_edges,
            "num_patches": num_patches, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "iterations": result.iterations, "max_abs_residual": result.max_abs_residual,
            "train_log_likelihood": -0.5 * d * np.log(2 * np.pi) + 0.5 * result.objective}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of photographs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    parser.add_argument("--num-patches", type=int, default=50_000)
    parser.add_argument("--solvers", nargs="+", choices=("dense", "newton_cg"), default=["dense", "newton_cg"],
                        help="dense is skipped above 64 x 64 whatever this says")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (size, solver); the median is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.images, int(args.one[0]), args.one[1], args.num_patches, args.seed)))
        return
    rows = []
    for size in args.sizes:
        for solver in [s for s in args.solvers if size <= 64 or s != "dense"]:
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-m", "bench.bench_mle_scaling", "--images", args.images,
                                      "--num-patches", str(args.num_patches), "--seed", str(args.seed),
                                      "--one", str(size), solver], capture_output=True, text=True)
                if out.returncode:
                    runs.append({"size": size, "solver": solver, "error": out.stderr.strip().splitlines()[-1]})
                    break
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            ok = [r for r in runs if "error" not in r]
            row = dict(ok[len(ok) // 2] if ok else runs[-1])
            if ok:
                row["seconds_all"] = sorted(r["seconds"] for r in ok)
                row["seconds"] = float(np.median(row["seconds_all"]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "command": " ".join(sys.argv), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
