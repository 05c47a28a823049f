"""NCE with its noise brought close to the model (issue 3): a score-matching fit, then NCE rounds, each
using the previous round's SavedModel as its noise (`--noise-model`).

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python -m bench.nce_rounds [--sm-epochs 2]
        [--nce-epochs 1] [--rounds 3] [--nu 10] [--neighbourhood 4] [--nce-learning-rate LR]
        [--json bench/results/nce_rounds_nu10.json]

Why rounds: with noise p_n equal to the model p_theta, the NCE gradient is proportional to
E_data[grad log p_theta] - E_p_theta[grad log p_theta], the maximum-likelihood gradient, so each round's
optimum moves towards maximum likelihood, and the classifier's log-ratio, and with it c = -log Z, is
learnt where it is well determined (G is near 0 everywhere). Every step is the project's own command line;
the times are the commands' own training seconds (metrics.json), without process start and data loading.
Prints one JSON line per stage and writes them all to --json.
"""

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile

from bench._common import machine

# Exact mle test LL on the same split, per neighbourhood (bench/bench_gaussian.py).
MLE_TEST_LL = {4: 362.4442519655926, 8: 384.21970177676275}


def run(args, root, name, extra):
    run_dir, export_dir = root / name, root / f"{name}-model"
    command = [sys.executable, "-m", "train.gaussian", "--run-dir", str(run_dir), "--export-dir",
               str(export_dir), "--neighbourhood", str(args.neighbourhood)] + extra
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return export_dir, metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sm-epochs", type=int, default=2)
    parser.add_argument("--nce-epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nu", type=float, default=10.0)
    parser.add_argument("--nce-learning-rate", type=float, default=None,
                        help="NCE rounds' learning rate (default: the trainer's)")
    parser.add_argument("--neighbourhood", type=int, default=4, choices=(4, 8))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        noise, metrics = run(args, root, "sm", ["--estimator", "sm", "--epochs", str(args.sm_epochs)])
        stages = [("sm", args.sm_epochs, metrics)]
        for i in range(1, args.rounds + 1):
            noise, metrics = run(args, root, f"nce{i}", [
                "--estimator", "nce", "--noise-model", str(noise), "--nu", f"{args.nu:g}",
                "--epochs", str(args.nce_epochs)]
                + ([] if args.nce_learning_rate is None else ["--learning-rate", f"{args.nce_learning_rate:g}"]))
            stages.append((f"nce round {i}", args.nce_epochs, metrics))
        for name, epochs, m in stages:
            total += m["seconds"]
            estimate = m.get("log_z_estimate")
            row = {"stage": name, "epochs": epochs, "test_ll": m["test_log_likelihood"],
                   "gap": MLE_TEST_LL[args.neighbourhood] - m["test_log_likelihood"], "log_z_estimate": estimate,
                   "log_z_analytic": m["log_z_analytic"],
                   "log_z_error": None if estimate is None else estimate - m["log_z_analytic"],
                   "train_seconds": m["seconds"], "cumulative_train_seconds": total}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"stage": "summary", "nu": args.nu, "neighbourhood": args.neighbourhood,
               "nce_learning_rate": args.nce_learning_rate, "sm_epochs": args.sm_epochs, "nce_epochs": args.nce_epochs,
               "machine": machine(),
               "peak_rss_mb_largest_command": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    rows.append(summary)
    print(json.dumps(summary))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
