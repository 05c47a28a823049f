"""python -m train.gaussian: fit a Gaussian with a grid precision to MNIST (Exercise 1) or to patches of photographs (Exercise 2).

Examples:
  python -m train.gaussian --estimator mle --neighbourhood 4
  python -m train.gaussian --estimator mle --neighbourhood 8 --data-dir ~/tensorflow_datasets
  python -m train.gaussian --dataset patches --images ~/Pictures
"""

import os
import sys

# One OpenBLAS thread unless the user says otherwise: on this shared 2-core machine OpenBLAS's spinning
# worker threads fight TensorFlow's, and one thread measured 200x faster for the guard's banded
# Cholesky (27 ms -> 0.12 ms) and 4x for a dense 784 x 784 Cholesky (62 ms -> 14 ms). Must be set
# before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from train import _cli  # noqa: E402


def main(argv=None):
    from energy_models.experiments import gaussian
    from energy_models.experiments.gaussian_config import GaussianConfig

    return _cli.run_experiment(gaussian, GaussianConfig, "python -m train.gaussian", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
