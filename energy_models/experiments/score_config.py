"""`ScoreConfig`: every setting of `python -m train.score` and its checks."""

import dataclasses

from energy_models.errors import UserError
from energy_models.experiments.flags import check_applies, check_ranges, flag


@dataclasses.dataclass
class ScoreConfig:
    """Every setting of `python -m train.score` (each field is a command-line flag)."""

    model: list = flag("a SavedModel folder to score with (repeat the flag for several models)",
                        action="append", metavar="DIR")
    images: str = flag("score patches cut from these photographs (folder, glob or file)")
    patches: str = flag("score a saved patch set (.npz: its held-out split, of the model's patch size) or an "
                        ".npy array [n, D] (D: the model's width, 784 for 28x28)")
    mnist: str = flag("score MNIST digits (pixels / 255) of this split", nargs="?", const="test",
                       choices=("train", "test"))
    mnist_noise: float = flag("add N(0, STD^2) noise to every --mnist pixel, drawn as train.gaussian draws "
                               "its test noise with the same --seed (0.1: its default --noise-std), so the "
                               "figures compare with its test log-likelihood", default=0.0)
    gaussian_samples: str = flag("score samples drawn from this Gaussian SavedModel", metavar="DIR")
    num_patches: int = flag("number of patches (and of samples, and at most of MNIST digits) per set",
                             default=10_000)
    seed: int = flag("seed of patch positions and samples", default=0)
    data_dir: str = flag("tensorflow-datasets data folder for --mnist")
    json: str = flag("write the tables as JSON to this file")
    ais_steps: int = flag("estimate log Z by forward and reverse AIS with this many temperatures "
                           "(0: no AIS); stored in a model that has no log Z yet", default=0)
    ais_chains: int = flag("AIS chains (each direction)", default=64)
    ais_step_size: float = flag("initial HMC step size of AIS (adapted towards 65%% acceptance)",
                                 default=0.01)
    modes: int = flag("find N modes: maximise log p from N samples of the Gaussian given by "
                       "--gaussian-samples (or of the model's own Gaussian fit)", default=0)
    mode_optimizer: str = flag("optimiser of the mode search: lbfgs (L-BFGS with a line search: log p rises "
                                "at every iteration, no learning rate to tune), or keras sgd or adam "
                                "(gradient ascent at --mode-learning-rate)", default="lbfgs",
                                choices=("lbfgs", "sgd", "adam"))
    mode_steps: int = flag("maximum iterations (L-BFGS) or steps (sgd, adam) of the mode search", default=2000)
    mode_tolerance: float = flag("stop a start's search when an iteration raises its log p by less than this "
                                  "many nats (sgd, adam: on average over 20 steps, for every start)",
                                  default=1e-3)
    mode_learning_rate: float = flag("learning rate of --mode-optimizer sgd or adam (default 1e-3; plain "
                                      "gradient ascent diverges above 2 / the largest curvature of log p)")
    figures_dir: str = flag("where the histograms of log p go", default="runs/score")

    def resolve(self):
        if not self.model:
            raise UserError("no model given; pass --model DIR (a SavedModel from train.gaussian or "
                            "train.dem)")
        for name, value, low in (("--num-patches", self.num_patches, 1), ("--ais-steps", self.ais_steps, 0),
                                 ("--ais-chains", self.ais_chains, 2), ("--modes", self.modes, 0),
                                 ("--mode-steps", self.mode_steps, 1)):
            if value < low:
                raise UserError(f"{name} must be at least {low}, got {value}")
        if not self.ais_step_size > 0:
            raise UserError(f"--ais-step-size must be > 0, got {self.ais_step_size}")
        check_ranges([("--mode-tolerance", self.mode_tolerance, self.mode_tolerance >= 0, "must be >= 0"),
                      ("--mode-learning-rate", self.mode_learning_rate,
                       self.mode_learning_rate is None or self.mode_learning_rate > 0, "must be > 0")])
        check_applies(self, MODE_SCOPES)
        if not 0 <= self.mnist_noise < float("inf"):
            raise UserError(f"--mnist-noise must be a finite number >= 0, got {self.mnist_noise}")
        if self.mnist_noise and not self.mnist:
            raise UserError("--mnist-noise does nothing here: it applies only with --mnist; drop it or add --mnist")
        if self.images or self.gaussian_samples:
            from energy_models.data.memory import check_fits

            check_fits(self.num_patches, 4 * 784, 2, "--num-patches", "784-pixel float32 rows")
        if not (self.images or self.patches or self.mnist or self.gaussian_samples or self.ais_steps
                or self.modes):
            raise UserError("nothing to do; pass at least one of --images, --patches, --mnist, "
                            "--gaussian-samples, --ais-steps, --modes")
        return self


# Mode-search flags do nothing without --modes, and a learning rate nothing for L-BFGS (its line search
# picks every step); see flags.check_applies.
MODE_SCOPES = {
    "mode_optimizer": (lambda c: c.modes > 0, "--modes N"),
    "mode_steps": (lambda c: c.modes > 0, "--modes N"),
    "mode_tolerance": (lambda c: c.modes > 0, "--modes N"),
    "mode_learning_rate": (lambda c: c.modes > 0 and c.mode_optimizer in ("sgd", "adam"),
                           "--modes N and --mode-optimizer sgd or adam (lbfgs, the default, has no learning "
                           "rate: its line search picks each step)"),
}


# The flag of each set, to order the sets as the command line does (see `load_sets`).
SET_FLAGS = {"images": "--images", "patches": "--patches", "mnist": "--mnist",
             "gaussian_samples": "--gaussian-samples"}


def set_order(argv):
    """The set kinds ("images", "patches", ...) in the order their flags come in `argv`."""
    position = {}
    for i, token in enumerate(argv or ()):
        for kind, flag_name in SET_FLAGS.items():
            if kind not in position and (token == flag_name or token.startswith(flag_name + "=")):
                position[kind] = i
    return sorted(position, key=position.get)
