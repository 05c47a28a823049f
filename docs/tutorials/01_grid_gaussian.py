# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fit a grid Gaussian to your own array, and check the estimators against the exact answer
#
# A zero-mean Gaussian p(x) = exp(-x^T Lambda x / 2) / Z whose precision Lambda couples each pixel only
# to its 4 grid neighbours has an exact maximum-likelihood estimate (`mle`, convex), an exact log Z
# (D/2 log 2 pi - 1/2 log det Lambda) and exact samples. That makes it the place to see what NCE, cNCE and
# score matching get right: here the data come from a *known* grid Gaussian, so every estimate can be
# compared with the truth, not just with each other.
#
# Your own data: any float array of rows of 28 x 28 pixels works the same way; replace `x` below.

# %%
import os
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from energy_models.data.patches import PatchSet
from energy_models.experiments.gaussian import train_and_evaluate
from energy_models.experiments.gaussian_config import GaussianConfig
from energy_models.linalg.grid import grid_pattern

tf.get_logger().setLevel("ERROR")  # Keeps "Assets written to ..." out of the outputs.
rng = np.random.default_rng(0)
pattern = grid_pattern(28, 28, 4)
# The truth: unit standardised diagonal, couplings in [-0.22, 0.1], pixel standard deviations 0.05-0.15.
std = rng.uniform(0.05, 0.15, pattern.dim)
tilde = pattern.dense(np.ones((28, 28)), pattern.edges_to_couplings(rng.uniform(-0.22, 0.1, pattern.num_edges)))
lam_true = tilde / std[:, None] / std[None, :]
chol = np.linalg.cholesky(lam_true)
# x = mu + L^-T eps has covariance (L L^T)^-1 = Lambda^-1.
x = (0.5 + np.linalg.solve(chol.T, rng.standard_normal((pattern.dim, 25_000))).T).astype(np.float32)
log_z_true = 0.5 * pattern.dim * np.log(2 * np.pi) - np.sum(np.log(np.diag(chol)))
print(f"{len(x)} rows of {x.shape[1]} pixels; true log Z = {log_z_true:.2f}")

# %% [markdown]
# The trainers read rows from a patch file (training and held-out splits), the same file
# `train.gaussian --patches FILE` takes on the command line.

# %%
work = pathlib.Path(os.environ.get("TUTORIAL_DIR") or tempfile.mkdtemp(prefix="tutorial-01-"))
work.mkdir(parents=True, exist_ok=True)
PatchSet.from_rows(x[:20_000], x[20_000:], source="known grid Gaussian").save(work / "rows.npz")  # rows, no images

# %% [markdown]
# Fit each estimator at its command-line defaults (cNCE and score matching for 3 epochs, to keep this
# short), then load the SavedModel each one exported and compare its Lambda with the truth.

# %%
runs = {"mle": {}, "nce": {}, "cnce": {"epochs": 3}, "sm": {"epochs": 3}}
results = {}
for estimator, flags in runs.items():
    metrics = train_and_evaluate(GaussianConfig(
        dataset="patches", patches=str(work / "rows.npz"), estimator=estimator, run_dir=str(work / estimator),
        export_dir=str(work / f"{estimator}-model"), overwrite=True, **flags))
    model = tf.saved_model.load(str(work / f"{estimator}-model"))
    lam = model.precision().numpy().astype(np.float64)
    results[estimator] = {
        "test_log_likelihood": metrics["test_log_likelihood"],
        "distance_to_truth": float(np.linalg.norm(lam - lam_true) / np.linalg.norm(lam_true)),
        "log_z_analytic": metrics["log_z_analytic"], "log_z_estimate": metrics["log_z_estimate"]}

print(f"{'estimator':<10}{'held-out LL':>12}{'|L - L*|/|L*|':>15}{'log Z (analytic)':>18}{'log Z (NCE)':>13}")
for estimator, r in results.items():
    nce_z = "" if r["log_z_estimate"] is None else f"{r['log_z_estimate']:.2f}"
    print(f"{estimator:<10}{r['test_log_likelihood']:>12.2f}{r['distance_to_truth']:>15.3f}"
          f"{r['log_z_analytic']:>18.2f}{nce_z:>13}")
print(f"truth: log Z {log_z_true:.2f}")

# %% [markdown]
# What to read in the table:
#
# * `mle` is the exact optimum for these rows: its distance to the truth (about 1%) is pure sampling
#   noise, and every other estimator's distance should be judged against it.
# * NCE also *learns* log Z (as -c). Its estimate sits next to the analytic log Z of the Lambda it learnt,
#   because its noise (by default a score-matching fit, then its own previous round) is close to the data.
# * cNCE and score matching never see Z; their Lambda is checked through the held-out log-likelihood,
#   which for these exact Gaussians is computed with the analytic log Z.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
names = list(results)
axes[0].bar(names, [results[n]["distance_to_truth"] for n in names], color="tab:blue")
axes[0].set_ylabel("relative distance to the true Lambda")
axes[1].bar(names, [results["mle"]["test_log_likelihood"] - results[n]["test_log_likelihood"] for n in names],
            color="tab:orange")
axes[1].set_ylabel("held-out LL below mle (nats per row)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The learnt couplings of one estimator, drawn on the pixel grid (right-hand neighbour couplings, the
# same map `train.gaussian` writes to TensorBoard as `precision_maps`):

# %%
nce_model = tf.saved_model.load(str(work / "nce-model"))  # Held: a loaded model's functions need it alive.
lam_nce = nce_model.precision().numpy()
right = lambda m: np.array([m[k, k + 1] if (k + 1) % 28 else 0.0 for k in range(784)]).reshape(28, 28)  # noqa: E731
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for ax, (title, m) in zip(axes, (("true", lam_true), ("NCE", lam_nce))):
    ax.imshow(right(m * np.outer(std, std)), cmap="RdBu", vmin=-0.25, vmax=0.25)  # standardised couplings
    ax.set_title(f"{title}: right-neighbour coupling"), ax.axis("off")
plt.show()

# %%
if os.environ.get("TUTORIAL_RESULTS"):
    import json

    pathlib.Path(os.environ["TUTORIAL_RESULTS"]).write_text(json.dumps({**results, "log_z_true": log_z_true}))
