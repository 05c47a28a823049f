"""Exercise 2 end to end: patches, optional whitening, a deep energy model trained by denoising score
matching (default), exact score matching, CD or NCE, scores, figures, export.

`train_and_evaluate(config)` is what `python -m train.dem` runs; it is importable and tested.

Evaluation (all log-densities unnormalised, in raw pixel space): mean and std of log p~ on held-out
patches (cut from photographs not used for training), and the AUROC of held-out patches against samples
of the fitted Gaussian (the constrained Gaussian of the training patches: empirical mean plus the
4-neighbour grid precision of maximum likelihood), against samples of the full-covariance Gaussian, and
against MNIST test digits when TFDS_DATA_DIR or --mnist-dir provides them: the probability that a random
held-out patch gets a higher log p~ than a random sample of the other set (Mann-Whitney U / (n1 n2)). The
fitted grid Gaussian's and the full-covariance Gaussian's own AUROCs are reported beside each as the
baselines the deep model has to beat. The filters (rows of V) are summarised by their localisation and
the kurtosis of their responses as rows in ZCA-whitened space (`energy_models.filter_stats`), whatever the
model's own whitening.
"""

import dataclasses
import functools
import math
import os
import pathlib
import sys
import time

import numpy as np

from energy_models import export, rundir
from energy_models.console import progress_verbosity
from energy_models.distribute import strategy_for
from energy_models.scoring import auroc
from energy_models.errors import UserError
from energy_models.experiments.flags import check_applies, check_ranges, flag

WHITENINGS = ("none", "zca", "pca", "gaussian")
METHODS = ("dsm", "sm", "cd", "nce")
# Methods without MCMC in training (score matching); their per-method defaults differ from CD's.
SCORE_METHODS = ("dsm", "sm")
# Principal components of the whitened patches the score-matching models see (--whiten-components):
# under ZCA with eps 1e-6 the ~600 high-frequency directions (covariance eigenvalues 1.7e-4 to 5e-3 of
# 0.03-3) become unit-variance, nearly Gaussian pixel noise that swamps V's gradient; in 784 dimensions
# V stayed near random, in the top 150 it learns localised edges (bench/DEM.md, "Score matching").
DEFAULT_COMPONENTS = 150
# Ridge added to the patch covariance before inverting it (8-bit photographs have a noise floor of
# about (1/255)^2 / 12 = 1.3e-6 per pixel): keeps Sigma positive definite without making the Gaussian
# visibly noisier than the patches it was fitted to.
GAUSSIAN_RIDGE = 1e-6



@dataclasses.dataclass
class DEMConfig:
    """Every setting of `python -m train.dem` (each field is a command-line flag)."""

    images: str = flag("folder, glob or image file of photographs to cut patches from (default: the "
                        "photographs bundled with scikit-image)", default=None)
    num_patches: int = flag("patches to cut (training plus held-out)", default=50_000)
    patch_size: str = flag("size of the patches to cut: a side p (p x p) or HxW such as 16x32 (a --patches "
                           "file brings its own size)", default=28, metavar="P|HxW")
    colour: bool = flag("keep the photographs' colour: RGB patches of H x W x 3 values (a --patches file "
                        "brings its own channels)", default=False)
    patches: str = flag("load this patch file (.npz from PatchSet.save) instead of cutting patches",
                         default=None)
    whiten: str = flag("whitening in front of the model (gaussian: the fitted 4-neighbour grid Gaussian's "
                        "precision Cholesky, W = L^T)", default="zca", choices=WHITENINGS)
    # 1e-6 (not 1e-3): with 1e-3 the whitened patches have variance lambda / (lambda + eps) < 1 in the
    # high-frequency directions, so the sigma = 1 base is broader than the data and persistent CD measured a
    # 155-nat energy gap between negatives and data that the softplus term (convex in g) cannot close.
    whiten_epsilon: float = flag("added to every covariance eigenvalue by zca/pca whitening", default=1e-6)
    whiten_components: int = flag("zca/pca: confine V's rows to the top N principal components of the patches; "
                                  "the other directions are modelled by the Gaussian term alone, so the "
                                  "density stays proper in every pixel (default: 150 for dsm and sm, or "
                                  "every value of smaller patches; all pixels for cd and nce)", default=None)
    sigma: float = flag("std sigma of the model's Gaussian term -||x||^2/(2 sigma^2) (1 or 0.1 in the "
                         "exercise); with --learn-sigma its starting value", default=1.0)
    learn_sigma: bool = flag("learn sigma (as log sigma^2) with the other parameters instead of fixing it",
                             default=False)
    method: str = flag("training method: dsm (denoising score matching), sm (exact score matching), cd "
                        "(contrastive divergence with MCMC negatives) or nce (noise-contrastive estimation "
                        "against the fitted Gaussian; also learns log Z)", default="dsm", choices=METHODS)
    dsm_noise: float = flag("dsm: std of the denoising noise, as a fraction of the patches' root-mean-square "
                             "std per coordinate in model space (1 when whitened)", default=0.3)
    nu: int = flag("nce: noise draws per data patch", default=1)
    mcmc: str = flag("x-move of the Gibbs sweeps: langevin, mala or hmc (tfp.mcmc's moves)",
                      default="mala", choices=("langevin", "mala", "hmc"))
    mcmc_steps: int = flag("Gibbs sweeps per training step (k of CD-k)", default=10)
    step_size: float = flag("initial MCMC step size eta (Langevin/MALA: noise variance; HMC: leapfrog "
                             "step); adapted towards the target acceptance for mala and hmc", default=0.1)
    leapfrog_steps: int = flag("HMC leapfrog steps per move", default=5)
    # Persistent by default: CD-10 chains started at the data moved so little that the data and negative
    # energies differed by the Gaussian term only and V did not learn (bench/DEM.md, "Tuning").
    persistent: bool = flag("persistent CD: keep the chains across steps instead of restarting at the data "
                             "(--no-persistent: CD-k from the data batch)", default=True)
    z_sampling: str = flag("latents of the gradient estimate: gibbs (z ~ p(z|x)) or mean (E[z|x])",
                            default="mean", choices=("gibbs", "mean"))
    hidden: int = flag("width of g(x) = s(V x), rows of V", default=64)
    g_bias: bool = flag("give g a bias d, g(x) = s(V x + d), so a unit can threshold |v^T x| away from 0 "
                         "(default: on for dsm and sm, where it measured localised filters; off for cd and "
                         "nce, as in the exercise)", default=None)
    latents: int = flag("number K of binary latents", default=64)
    epochs: int = flag("passes over the training patches (default: 20 for dsm and sm, 10 for cd and nce)",
                       default=None)
    batch_size: int = flag("patches per step (and persistent chains) (default: 128 for dsm and sm, 256 for "
                           "cd and nce)", default=None)
    optimizer: str = flag("optimiser", default="adam", choices=("sgd", "rmsprop", "adam"))
    steps_per_execution: int = flag("training steps per call of the compiled step (Keras's "
                                    "steps_per_execution: less Python per step; progress bars and batch "
                                    "callbacks, the divergence check included, then see every Nth step; 13 is "
                                    "faster but not the default: its parameters differ from 1's, README)",
                                    default=1)
    learning_rate: float = flag("learning rate (default: 0.01 for dsm and sm, 0.03 for cd and nce)",
                                default=None)
    sample_sweeps: int = flag("Gibbs sweeps of the samples drawn for figures and by the SavedModel's "
                               "sample()", default=100)
    mcmc_health_every: int = flag("epochs between checks of the sampler's health (split R-hat and ESS of 64 "
                                  "chains, energy gap; TensorBoard mcmc/*); the last epoch is always checked",
                                  default=10)
    mnist_dir: str = flag("tensorflow-datasets folder with MNIST for the digits AUROC (default: "
                           "$TFDS_DATA_DIR; skipped when neither is set)", default=None)
    seed: int = flag("seed of every random draw (patches, initialisation, MCMC, shuffling)", default=0)
    distribute: str = flag("tf.distribute strategy: none (one device), mirrored (all local GPUs, else all "
                            "logical CPUs) or multiworker (machines listed in TF_CONFIG); --batch-size is "
                            "the global batch", default="none", choices=("none", "mirrored", "multiworker"))
    checkpoint_every: int = flag("epochs between checkpoints in RUN_DIR/checkpoints (a re-run of the same "
                                  "command resumes from the newest)", default=1)
    run_dir: str = flag("where TensorBoard logs, config.json, metrics.json, figures and checkpoints go "
                         "(default: runs/dem-WHITEN-sigmaSIGMA)", default=None)
    export_dir: str = flag("where the SavedModel goes (default: saved_models/dem-WHITEN-sigmaSIGMA)",
                            default=None)
    overwrite: bool = flag("replace a run or export directory that holds something else", default=False)

    def resolve(self):
        """Checks every value and fills in the default directories; returns self.

        Raises:
            UserError: naming the flag and the value when a value is out of range.
        """
        from energy_models.data.patches import size_setting

        self.patch_size = size_setting(self.patch_size)  # 28 (as recorded before HxW sizes) or "16x32".
        positive_int = "must be a positive integer"
        checks = [
            ("--num-patches", self.num_patches, self.num_patches >= 2, "must be at least 2"),
            ("--whiten", self.whiten, self.whiten in WHITENINGS, f"must be one of {', '.join(WHITENINGS)}"),
            ("--whiten-epsilon", self.whiten_epsilon, _finite(self.whiten_epsilon) and self.whiten_epsilon > 0,
             "must be > 0"),
            ("--sigma", self.sigma, _finite(self.sigma) and self.sigma > 0, "must be > 0 (e.g. 1 or 0.1)"),
            ("--method", self.method, self.method in METHODS, f"must be one of {', '.join(METHODS)}"),
            ("--dsm-noise", self.dsm_noise, _finite(self.dsm_noise) and self.dsm_noise > 0, "must be > 0"),
            ("--whiten-components", self.whiten_components,
             self.whiten_components is None or 1 <= self.whiten_components <= 784 ** 2,
             "must be a positive integer"),
            ("--nu", self.nu, self.nu >= 1, positive_int),
            ("--mcmc", self.mcmc, self.mcmc in ("langevin", "mala", "hmc"), "must be langevin, mala or hmc"),
            ("--mcmc-steps", self.mcmc_steps, self.mcmc_steps >= 1, positive_int),
            ("--step-size", self.step_size, _finite(self.step_size) and self.step_size > 0, "must be > 0"),
            ("--leapfrog-steps", self.leapfrog_steps, self.leapfrog_steps >= 1, positive_int),
            ("--z-sampling", self.z_sampling, self.z_sampling in ("gibbs", "mean"), "must be gibbs or mean"),
            ("--hidden", self.hidden, self.hidden >= 1, positive_int),
            ("--latents", self.latents, self.latents >= 1, positive_int),
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, positive_int),
            ("--batch-size", self.batch_size, self.batch_size is None or self.batch_size >= 1, positive_int),
            ("--steps-per-execution", self.steps_per_execution, self.steps_per_execution >= 1, positive_int),
            ("--optimizer", self.optimizer, self.optimizer in ("sgd", "rmsprop", "adam"),
             "must be sgd, rmsprop or adam"),
            ("--learning-rate", self.learning_rate,
             self.learning_rate is None or (_finite(self.learning_rate) and self.learning_rate > 0), "must be > 0"),
            ("--sample-sweeps", self.sample_sweeps, self.sample_sweeps >= 1, positive_int),
            ("--mcmc-health-every", self.mcmc_health_every, self.mcmc_health_every >= 1, positive_int),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 1, positive_int),
        ]
        check_ranges(checks)
        check_applies(self, DEM_SCOPES)  # Before the per-method defaults below fill in unset flags.
        scored = self.method in SCORE_METHODS
        for name, by_score, by_mcmc in (("epochs", 20, 10), ("batch_size", 128, 256),
                                        ("learning_rate", 1e-2, 3e-2), ("g_bias", True, False)):
            if getattr(self, name) is None:
                setattr(self, name, by_score if scored else by_mcmc)
        if self.whiten_components is None and scored and self.whiten in ("zca", "pca"):
            self.whiten_components = DEFAULT_COMPONENTS
            self.components_by_default = True  # not a field: capped at the patch's D when smaller
        if not self.patches:
            from energy_models.data.patches import check_patch_memory

            check_patch_memory(self.num_patches, self.patch_size, 3 if self.colour else 1)  # Before any folder.
        name = f"dem-{self.whiten}-sigma{self.sigma:g}" + ("" if self.method == "dsm" else f"-{self.method}")
        self.run_dir = self.run_dir or str(pathlib.Path("runs") / name)
        self.export_dir = self.export_dir or str(pathlib.Path("saved_models") / name)
        return self


# Flags that do nothing in some combinations (see flags.check_applies).
DEM_SCOPES = {"images": (lambda c: not c.patches, "patches cut from photographs (not with --patches)"),
              "num_patches": (lambda c: not c.patches, "patches cut from photographs (not with --patches)"),
              "patch_size": (lambda c: not c.patches, "patches cut from photographs (not with --patches)"),
              "colour": (lambda c: not c.patches, "patches cut from photographs (not with --patches)"),
              "nu": (lambda c: c.method == "nce", "--method nce"),
              "dsm_noise": (lambda c: c.method == "dsm", "--method dsm"),
              "whiten_components": (lambda c: c.whiten in ("zca", "pca"), "--whiten zca or pca"),
              **{name: (lambda c: c.method == "cd", "--method cd")
                 for name in ("mcmc_steps", "persistent", "z_sampling")}}


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclasses.dataclass
class FittedGaussian:
    """N(m, Sigma) fitted to training patches (float64).

    `grid` is the fitted Gaussian of Exercise 2: the empirical mean and the constrained maximum-likelihood
    precision with the 4-neighbour grid pattern (`energy_models.estimators.mle`). `full` has the sample
    covariance; it is reported beside it, as a stronger Gaussian baseline. Both add GAUSSIAN_RIDGE I to
    the sample covariance.
    """

    mean: np.ndarray
    covariance: np.ndarray

    @classmethod
    def full(cls, x):
        from energy_models.whitening import mean_and_covariance

        mean, cov = mean_and_covariance(x)
        return cls(mean, cov + GAUSSIAN_RIDGE * np.eye(len(mean)))

    @classmethod
    def grid(cls, x, neighbourhood=4, shape=None):
        """max log det Lambda - tr(S Lambda) over precisions with the grid pattern of the patches in the rows
        of x (Newton, exact): `shape` (height, width, channels), by default square grayscale p x p (colour:
        C x C blocks between neighbouring pixels and within a pixel; `energy_models.grid`)."""
        from energy_models import grid as grid_lib
        from energy_models.estimators.mle import fit_grid_mle
        from energy_models.whitening import mean_and_covariance

        from energy_models.data.arrays import check_covariance

        mean, cov = mean_and_covariance(x)
        check_covariance(cov, "the training patches", "use photographs with texture (--images)", len(x))
        if shape is None:
            side = math.isqrt(len(mean))
            if side * side != len(mean):
                raise UserError(f"patches have {len(mean)} pixels, not a square number; give the fitted grid "
                                "Gaussian their shape (cut them with python -m train.dem --images)")
            shape = (side, side, 1)
        pattern = grid_lib.grid_pattern(shape[0], shape[1], neighbourhood, shape[2])
        precision = fit_grid_mle(cov + GAUSSIAN_RIDGE * np.eye(len(mean)), pattern).precision
        gaussian = cls(mean, np.linalg.inv(precision))
        # The fitted precision itself, into `precision`'s cache: inverting the covariance back would
        # cost another inversion and blur the grid's zeros by rounding.
        gaussian.__dict__["precision"] = precision
        return gaussian

    # Cached: train.dem asks for them once per sample/log_prob call and for the whitening, noise and export.
    @functools.cached_property
    def cholesky(self):
        """L with Sigma = L L^T."""
        return np.linalg.cholesky(self.covariance)

    @functools.cached_property
    def precision(self):
        """Lambda = Sigma^-1."""
        return np.linalg.inv(self.covariance)

    @functools.cached_property
    def precision_cholesky(self):
        """Lower L with Lambda = L L^T (the `--whiten gaussian` whitening W = L^T and the NCE noise).

        Raises:
            NotPositiveDefiniteError: Lambda is not positive definite.
        """
        from energy_models.gaussian import checked_cholesky

        return checked_cholesky(self.precision)

    def sample(self, n, seed):
        eps = np.random.default_rng(seed).standard_normal((n, len(self.mean)))
        return (self.mean + eps @ self.cholesky.T).astype(np.float32)

    def log_prob(self, x):
        chol = self.cholesky
        a = np.linalg.solve(chol, (np.asarray(x, np.float64) - self.mean).T)  # L^-1 (x - m)
        return -0.5 * np.sum(a * a, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * len(self.mean) * np.log(2 * np.pi)


def gaussian_whitening(gaussian):
    """`LinearWhitening` W = L^T from a `FittedGaussian`'s precision Lambda = L L^T.

    `--whiten gaussian` passes the fitted grid Gaussian, so u = L^T (x - m) maps its samples to N(0, I).

    Raises:
        NotPositiveDefiniteError: Lambda is not positive definite.
    """
    from energy_models.whitening import LinearWhitening

    return LinearWhitening.from_precision_cholesky(gaussian.mean, gaussian.precision_cholesky, name="whitening")


def make_whitening(config, train, gaussian):
    """The whitening layer named by `config.whiten` (None for "none")."""
    from energy_models.whitening import LinearWhitening

    if config.whiten == "zca":
        return LinearWhitening.zca(train, config.whiten_epsilon, name="whitening")
    if config.whiten == "pca":
        return LinearWhitening.pca(train, config.whiten_epsilon, name="whitening")
    if config.whiten == "gaussian":
        return gaussian_whitening(gaussian)
    return None


def load_patches(config, run_dir):
    """The patch set: loaded from --patches, or cut from --images and saved as RUN_DIR/patches.npz."""
    from energy_models.data.images import default_image_source
    from energy_models.data.patches import load_patch_set, make_patch_set

    if config.patches:
        return load_patch_set(config.patches)
    source = config.images if config.images is not None else default_image_source()
    patch_set = make_patch_set(source, config.num_patches, seed=config.seed, patch_size=config.patch_size,
                               colour=config.colour)
    patch_set.save(run_dir / "patches.npz")
    return patch_set


def build_model(config, train, whitening, gaussian=None):
    """The compiled trainer of `config.method` (`DEMScoreMatching` for dsm and sm, `ContrastiveDivergence`
    for cd, `DEMNoiseContrastive` with `gaussian` as its noise for nce), with b started at the data's
    maximum-likelihood value for V = 0: b = mean(u) / sigma^2, so the initial model is close to
    N(mean(u), sigma^2 I). With --whiten-components k, V's rows span the top k principal directions."""
    import keras
    import tensorflow as tf

    from energy_models.estimators.contrastive_divergence import ContrastiveDivergence
    from energy_models.layers import DEMEnergy

    keras.utils.set_random_seed(config.seed)
    settings = dict(dim=train.shape[1], whitening=whitening, mcmc=config.mcmc, mcmc_steps=config.mcmc_steps,
                    step_size=config.step_size, num_chains=config.batch_size, z_sampling=config.z_sampling,
                    leapfrog_steps=config.leapfrog_steps, seed=config.seed)
    components = config.whiten_components if whitening is not None else None
    if components is not None and components > train.shape[1] and getattr(config, "components_by_default", False):
        components = config.whiten_components = train.shape[1]  # the default, for patches under 150 values
    elif components is not None and components > train.shape[1]:
        raise UserError(f"--whiten-components {components} is more than the {train.shape[1]} pixels of a "
                        "patch; pass at most that")
    energy = DEMEnergy(config.hidden, config.latents, config.sigma, use_bias=config.g_bias,
                       components=components, learn_sigma=config.learn_sigma, name="energy")
    u = train if whitening is None else np.asarray(whitening(train[:10_000]))
    if config.method in SCORE_METHODS:
        from energy_models.estimators.dem_score_matching import DEMScoreMatching

        # dsm's noise in units of the data's spread: 1 per coordinate when whitened, ~0.2 for raw pixels.
        noise_std = config.dsm_noise * float(np.sqrt(np.mean(np.var(u, axis=0)))) if config.method == "dsm" else 0.0
        model = DEMScoreMatching(energy, noise_std=noise_std, **settings)
    elif config.method == "nce":
        from energy_models.estimators.dem_nce import DEMNoiseContrastive

        if gaussian is None:
            raise ValueError("--method nce needs the fitted Gaussian as its noise: pass gaussian")

        model = DEMNoiseContrastive(energy, gaussian.mean, gaussian.precision_cholesky,
                                    nu=config.nu, **settings)
    else:
        model = ContrastiveDivergence(energy, persistent=config.persistent, **settings)
    if components is not None:
        from energy_models.whitening import principal_directions

        # In model space: zca keeps U, so the top-k directions are U_k's columns; pca's coordinates are
        # already the principal components, in order.
        basis = principal_directions(train, components) if config.whiten == "zca" \
            else np.eye(components, train.shape[1])
        model.energy.set_basis(basis)
    model.energy.b.assign(u.mean(axis=0) / config.sigma ** 2)
    if config.method == "nce":
        model.c.assign(model.initial_c(train[:5000], seed=config.seed))
    optimizer = {"sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
                 "adam": keras.optimizers.Adam}[config.optimizer](config.learning_rate)
    # XLA compiles the step for one device only: a step that reads variables mirrored on other devices
    # fails ("tf.Variable on a different device", XLA known issues), so replicas run it uncompiled.
    model.compile(optimizer=optimizer, jit_compile=tf.distribute.get_strategy().num_replicas_in_sync == 1,
                  steps_per_execution=config.steps_per_execution)
    return model


def load_mnist(config):
    """MNIST test digits as float32 [n, 784] in [0, 1], or None when no data folder is configured."""
    data_dir = config.mnist_dir or os.environ.get("TFDS_DATA_DIR")
    if not data_dir:
        return None
    from energy_models.data.mnist import load_mnist_images

    return load_mnist_images("test", data_dir).reshape(-1, 784).astype(np.float32) / 255.0


def zca_of(full):
    """(W, W^-1) of the ZCA whitening of the full-covariance Gaussian (eps = its ridge, 1e-6, as train.dem's
    default --whiten-epsilon): W = U diag(lambda)^-1/2 U^T."""
    values, vectors = np.linalg.eigh(full.covariance)
    values = np.clip(values, GAUSSIAN_RIDGE, None)
    return (vectors / np.sqrt(values)) @ vectors.T, (vectors * np.sqrt(values)) @ vectors.T


def filter_summary(pixel_filters, full, heldout, seed):
    """Localisation and response kurtosis (`energy_models.filter_stats`) of a model's filters as rows in
    ZCA-whitened space, whatever the model's own whitening: a pixel filter f responds f^T (x - m) =
    (W^-1 f)^T u for u = W (x - m), so its row in ZCA space is f W^-1 (W is symmetric)."""
    from energy_models import filter_stats

    white, inverse = zca_of(full)
    rows = np.asarray(pixel_filters, np.float64) @ inverse
    return filter_stats.summary(rows, (np.asarray(heldout, np.float64) - full.mean) @ white, seed)


def evaluate(model, gaussian, full, heldout, config, n_eval=5000):
    """Held-out log p~ statistics and AUROCs (module docstring); a dict for metrics.json.

    The sets held-out patches are ranked against: samples of the fitted grid Gaussian, samples of the
    full-covariance Gaussian, and MNIST test digits when available. Beside each AUROC, the fitted grid
    Gaussian's own (`gaussian_auroc_vs_*`) and the full-covariance Gaussian's (`full_gaussian_auroc_vs_*`).
    """
    rng = np.random.default_rng(config.seed + 1)
    held = heldout[rng.permutation(len(heldout))[:n_eval]]
    others = {"gaussian_samples": gaussian.sample(len(held), config.seed + 2),
              "full_gaussian_samples": full.sample(len(held), config.seed + 3)}
    mnist = load_mnist(config)
    if mnist is not None and mnist.shape[1] == held.shape[1]:  # Digits are 28 x 28: other sizes skip them.
        others["mnist"] = mnist[rng.permutation(len(mnist))[:n_eval]]
    scores = model.score_samples(held)
    result = {"heldout_log_prob_mean": float(np.mean(scores)), "heldout_log_prob_std": float(np.std(scores)),
              "n_eval": int(len(held)),
              # Normalised baselines for the AIS-normalised log-likelihood of train.score --ais-steps.
              "full_gaussian_heldout_log_prob": float(np.mean(full.log_prob(held))),
              "gaussian_heldout_log_prob": float(np.mean(gaussian.log_prob(held))),
              **filter_summary(model.filters(), full, held, config.seed)}
    baseline, full_baseline = gaussian.log_prob(held), full.log_prob(held)
    for name, x in others.items():
        result[f"auroc_vs_{name}"] = auroc(scores, model.score_samples(x))
        result[f"gaussian_auroc_vs_{name}"] = auroc(baseline, gaussian.log_prob(x))
        result[f"full_gaussian_auroc_vs_{name}"] = auroc(full_baseline, full.log_prob(x))
    return result


def train_and_evaluate(config):
    """Trains the deep energy model named by `config`, evaluates it, writes figures, metrics and model.

    Returns:
        The metrics dict (also written to RUN_DIR/metrics.json).

    Raises:
        UserError: bad settings, missing data, or divergence (the message names the step and what to lower).
    """
    import tensorflow as tf

    from energy_models import export_dem, mcmc_health
    from energy_models.checkpoints import DivergenceGuard, TrainingCheckpoint
    from energy_models.data.batches import epoch_batches, steps_per_epoch
    from energy_models.experiments import dem_callbacks
    from energy_models.tensorboard import TensorBoard

    config.resolve()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs its first operation.
    strategy = strategy_for(config.distribute, config.batch_size)
    settings, defaults = dataclasses.asdict(config), dataclasses.asdict(DEMConfig())
    export.check_export_target(config.export_dir, config.overwrite, settings, defaults)
    run_dir = rundir.start_or_resume(config.run_dir, settings, config.overwrite, defaults=defaults)

    patch_set = load_patches(config, run_dir)
    train, heldout = patch_set.train, patch_set.heldout
    if len(train) < config.batch_size or len(heldout) == 0:
        raise UserError(f"{len(train)} training and {len(heldout)} held-out patches: need at least "
                        f"--batch-size ({config.batch_size}) training patches and some held-out ones; "
                        "raise --num-patches or lower --batch-size")
    shape = patch_set.shape  # (height, width, channels): --patch-size and --colour, or the patch file's own.
    gaussian, full = FittedGaussian.grid(train, shape=shape), FittedGaussian.full(train)
    with strategy.scope():  # Variables (and the optimiser's) are created per replica here.
        model = build_model(config, train, make_whitening(config, train, gaussian), gaussian)
    checkpoint = TrainingCheckpoint(run_dir / "checkpoints", config.checkpoint_every)
    initial_epoch = checkpoint.restore(model)  # 0 for a fresh run.
    divergence = DivergenceGuard(
        checkpoint, watched=dem_callbacks.WATCHED,
        remedies=f"a smaller --learning-rate (now {config.learning_rate:g})" + (
            f" or --step-size (now {config.step_size:g}), or more --mcmc-steps (now {config.mcmc_steps})"
            if config.method == "cd" else ""))
    callbacks = [divergence, checkpoint, TensorBoard(str(run_dir), update_freq=50),
                 dem_callbacks.ImageSummaries(run_dir / "eval", gaussian, config, heldout, shape=shape),
                 health := dem_callbacks.MCMCHealth(run_dir / "eval", gaussian, heldout, config.seed,
                                                    config.mcmc_health_every)]
    steps = steps_per_epoch(len(train), config.batch_size)
    start = time.perf_counter()
    history = model.fit(epoch_batches(train, config.batch_size, config.seed, initial_epoch),
                        epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                        callbacks=callbacks, shuffle=False, verbose=progress_verbosity())
    seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))
    latest = checkpoint.latest()
    metrics = {"method": config.method, "whiten": config.whiten, "whiten_components": config.whiten_components,
               "sigma": config.sigma, "mcmc": config.mcmc, "g_bias": config.g_bias,
               "n_train": int(len(train)), "n_heldout": int(len(heldout)), "patch_shape": list(shape),
               "seconds": seconds,
               "patches_per_second": steps * config.batch_size * epochs_run / max(seconds, 1e-9),
               "resumed_from_epoch": initial_epoch, "replicas": strategy.num_replicas_in_sync,
               "checkpoint_seconds": checkpoint.seconds,
               "final": {k: float(v[-1]) for k, v in history.history.items() if v},
               "log_abs_det_whitening": float(model.log_abs_det),
               "log_z": model.log_z if config.method == "nce" else None,
               "checkpoint": str(latest[1]) if latest else None}
    if divergence.diverged:
        metrics["diverged"] = divergence.message
        rundir.write_json_atomically(run_dir / "metrics.json", metrics)
        raise UserError(divergence.message)
    metrics.update(evaluate(model, gaussian, full, heldout, config))
    # The last epoch's chain health (a resumed run with no epoch left measures it now).
    metrics.update(health.last or mcmc_health.model_diagnostics(model, gaussian, heldout, config.seed))
    metrics["mcmc_seconds"] = health.seconds  # Inside `seconds`: the checks' share of the training time.
    metrics["mcmc_warning"] = mcmc_health.not_mixed_line(
        "samples of the trained model", metrics["mcmc_rhat_max"], metrics["mcmc_ess_min"],
        f"use more --sample-sweeps (now {config.sample_sweeps}) or tune --step-size (now {config.step_size:g}; "
        "larger if the chains barely move, smaller if MALA rejects most moves)")
    if metrics["mcmc_warning"]:
        print(metrics["mcmc_warning"], file=sys.stderr)
    dem_callbacks.write_figures(model, gaussian, heldout, config, run_dir, shape=shape)
    module = export_dem.DEMModule(model, gaussian.mean, gaussian.cholesky,
                                  {**{k: metrics[k] for k in ("whiten", "whiten_components", "sigma", "n_train", "method")},
                                   **dict(zip(("height", "width", "channels"), shape))},
                                  sample_sweeps=config.sample_sweeps, log_z=metrics["log_z"],
                                  log_z_source="NCE against the fitted Gaussian (train.dem --method nce)")
    metrics["export_dir"] = export.save_atomically(module, config.export_dir, config.overwrite, settings,
                                                   defaults)
    metrics = rundir.earlier_timings(run_dir, metrics, trained=epochs_run > 0)
    rundir.write_json_atomically(run_dir / "metrics.json", metrics)
    return metrics


# What each AUROC's other set is, in the printed summary.
SET_NAMES = {"gaussian_samples": "samples of the fitted 4-neighbour grid Gaussian",
             "full_gaussian_samples": "samples of the full-covariance Gaussian",
             "mnist": "MNIST test digits"}


def summary_lines(metrics):
    """The short human summary printed by the command line."""
    method = metrics["method"] + (f" with {metrics['mcmc']}" if metrics["method"] == "cd" else "")
    components = metrics.get("whiten_components")
    whiten = metrics["whiten"] + (f" (top {components} components)" if components else "")
    lines = [f"deep energy model, {method}, whiten {whiten}, "
             f"sigma {metrics['sigma']:g}: {metrics['n_train']} training patches in {metrics['seconds']:.0f} s "
             f"({metrics['patches_per_second']:.0f} patches/s)",
             f"  held-out log p~ (pixel space, unnormalised): mean {metrics['heldout_log_prob_mean']:.1f}, "
             f"standard deviation {metrics['heldout_log_prob_std']:.1f} over {metrics.get('n_eval', '?')} "
             f"patches"]
    if "filter_localisation" in metrics:
        lines.append(f"  filters (rows of V in ZCA-whitened space, median): localisation "
                     f"{metrics['filter_localisation']:.3f} (random rows {metrics['random_localisation']:.3f}), "
                     f"response kurtosis {metrics['filter_kurtosis']:.2f} ({metrics['kurtosis_ratio']:.2f}x random "
                     f"rows)")
    if metrics.get("log_z") is not None:
        lines.append(f"  log Z (NCE): {metrics['log_z']:.2f}; normalised held-out log p: "
                     f"{metrics['heldout_log_prob_mean'] - metrics['log_z']:.1f} nats per patch")
    for key in sorted(k for k in metrics if k.startswith("auroc_vs_")):
        name = key[len("auroc_vs_"):]
        lines.append(f"  AUROC held-out patches vs {SET_NAMES.get(name, name.replace('_', ' '))}: "
                     f"{metrics[key]:.3f} (the grid Gaussian's own: {metrics['gaussian_' + key]:.3f}"
                     + (f", the full-covariance Gaussian's: {metrics['full_gaussian_' + key]:.3f}"
                        if "full_gaussian_" + key in metrics else "") + ")")
    if "mcmc_rhat_max" in metrics:
        lines.append(f"  MCMC ({metrics['mcmc_chains']} chains from {metrics['mcmc_start']}): split R-hat "
                     f"{metrics['mcmc_rhat_max']:.3f}, ESS {metrics['mcmc_ess_min']:.0f}, energy gap "
                     f"{metrics['mcmc_energy_gap']:.1f} nats (chains minus held-out patches)")
    lines.append(f"  SavedModel: {metrics['export_dir']}")
    return lines
