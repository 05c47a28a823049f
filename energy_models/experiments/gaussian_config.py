"""`GaussianConfig`: every setting of `python -m train.gaussian`, its checks and its per-estimator defaults."""

import dataclasses
import pathlib

from energy_models.errors import UserError
from energy_models.experiments.flags import check_applies, check_ranges, flag


@dataclasses.dataclass
class GaussianConfig:
    """Every setting of `python -m train.gaussian` (each field is a command-line flag)."""

    dataset: str = flag("data to model: mnist (Exercise 1) or patches of photographs (Exercise 2)",
                         default="mnist", choices=("mnist", "patches"))
    estimator: str = flag("how Lambda is estimated: mle (exact maximum likelihood), nce, cnce "
                           "(conditional NCE) or sm (score matching)", default="mle",
                           choices=("mle", "nce", "cnce", "sm"))
    neighbourhood: int = flag("grid couplings: 4 or 8 neighbours", default=4,
                               choices=(4, 8))
    noise_std: float = flag("std of the Gaussian noise added to every MNIST pixel (0.1: variance 1/100)",
                             default=0.1)
    epochs: int = flag("training epochs of the stochastic estimators (default: 10; nce with --noise "
                        "adaptive: 1 per round, 2 with --neighbourhood 8)", default=None)
    batch_size: int = flag("minibatch size of the stochastic estimators", default=256)
    optimizer: str = flag("optimiser of the stochastic estimators", default="adam",
                           choices=("sgd", "rmsprop", "adam"))
    learning_rate: float = flag("starting learning rate of the stochastic estimators, cosine-decayed to 1%% "
                                 "(default: 0.01; nce with --noise adaptive: 0.03 in its rounds)",
                                 default=None)
    nu: float = flag("nce: noise-to-data ratio (weight of the noise term)", default=10.0)
    noise: str = flag("nce: noise distribution N(mu, Sigma_n). adaptive: rounds, a score-matching fit "
                       "first and then each NCE round's noise the previous round's fitted Gaussian (close "
                       "to the model, so NCE learns Lambda and log Z where its classifier is well "
                       "determined); or fixed: Sigma_n = scaled identity, the data's variances or the "
                       "data's full covariance (far from the grid family: NCE stays tens of nats below "
                       "maximum likelihood)", default="adaptive",
                       choices=("adaptive", "isotropic", "diagonal", "full"))
    rounds: int = flag("nce --noise adaptive: NCE rounds after the score-matching round (default: 1; "
                        "2 with --neighbourhood 8)", default=None)
    warmup_epochs: int = flag("nce --noise adaptive: epochs of the score-matching round that makes the "
                               "first noise (default: 2; 4 with --neighbourhood 8)", default=None)
    noise_model: str = flag("nce: a Gaussian SavedModel of the same data (e.g. this command's sm export) "
                             "whose covariance Lambda^-1 replaces the data's in --noise full: a noise "
                             "closer to the grid family (README, 'The log Z question')", default=None)
    noise_samples: int = flag("nce: fresh noise draws per step (default: --batch-size)", default=None)
    kappa: int = flag("cnce: noise samples per data point", default=1)
    epsilon: float = flag("cnce: conditional noise scale (default: the rule of "
                           "energy_models.gaussian.cnce.choose_epsilon)", default=None)
    pd_floor: float = flag("nce, cnce, sm: smallest eigenvalue the standardised precision "
                            "diag(sigma) Lambda diag(sigma) is kept above (a step that crosses it is "
                            "shortened towards the last tested point)", default=1e-3)
    pd_check_every: int = flag("nce, cnce, sm: steps between positive-definiteness tests (also at "
                                "every epoch end)", default=5)
    pd_mode: str = flag("nce, cnce, sm: what a step that leaves the cone gets: projected back along the "
                         "violated eigenvalues' normals (project) or shortened towards the last tested "
                         "point (backtrack)", default="project", choices=("project", "backtrack"))
    seed: int = flag("seed of every random draw (noise, shuffling, samples)", default=0)
    distribute: str = flag("nce, cnce, sm: tf.distribute strategy: none (one device), mirrored (all local "
                            "GPUs, else all logical CPUs) or multiworker (machines listed in TF_CONFIG); "
                            "--batch-size is the global batch", default="none",
                            choices=("none", "mirrored", "multiworker"))
    checkpoint_every: int = flag("nce, cnce, sm: epochs between checkpoints in RUN_DIR/checkpoints (a "
                                  "re-run of the same command resumes from the newest)", default=1)
    data_dir: str = flag("tensorflow-datasets data folder (default: $TFDS_DATA_DIR or "
                          "~/tensorflow_datasets)", default=None)
    limit: int = flag("use only the first N examples of each split (quick runs)", default=None)
    images: str = flag("patches: a folder (searched recursively), glob or file of photographs "
                        "(default: photographs shipped with scikit-image)", default=None)
    num_patches: int = flag("patches: number of patches to cut (training + held-out)",
                             default=50_000)
    patch_size: str = flag("patches: size of the patches to cut, a side p (p x p) or HxW such as 16x32 (the "
                            "model's grid is H x W; a --patches file brings its own size)", default=28,
                            metavar="P|HxW")
    colour: bool = flag("patches: keep the photographs' colour: RGB patches of H x W x 3 values; the grid then "
                         "couples every channel of a pixel with every channel of the same pixel and of its "
                         "neighbours (a --patches file brings its own channels)", default=False)
    patches: str = flag("patches: load this .npz patch set instead of cutting new patches",
                         default=None)
    heldout_fraction: float = flag("patches: fraction of the images held out (whole images)",
                                    default=0.2)
    whiten_epsilon: float = flag("patches: regulariser added to covariance eigenvalues for the ZCA "
                                  "and PCA whitening figures", default=1e-4)
    run_dir: str = flag("where TensorBoard logs, config.json, metrics.json and figures go "
                         "(default: runs/gaussian-DATASET-ESTIMATOR-nNEIGHBOURHOOD)", default=None)
    export_dir: str = flag("where the SavedModel goes (default: "
                            "saved_models/gaussian-DATASET-ESTIMATOR-nNEIGHBOURHOOD)", default=None)
    overwrite: bool = flag("replace a run or export directory that holds something else",
                            default=False)

    def resolve(self):
        """Checks every value and fills in the default directories; returns self.

        Raises:
          UserError: naming the flag and the value when a value is out of range.
        """
        from energy_models.data.patch_size import size_setting

        self.patch_size = size_setting(self.patch_size)  # 28 (as recorded before HxW sizes) or "16x32".
        checks = [
            ("--noise-std", self.noise_std, self.noise_std >= 0, "must be >= 0"),
            ("--rounds", self.rounds, self.rounds is None or self.rounds >= 1, "must be a positive integer"),
            ("--warmup-epochs", self.warmup_epochs, self.warmup_epochs is None or self.warmup_epochs >= 1,
             "must be a positive integer"),
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, "must be a positive integer"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "must be a positive integer"),
            ("--learning-rate", self.learning_rate, self.learning_rate is None or self.learning_rate > 0,
             "must be > 0"),
            ("--limit", self.limit, self.limit is None or self.limit >= 2, "must be at least 2"),
            ("--neighbourhood", self.neighbourhood, self.neighbourhood in (4, 8), "must be 4 or 8"),
            ("--num-patches", self.num_patches, self.num_patches >= 2, "must be at least 2"),
            ("--heldout-fraction", self.heldout_fraction, 0 < self.heldout_fraction < 1,
             "must be between 0 and 1"),
            ("--whiten-epsilon", self.whiten_epsilon, self.whiten_epsilon > 0, "must be > 0"),
            ("--nu", self.nu, self.nu > 0, "must be > 0"),
            ("--noise-samples", self.noise_samples,
             self.noise_samples is None or self.noise_samples >= 1, "must be a positive integer"),
            ("--kappa", self.kappa, self.kappa >= 1, "must be an integer >= 1"),
            ("--epsilon", self.epsilon, self.epsilon is None or self.epsilon > 0, "must be > 0"),
            ("--pd-floor", self.pd_floor, self.pd_floor > 0, "must be > 0"),
            ("--pd-check-every", self.pd_check_every, self.pd_check_every >= 1,
             "must be a positive integer"),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 1,
             "must be a positive integer"),
        ]
        check_ranges(checks)
        check_applies(self, GAUSSIAN_SCOPES)  # Before the per-estimator defaults below fill in unset flags.
        adaptive = self.estimator == "nce" and self.noise == "adaptive"
        # 8 neighbours give 5 couplings per pixel instead of 3: two epochs of score matching end far below
        # the 8-neighbour mle and a one-epoch NCE round gains little, hence a 4-epoch warm-up and two
        # two-epoch rounds. A third round helps on MNIST but, on rows drawn from a known 8-neighbour
        # Gaussian where score matching already ends at the mle, it loses likelihood (test_estimator_defaults).
        # BENCHMARKS.md, "NCE and cNCE from their default commands (issue 15)"; README, "NCE in rounds".
        wide = self.neighbourhood == 8
        if adaptive:
            self.rounds = self.rounds or (2 if wide else 1)
            self.warmup_epochs = self.warmup_epochs or (4 if wide else 2)
        if self.epochs is None:
            self.epochs = (2 if wide else 1) if adaptive else 10
        if self.learning_rate is None:
            self.learning_rate = 0.03 if adaptive else 0.01
        if self.dataset == "patches" and not self.patches:
            from energy_models.data.patch_size import check_patch_memory

            check_patch_memory(self.num_patches, self.patch_size, 3 if self.colour else 1)  # Before any folder.
        if self.noise_model and (self.estimator != "nce" or self.noise != "full"):
            raise UserError("--noise-model applies to --estimator nce with --noise full")
        if self.estimator == "mle" and self.distribute != "none":
            raise UserError("--distribute applies to the stochastic estimators (nce, cnce, sm); mle is "
                            "solved exactly on one device: drop --distribute")
        name = f"gaussian-{self.dataset}-{self.estimator}-n{self.neighbourhood}"
        self.run_dir = self.run_dir or str(pathlib.Path("runs") / name)
        self.export_dir = self.export_dir or str(pathlib.Path("saved_models") / name)
        return self


# When a flag does something: (applies(config), where it applies). A flag set away from its default where
# it does nothing is refused (check_applies), e.g. --images without --dataset patches.
_STOCHASTIC = ("nce", "cnce", "sm")


GAUSSIAN_SCOPES = {
    "noise_std": (lambda c: c.dataset == "mnist", "--dataset mnist"),
    "images": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "num_patches": (lambda c: c.dataset == "patches" and not c.patches,
                    "--dataset patches (without --patches)"),
    "heldout_fraction": (lambda c: c.dataset == "patches" and not c.patches,
                         "--dataset patches (without --patches)"),
    "patch_size": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "colour": (lambda c: c.dataset == "patches" and not c.patches, "--dataset patches (without --patches)"),
    "patches": (lambda c: c.dataset == "patches", "--dataset patches"),
    "whiten_epsilon": (lambda c: c.dataset == "patches", "--dataset patches"),
    "data_dir": (lambda c: c.dataset == "mnist", "--dataset mnist"),
    **{name: (lambda c: c.estimator in _STOCHASTIC, "--estimator nce, cnce or sm")
       for name in ("epochs", "batch_size", "optimizer", "learning_rate", "pd_floor", "pd_check_every",
                    "pd_mode", "checkpoint_every")},
    **{name: (lambda c: c.estimator == "nce", "--estimator nce") for name in ("nu", "noise", "noise_samples")},
    **{name: (lambda c: c.estimator == "cnce", "--estimator cnce") for name in ("kappa", "epsilon")},
    **{name: (lambda c: c.estimator == "nce" and c.noise == "adaptive", "--estimator nce --noise adaptive")
       for name in ("rounds", "warmup_epochs")},
}
