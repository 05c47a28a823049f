"""Benchmark: NCE, cNCE and score matching on full MNIST against the exact grid MLE, as a markdown table.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python bench/bench_estimators.py --out bench/results/estimators.md

Rows: each estimator at its defaults, the NCE nu sweep and noise choices, and the cNCE epsilon sweep, for
each of --neighbourhoods (4 and 8). Columns: test log-likelihood (nats per image), gap to the exact MLE, NCE's log Z error,
relative Frobenius distance ||Lambda - Lambda_mle||_F / ||Lambda_mle||_F, smallest eigenvalue, PD-guard
corrections and training wall time. Runs one at a time: the wall time is that of a shared 2-core machine.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # See train/gaussian.py: measured, not a guess.

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from energy_models.experiments import gaussian  # noqa: E402
from energy_models.experiments.gaussian_config import GaussianConfig
from energy_models.gaussian.mle import fit_grid_mle  # noqa: E402
from energy_models.gaussian.model import GridGaussian, average_log_likelihood  # noqa: E402


def exact_score_matching(data, reference, k, floor):
    """Rows for score matching's exact optima: unconstrained (H theta = b) and over Lambda~ >= floor."""
    from energy_models.gaussian.sm_optimum import score_matching_constrained_optimum, score_matching_optimum

    s = data.covariance()
    lam_mle, ll_mle = reference[k]
    model = GridGaussian(28, 28, k)
    model.set_mean(data.mean)
    out = []
    for label, solve in (("sm exact, unconstrained", score_matching_optimum),
                         (f"sm exact, Lambda~ >= {floor:g} I",
                          lambda s, p: score_matching_constrained_optimum(s, p, floor))):
        start = time.perf_counter()
        lam = solve(s, model.pattern)
        seconds = time.perf_counter() - start
        smallest = float(np.linalg.eigvalsh(lam)[0])
        row = {"label": label, "neighbourhood": k, "test_ll": None, "gap": None, "log_z_error": None,
               "rel_frobenius": float(np.linalg.norm(lam - lam_mle) / np.linalg.norm(lam_mle)),
               "lambda_min": smallest, "pd_failures": "-", "pd_halvings": "-", "seconds": seconds}
        if smallest > 0:
            model.precision_layer.set_dense(lam)
            row["test_ll"] = average_log_likelihood(model, data.test)
            row["gap"] = ll_mle - row["test_ll"]
        out.append(row)
    return out


def rows(neighbourhoods, sweeps):
    for k in neighbourhoods:
        for estimator in ("sm", "cnce", "nce"):
            yield f"{estimator} defaults", {"estimator": estimator, "neighbourhood": k}
    if sweeps:
        for k in neighbourhoods:
            for nu in (1.0, 10.0, 100.0):
                yield f"nce nu={nu:g}", {"estimator": "nce", "neighbourhood": k, "nu": nu}
            for noise in ("isotropic", "diagonal"):
                yield f"nce noise={noise}", {"estimator": "nce", "neighbourhood": k, "noise": noise}
            for epsilon in (0.01, 0.03, 0.1, 0.3):
                yield f"cnce epsilon={epsilon:g}", {"estimator": "cnce", "neighbourhood": k,
                                                     "epsilon": epsilon}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/estimators.md")
    parser.add_argument("--neighbourhoods", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only rows whose label contains one of these")
    parser.add_argument("--epochs", type=int, default=None, help="override every row's epochs")
    parser.add_argument("--exact-sm", action="store_true", help="add score matching's exact optima")
    parser.add_argument("--set", nargs="*", default=[], help="override config fields, e.g. batch_size=512")
    args = parser.parse_args(argv)

    data = gaussian.load_dataset(GaussianConfig(), None)
    s = data.covariance()
    reference = {}
    results = []
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_estimators_"))
    todo = list(rows(args.neighbourhoods, not args.no_sweeps))
    if args.exact_sm:
        todo = [("exact sm", {"neighbourhood": k}) for k in args.neighbourhoods] + todo
    for label, overrides in todo:
        if args.only and not any(part in label for part in args.only):
            continue
        k = overrides["neighbourhood"]
        if k not in reference:
            mle = GridGaussian(28, 28, k)
            mle.set_mean(data.mean)
            mle.precision_layer.set_dense(fit_grid_mle(s, mle.pattern).precision)
            reference[k] = (mle.precision_dense(), average_log_likelihood(mle, data.test))
        if label == "exact sm":
            results += exact_score_matching(data, reference, k, GaussianConfig.pd_floor)
            _write(args.out, results)
            continue
        if args.epochs:
            overrides = dict(overrides, epochs=args.epochs)
        for item in args.set:
            key, value = item.split("=")
            field = GaussianConfig.__dataclass_fields__[key]
            overrides = dict(overrides, **{key: type(field.default)(value) if field.default is not None
                                           else float(value)})
        name = f"{label.replace(' ', '_').replace('=', '')}_n{k}"
        config = GaussianConfig(run_dir=str(tmp / name), export_dir=str(tmp / f"sm_{name}"),
                                         overwrite=True, **overrides)
        gaussian.load_dataset = lambda config, run_dir=None, _data=data: _data  # Load MNIST once for all rows.
        start = time.perf_counter()
        metrics = gaussian.train_and_evaluate(config)
        lam_mle, ll_mle = reference[k]
        lam = _precision_of(config.export_dir)
        row = {"label": label, "neighbourhood": k, "test_ll": metrics["test_log_likelihood"],
               "gap": ll_mle - metrics["test_log_likelihood"],
               "log_z_error": metrics.get("log_z_error"),
               "rel_frobenius": float(np.linalg.norm(lam - lam_mle) / np.linalg.norm(lam_mle)),
               "lambda_min": metrics["smallest_eigenvalue"],
               "pd_failures": metrics.get("pd_failures"), "pd_halvings": metrics.get("pd_halvings"), "epsilon": metrics.get("epsilon"),
               "seconds": metrics["seconds"], "total_seconds": time.perf_counter() - start,
               "mle_test_ll": ll_mle, "config": dataclasses.asdict(config)}
        results.append(row)
        print(json.dumps({k2: v for k2, v in row.items() if k2 != "config"}), flush=True)
        _write(args.out, results)


def _precision_of(export_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(export_dir)  # Held in a name: its functions die with the object.
    return loaded.precision().numpy().astype(np.float64)


def _write(path, results):
    lines = ["| setting | nbhd | test LL | gap to mle | log Z error | rel. Frobenius to mle | "
             "lambda_min | PD failures (halvings) | train s |", "|---" * 9 + "|"]
    for r in results:
        log_z = "" if r["log_z_error"] is None else f"{r['log_z_error']:+.2f}"
        eps = f" (eps {r['epsilon']:.3g})" if r.get("epsilon") else ""
        test_ll = "not PD" if r["test_ll"] is None else f"{r['test_ll']:.2f}"
        gap = "" if r["gap"] is None else f"{r['gap']:.2f}"
        lines.append(f"| {r['label']}{eps} | {r['neighbourhood']} | {test_ll} | {gap} | "
                     f"{log_z} | {r['rel_frobenius']:.3f} | {r['lambda_min']:.3g} | "
                     f"{r['pd_failures']} ({r['pd_halvings']}) | {r['seconds']:.1f} |")
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    pathlib.Path(path).with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
