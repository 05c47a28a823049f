"""Times loading photographs and cutting 28x28 patches from them; prints one JSON line.

Usage (from the project root):
    python -m bench.bench_patches --images ../shared/data/photos
    python -m bench.bench_patches            # the photographs bundled with scikit-image

Each run loads every image from disk and extracts the patches, as a training script would. The median
over runs is reported with the first run separately (the first may read files not yet in the OS cache),
and the process's peak resident memory (ru_maxrss) next to the resident memory before the first run.
"""

import argparse
import json
import statistics
import sys
import time

from bench._common import peak_rss_mb
from energy_models.data.images import default_image_source, load_images
from energy_models.data.patches import extract_patches
from energy_models.errors import UserError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None,
                        help="folder, glob pattern or image file (default: photographs bundled with "
                             "scikit-image)")
    parser.add_argument("--num-patches", type=int, default=50_000, help="patches per run (default 50000)")
    parser.add_argument("--runs", type=int, default=5, help="number of timed runs (default 5)")
    parser.add_argument("--patch-size", type=int, default=28, help="patch side in pixels (default 28)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run; run k uses seed + k")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.runs < 1:
        raise UserError(f"--runs must be at least 1, got {args.runs}")
    source = args.images if args.images is not None else default_image_source()
    baseline = peak_rss_mb()
    totals, loads, extracts = [], [], []
    for run in range(args.runs):
        start = time.perf_counter()
        images = load_images(source, min_size=args.patch_size)
        loaded = time.perf_counter()
        patches, _ = extract_patches(images, args.num_patches, args.patch_size, seed=args.seed + run)
        done = time.perf_counter()
        totals.append(done - start)
        loads.append(loaded - start)
        extracts.append(done - loaded)
        del patches
    result = {
        "benchmark": "patches",
        "images": args.images or "scikit-image default",
        "num_images": len(images),
        "megapixels": round(sum(image.pixels.size for image in images) / 1e6, 3),
        "num_patches": args.num_patches,
        "patch_size": args.patch_size,
        "runs": args.runs,
        "median_s": round(statistics.median(totals), 4),
        "first_s": round(totals[0], 4),
        "min_s": round(min(totals), 4),
        "max_s": round(max(totals), 4),
        "load_median_s": round(statistics.median(loads), 4),
        "extract_median_s": round(statistics.median(extracts), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_mb": round(baseline, 1),
        "patches_mb": round(args.num_patches * args.patch_size ** 2 * 4 / 2 ** 20, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
