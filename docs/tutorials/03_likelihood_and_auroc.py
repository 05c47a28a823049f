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
# # A normalised log-likelihood and an out-of-distribution AUROC from a SavedModel
#
# An energy model gives log p~(x) = log p(x) + log Z with Z unknown. Two questions come up with every
# such model: *what is its log-likelihood* (needs log Z) and *does it tell my data from other data*
# (needs no log Z at all: a ranking). This tutorial answers both for a SavedModel, using only
# `tf.saved_model.load` and two small library functions.
#
# It trains a small deep energy model first (as in tutorial 2); point `MODEL` at any SavedModel of this
# project (and `PATCHES` at the patch set it was trained on) to score your own instead.

# %%
import json
import os
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from energy_models.data.patch_files import load_patch_set
from energy_models.evaluation import ais
from energy_models.evaluation.metrics import auroc
from energy_models.experiments.dem import train_and_evaluate
from energy_models.experiments.dem_config import DEMConfig
from energy_models.gaussian.fitted import FittedGaussian

tf.get_logger().setLevel("ERROR")  # Keeps "Assets written to ..." out of the outputs.
work = pathlib.Path(os.environ.get("TUTORIAL_DIR") or tempfile.mkdtemp(prefix="tutorial-03-"))
model_dir = os.environ.get("MODEL")
if not model_dir:
    config = DEMConfig(images=os.environ.get("PHOTOS") or None, num_patches=10_000, epochs=3,
                       run_dir=str(work / "run"), export_dir=str(work / "model"), overwrite=True)
    train_and_evaluate(config)
    model_dir = config.export_dir
model = tf.saved_model.load(model_dir)
print(json.loads(model.info().numpy())["kind"], "model, log Z stored:", json.loads(model.info().numpy()).get("log_z"))

# %% [markdown]
# ## log Z by annealed importance sampling, in both directions
#
# Forward AIS anneals N chains from a normalised Gaussian p_0 to the model through
# log p_beta = (1 - beta) log p_0 + beta log p~, and its importance weights give a *stochastic lower
# bound* on log Z. Reverse AIS starts from the model's own samples and anneals back: a *stochastic upper
# bound* (when those samples are exact). When the two agree, AIS has converged; when they do not, the
# gap says by how much the estimate may be off. The effective sample size (sum w)^2 / sum w^2 says how
# many chains the estimate rests on. With `trace=True`, forward AIS also continues its chains at the model
# (No-U-Turn HMC in the coordinates that whiten the base) and reports their split R-hat: near 1 when they
# sample one distribution, above 1.1 when they stay apart, e.g. in modes the sampler cannot cross (then the
# estimate rests on how many chains reached each mode).
#
# The base: a Gaussian fitted to the model's own samples (what `train.score --ais-steps` does).

# %%
samples = model.sample(4000, 1).numpy().astype(np.float64)
base = ais.base_gaussian(samples.mean(0), np.cov(samples.T, bias=True) + 1e-4 * np.eye(samples.shape[1]))
forward = ais.forward_ais(model.unnormalized_log_prob, base, num_steps=500, num_chains=32, seed=(0, 1),
                          trace=True)
reverse = ais.reverse_ais(model.unnormalized_log_prob, base, model.sample(32, 2).numpy(), num_steps=500,
                          seed=(0, 2))
for name, e in (("forward (lower bound)", forward), ("reverse (upper bound)", reverse)):
    print(f"{name}: log Z = {e.log_z:.2f} +- {e.stderr:.2f}, ESS {e.ess:.1f} of 32 chains, "
          f"HMC acceptance {e.acceptance:.2f}")
print(f"forward chains after the last temperature: split R-hat {forward.rhat_max:.3f}, "
      f"ESS {forward.chain_ess_min:.0f} of 32 x 20 records")
print(f"gap {reverse.log_z - forward.log_z:.2f} nats: "
      + ("converged" if abs(reverse.log_z - forward.log_z) <= 1 else "not converged, use more steps"))

# %% [markdown]
# ## The normalised held-out log-likelihood
#
# log p(x) = log p~(x) - log Z on held-out patches (from photographs the model never saw), against two
# exactly normalised baselines fitted to the same training patches: the full-covariance Gaussian and
# the 4-neighbour grid Gaussian. Natural-image models are judged by how far above the Gaussian they get.

# %%
patches = load_patch_set(os.environ.get("PATCHES") or work / "run" / "patches.npz")  # the model's patch set
held, train = patches.heldout[:3000], patches.train
log_p = model.unnormalized_log_prob(held).numpy() - forward.log_z
full, grid = FittedGaussian.full(train), FittedGaussian.grid(train)
print(f"held-out log p: model {log_p.mean():.1f}, full-covariance Gaussian {full.log_prob(held).mean():.1f}, "
      f"grid Gaussian {grid.log_prob(held).mean():.1f} nats per patch")

# %% [markdown]
# ## Out-of-distribution AUROC
#
# The AUROC of telling set A from set B by log p is P(log p(a) > log p(b)) for a random pair, the
# Mann-Whitney statistic (ties count half). It needs no log Z: subtracting a constant changes no ranking.
# Other sets here: samples of the grid Gaussian (same second-order statistics as the photographs, so
# only what the model learnt beyond the Gaussian can tell them apart), and MNIST digits when
# tensorflow-datasets has them (`TFDS_DATA_DIR`).

# %%
others = {"grid Gaussian samples": grid.sample(3000, 3)}
if os.environ.get("TFDS_DATA_DIR"):
    from energy_models.data.mnist import load_mnist_images

    others["MNIST digits"] = load_mnist_images("test", os.environ["TFDS_DATA_DIR"])[:3000].reshape(-1, 784) / 255.0
scores = {name: model.unnormalized_log_prob(x.astype(np.float32)).numpy() - forward.log_z for name, x in others.items()}
aurocs = {name: auroc(log_p, s) for name, s in scores.items()}
for name, value in aurocs.items():
    print(f"AUROC held-out patches vs {name}: {value:.3f}")

plt.figure(figsize=(7, 3.5))
for name, s in {"held-out patches": log_p, **scores}.items():
    plt.hist(s, bins=80, histtype="step", density=True, label=name)
plt.xlabel("log p (nats)"), plt.ylabel("density"), plt.legend()
plt.show()

# %% [markdown]
# The command line does all of this in one call, and stores log Z in the model folder when the two AIS
# directions agree:
#
#     python -m train.score --model MODEL --patches RUN/patches.npz --mnist test --ais-steps 500

# %%
if os.environ.get("TUTORIAL_RESULTS"):
    pathlib.Path(os.environ["TUTORIAL_RESULTS"]).write_text(json.dumps({
        "log_z_forward": forward.log_z, "log_z_reverse": reverse.log_z, "ess_forward": forward.ess,
        "rhat_forward": forward.rhat_max,
        "heldout_log_p": float(log_p.mean()), "full_gaussian_log_p": float(full.log_prob(held).mean()),
        "aurocs": aurocs}))
