"""python -m train.dem: train the deep energy model on natural image patches by contrastive divergence (Exercise 2).

Examples:
  python -m train.dem --images ~/Pictures
  python -m train.dem --images ~/Pictures --whiten none --sigma 0.1 --mcmc langevin
  python -m train.dem --patches runs/dem-zca-sigma1/patches.npz --persistent --epochs 20
"""

import sys

from train import _cli


def main(argv=None):
    from energy_models.experiments import dem
    from energy_models.experiments.dem_config import DEMConfig

    return _cli.run_experiment(dem, DEMConfig, "python -m train.dem", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
