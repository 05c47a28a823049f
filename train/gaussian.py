"""python -m train.gaussian: fit a Gaussian with a grid precision to MNIST (Exercise 1).

Examples:
  python -m train.gaussian --estimator mle --neighbourhood 4
  python -m train.gaussian --estimator mle --neighbourhood 8 --data-dir ~/tensorflow_datasets
"""

import dataclasses
import sys

from train import _cli


def main(argv=None):
    from energy_models.experiments import gaussian

    parser = _cli.parser_for(gaussian.GaussianConfig, "python -m train.gaussian", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    config = gaussian.GaussianConfig(**vars(args))
    metrics = gaussian.train_and_evaluate(config)
    print("\n".join(gaussian.summary_lines(metrics)))
    print(f"  run directory: {config.run_dir} (tensorboard --logdir {config.run_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
