"""`DEMConfig`: every setting of `python -m train.dem`, its checks and its per-method defaults."""

import dataclasses
import math
import pathlib

from energy_models.experiments.flags import check_applies, check_ranges, flag

WHITENINGS = ("none", "zca", "pca", "gaussian")


METHODS = ("dsm", "sm", "cd", "nce")


# Methods without MCMC in training (score matching); their per-method defaults differ from CD's.
SCORE_METHODS = ("dsm", "sm")


# Principal components of the whitened patches the score-matching models see (--whiten-components):
# under ZCA with eps 1e-6 the many high-frequency directions of small variance become unit-variance,
# nearly Gaussian pixel noise that swamps V's gradient; in all 784 dimensions V stays near random, in the
# top 150 it learns localised edges (BENCHMARKS.md, "energy_models/experiments/dem_config.py: DEM defaults").
DEFAULT_COMPONENTS = 150


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
    # high-frequency directions, so the sigma = 1 base is broader than the data and persistent CD is left with
    # an energy gap between negatives and data that the softplus term (convex in g) cannot close
    # (BENCHMARKS.md, "energy_models/experiments/dem_config.py: DEM defaults").
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
    # Persistent by default: CD-10 chains started at the data move so little that the data and negative
    # energies differ by the Gaussian term only and V does not learn (BENCHMARKS.md,
    # "energy_models/experiments/dem_config.py: DEM defaults").
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
        from energy_models.data.patch_size import size_setting

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
            from energy_models.data.patch_size import check_patch_memory

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
