"""NCE from its default command on full MNIST: gap to the exact mle, log Z error, wall time, peak memory.

    TFDS_DATA_DIR=... python -m bench.nce_defaults [--runs 3] [--neighbourhood 4] [-- EXTRA FLAGS]
        [--json bench/results/nce_defaults.json]

Runs `python -m train.gaussian --estimator nce` (plus any extra flags) --runs times, each in a fresh run
and export folder, and reports per run the command's own `seconds_after_data_loading` (training,
evaluation, figures and export: what the 60 s target counts), the process's wall time and peak RSS,
the held-out log-likelihood's gap to the exact mle and log Z estimate minus its analytic value; then the
medians. The seed is fixed, so the numbers other than the times repeat exactly.
"""

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from bench._common import machine
from bench.nce_rounds import MLE_TEST_LL


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--neighbourhood", type=int, default=4, choices=(4, 8))
    parser.add_argument("--json", default=None)
    parser.add_argument("extra", nargs="*", help="extra train.gaussian flags, after --")
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            command = [sys.executable, "-m", "train.gaussian", "--estimator", "nce", "--neighbourhood",
                       str(args.neighbourhood), "--run-dir", str(root / "run"), "--export-dir",
                       str(root / "model"), *args.extra]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            m = json.loads((root / "run" / "metrics.json").read_text())
        row = {"run": run, "flags": args.extra, "neighbourhood": args.neighbourhood,
               "seconds_after_data_loading": m["seconds_after_data_loading"], "train_seconds": m["seconds"],
               "process_wall_seconds": wall, "test_ll": m["test_log_likelihood"],
               "gap": MLE_TEST_LL[args.neighbourhood] - m["test_log_likelihood"],
               "log_z_estimate": m["log_z_estimate"], "log_z_analytic": m["log_z_analytic"],
               "log_z_error": m["log_z_error"], "rounds": m.get("rounds"),
               "peak_rss_mb_so_far": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    summary = {"summary": True, "flags": args.extra, "neighbourhood": args.neighbourhood, "runs": args.runs,
               "median_seconds_after_data_loading": statistics.median(
                   r["seconds_after_data_loading"] for r in rows),
               "median_process_wall_seconds": statistics.median(r["process_wall_seconds"] for r in rows),
               "gap": rows[-1]["gap"], "log_z_error": rows[-1]["log_z_error"],
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
               "machine": machine()}
    rows.append(summary)
    print(json.dumps(summary))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
