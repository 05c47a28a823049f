"""A sparse reference for the deep energy model (issue 14): ICA on the same whitened patches as `train.dem`.

Usage (from the project root; needs scikit-learn, a benchmark-only dependency the library never imports):
    python -m bench.ica_reference --images ../shared/data/photos \
        --json bench/results/ica_reference.json --figure bench/results/ica_filters.png

Data: `make_patch_set(images, 50,000, seed=0)`, the patches `python -m train.dem` cuts at its defaults
(held-out patches come from photographs not used for training), ZCA-whitened as `train.dem --whiten zca`
does: u = W (x - mu), `LinearWhitening.zca(train, 1e-6)`.

Two ICA fits (scikit-learn's FastICA, logcosh contrast, parallel, whiten=False since u is already white):
  full:     all 784 whitened directions, s = B u with B [784, 784];
  subspace: the top-k (default 150) principal directions of the pixel covariance (ZCA keeps the
            eigenvectors U, so they are U_k^T u in ZCA space too), s = B_k U_k^T u; the other 784 - k
            directions, nearly Gaussian high-frequency noise, are left out of the ICA.
The filters are the rows of B (B_k U_k^T) in ZCA space; in pixel space they are W^T v = W v (W symmetric),
as `ContrastiveDivergence.filters` shows a DEM's V.

Filter statistics (`energy_models.evaluation.filter_stats`, on the held-out whitened patches): median localisation
and response kurtosis of all rows, of the 64 sparsest (highest kurtosis on the *training* patches, so that
nothing is chosen on the held-out split) and of as many random Gaussian rows.

Exactly normalised held-out log-likelihood in pixel space (nats per patch, mean over held-out patches):
    log p(x) = sum_i log p_i(s_i) + log|det T| + log|det W|,   s = T u,
with T = B (full) or [B_k U_k^T; U_rest^T] (subspace; log|det T| = log|det B_k|), p_i a unit-variance
Laplace density, log p(s) = -sqrt(2)|s| - log(sqrt(2)), for the ICA components and a standard normal for
the rest. Beside it: the full-covariance Gaussian `FittedGaussian.full` (the baseline of `train.dem`), the
standard normal in ZCA space (the same Gaussian through the whitening: a check on the arithmetic), and the
model with only the 64 sparsest components Laplace (the other components standard normal), and two
controls without ICA: every whitened coordinate Laplace on the ZCA axes themselves (B = I) and after a
random rotation (B random orthogonal), which show how much of the gain needs the ICA filters at all.

Figure: four 8 x 8 grids of the 64 sparsest filters, each scaled to its own range; top row the full ICA,
bottom row the subspace ICA; left in ZCA space, right in pixel space.
"""

import argparse
import json
import math
import pathlib
import time
import warnings

import numpy as np

from bench._common import machine, peak_rss_mb

LOG_SQRT2 = 0.5 * math.log(2.0)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def laplace_log_prob(s):
    """Unit-variance Laplace log-density, elementwise."""
    return -math.sqrt(2.0) * np.abs(s) - LOG_SQRT2


def normal_log_prob(s):
    return -0.5 * s * s - LOG_SQRT_2PI


def log_likelihood(s, laplace, log_abs_det):
    """Per-patch log p of sources s [n, D]: Laplace on the columns where `laplace` is True, standard normal
    on the others, plus log|det| of the whole map from pixels."""
    return (laplace_log_prob(s[:, laplace]).sum(axis=1) + normal_log_prob(s[:, ~laplace]).sum(axis=1)
            + log_abs_det)


def fit_ica(u, max_iter, tol, seed):
    """FastICA unmixing matrix B [k, k] for white data u [n, k], iterations, converged, seconds."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    ica = FastICA(whiten=False, fun="logcosh", algorithm="parallel", max_iter=max_iter, tol=tol,
                  random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        ica.fit(u.astype(np.float32))
    seconds = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return np.asarray(ica.components_, np.float64), int(ica.n_iter_), converged, seconds


def analyse(name, B, basis, u_train, u_held, log_det_w, num_sparse, seed):
    """Statistics and held-out log-likelihoods of an ICA B [k, k] fitted on the coordinates basis^T u
    (basis [D, k] orthonormal; the identity for the full ICA)."""
    from energy_models.evaluation import filter_stats

    D, k = basis.shape
    filters = B @ basis.T  # [k, D], rows in ZCA space
    train_kurtosis = filter_stats.response_kurtosis(filters, u_train)
    order = np.argsort(train_kurtosis)[::-1]
    sparse = order[:num_sparse]
    held_kurtosis = filter_stats.response_kurtosis(filters, u_held)
    result = {
        "name": name, "components": k,
        "all": filter_stats.summary(filters, u_held, seed),
        f"sparsest_{num_sparse}": filter_stats.summary(filters[sparse], u_held, seed),
        f"sparsest_{num_sparse}_by_heldout_kurtosis_median":
            float(np.median(np.sort(held_kurtosis)[::-1][:num_sparse])),
        f"sparsest_{num_sparse}_training_kurtosis_median": float(np.median(train_kurtosis[sparse])),
        "source_std_train_median": float(np.median(np.std(u_train @ filters.T, axis=0))),
    }
    # Sources of the whole orthogonal-or-not map T: the k ICA sources, then the D - k remaining directions.
    sign, log_det_b = np.linalg.slogdet(B)
    complement = _complement(basis)
    s_held = np.concatenate([u_held @ filters.T, u_held @ complement], axis=1)
    laplace = np.zeros(D, bool)
    laplace[:k] = True
    result["log_abs_det_unmixing"] = float(log_det_b)
    result["heldout_ll_laplace"] = float(np.mean(log_likelihood(s_held, laplace, log_det_b + log_det_w)))
    best = np.zeros(D, bool)
    best[sparse] = True
    result[f"heldout_ll_sparsest_{num_sparse}_laplace"] = float(
        np.mean(log_likelihood(s_held, best, log_det_b + log_det_w)))
    return result, filters[sparse]


def _complement(basis):
    """An orthonormal basis [D, D - k] of the orthogonal complement of basis [D, k]."""
    D, k = basis.shape
    if k == D:
        return np.zeros((D, 0))
    q, _ = np.linalg.qr(np.concatenate([basis, np.eye(D)], axis=1))
    return q[:, k:D]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None)
    parser.add_argument("--num-patches", type=int, default=50_000)
    parser.add_argument("--whiten-epsilon", type=float, default=1e-6)
    parser.add_argument("--subspace", type=int, default=150, help="principal directions of the subspace ICA")
    parser.add_argument("--sparsest", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench/results/ica_reference.json")
    parser.add_argument("--figure", default="bench/results/ica_filters.png")
    args = parser.parse_args(argv)

    from energy_models import figures
    from energy_models.data.images import default_image_source
    from energy_models.data.patches import make_patch_set
    from energy_models.evaluation import filter_stats
    from energy_models.gaussian.fitted import FittedGaussian
    from energy_models.whitening import LinearWhitening, mean_and_covariance

    start = time.perf_counter()
    patch_set = make_patch_set(args.images or default_image_source(), args.num_patches, seed=0)
    train, held = patch_set.train, patch_set.heldout
    whitening = LinearWhitening.zca(train, args.whiten_epsilon)
    W, mu = np.asarray(whitening.matrix, np.float64), np.asarray(whitening.mean, np.float64)
    log_det_w = whitening.log_abs_det
    u_train = (train.astype(np.float64) - mu) @ W.T
    u_held = (held.astype(np.float64) - mu) @ W.T
    full_gaussian = FittedGaussian.full(train)
    gaussian_ll = float(np.mean(full_gaussian.log_prob(held)))
    zca_normal_ll = float(np.mean(normal_log_prob(u_held).sum(axis=1) + log_det_w))
    # The pixel covariance's eigenvectors, by decreasing eigenvalue: ZCA's W = U diag(.) U^T shares them.
    _, covariance = mean_and_covariance(train)
    values, vectors = np.linalg.eigh(covariance)
    vectors = vectors[:, ::-1]
    setup_seconds = time.perf_counter() - start
    print(f"{len(train)} training and {len(held)} held-out patches; full Gaussian held-out LL "
          f"{gaussian_ll:.2f}, standard normal in ZCA space {zca_normal_ll:.2f} ({setup_seconds:.0f} s)", flush=True)

    # Controls without ICA: all 784 whitened coordinates Laplace, on the ZCA axes themselves (B = I, filters
    # localised centre-surround) and after a random rotation (B a random orthogonal matrix).
    rotation, _ = np.linalg.qr(np.random.default_rng(args.seed).standard_normal(W.shape))
    controls = {}
    for name, B in [("zca_axes", np.eye(W.shape[0])), ("random_rotation", rotation)]:
        s = u_held @ B.T
        ll = float(np.mean(log_likelihood(s, np.ones(W.shape[0], bool), np.linalg.slogdet(B)[1] + log_det_w)))
        controls[name] = {"heldout_ll_laplace": ll, "gain_over_full_gaussian": ll - gaussian_ll,
                          "filter_localisation": float(np.median(filter_stats.localisation(B))),
                          "filter_kurtosis": float(np.median(filter_stats.response_kurtosis(B, u_held)))}
    print(json.dumps(controls), flush=True)

    variants, sparse_filters = [], []
    for name, basis in [("full", np.eye(W.shape[0])), (f"top{args.subspace}", vectors[:, :args.subspace])]:
        B, n_iter, converged, seconds = fit_ica(u_train @ basis, args.max_iter, args.tol, args.seed)
        result, rows = analyse(name, B, basis, u_train, u_held, log_det_w, args.sparsest, args.seed)
        result.update({"n_iter": n_iter, "converged": converged, "ica_seconds": seconds,
                       "gain_over_full_gaussian": result["heldout_ll_laplace"] - gaussian_ll,
                       f"gain_sparsest_{args.sparsest}_over_full_gaussian":
                           result[f"heldout_ll_sparsest_{args.sparsest}_laplace"] - gaussian_ll})
        variants.append(result)
        sparse_filters.append(rows)
        print(json.dumps(result), flush=True)

    side = math.isqrt(W.shape[0])
    grids = [[figures.image_grid(rows, size=side, scale="each"), figures.image_grid(rows @ W, size=side, scale="each")]
             for rows in sparse_filters]
    gap = 4
    mosaic = np.ones((2 * grids[0][0].shape[0] + gap, 2 * grids[0][0].shape[1] + gap))
    h, w = grids[0][0].shape
    for r, row in enumerate(grids):
        for c, grid in enumerate(row):
            mosaic[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = grid
    figures.save_gray_png(args.figure, mosaic)

    out = {"command": "python -m bench.ica_reference", "machine": machine(), "args": vars(args),
           "n_train": int(len(train)), "n_heldout": int(len(held)),
           "whitening_log_abs_det": log_det_w,
           "heldout_ll_full_gaussian": gaussian_ll, "heldout_ll_standard_normal_zca": zca_normal_ll,
           "controls": controls, "variants": variants, "seconds": time.perf_counter() - start,
           "peak_rss_mb": peak_rss_mb()}
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} and {args.figure} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
