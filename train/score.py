"""python -m train.score: score held-out sets with SavedModels (mean/std of log p, AUROC, histograms).

Examples:
  python -m train.score --model saved_models/gaussian-patches-mle-n4 --images ~/holiday --mnist test
  python -m train.score --model A --model B --patches runs/dem/patches.npz --gaussian-samples G --json s.json
"""

import sys

from train import _cli


def main(argv=None):
    from energy_models.experiments import score
    from energy_models.experiments.score_config import ScoreConfig, set_order

    parser = _cli.parser_for(ScoreConfig, "python -m train.score", __doc__.splitlines()[0])
    argv = sys.argv[1:] if argv is None else argv
    config = ScoreConfig(**vars(parser.parse_args(argv)))
    report = score.score(config, order=set_order(argv))
    print("\n".join(score.table_lines(report)))
    if config.json:
        print(f"JSON: {config.json}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
