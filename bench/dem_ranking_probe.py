"""How high can the deep energy model's architecture rank held-out patches above samples of the fitted Gaussian
when it is trained for exactly that ranking? A ceiling for issue 5's AUROC target, not a training method.

Usage (from the project root):
    python -m bench.dem_ranking_probe --images ../shared/data/photos
    python -m bench.dem_ranking_probe --patches PATCHES.npz --use-bias --steps 20000

The `DEMEnergy` layer of `train.dem` (same whitening, sigma, widths and initial b) is trained on the pairwise
logistic ranking loss

    L = mean_{i,j} S(-(log p~(x_i) - log p~(y_j))),   S = softplus,

x_i training patches and y_j fresh samples of the fitted (4-neighbour grid) Gaussian: a smooth surrogate of
1 - AUROC (RankNet's loss). This objective is not a density estimate; it asks whether *any* setting of the
parameters ranks unseen photographs above the Gaussian's samples. Every --eval-every steps it reports the AUROC
on training patches and on held-out patches (photographs not used for training), each against new samples.
Results go to --json.
"""

import argparse
import json
import pathlib
import time

import numpy as np


def pairwise_ranking_loss(positive, negative):
    """mean_{i,j} softplus(-(positive_i - negative_j)): the logistic surrogate of 1 - AUROC."""
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.softplus(negative[None, :] - positive[:, None]))


def train_ranker(energy, positive, negative, steps, batch_size, learning_rate, seed, on_eval=None, eval_every=0):
    """Adam on `pairwise_ranking_loss` of `energy` (a built layer mapping [n, D] to log p~) over batches of
    rows of `positive` and `negative` (float32 arrays, already in the energy's input space).

    Calls on_eval(step, loss) every eval_every steps; returns the last loss.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)
    weights = energy.trainable_variables

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = pairwise_ranking_loss(energy(x), energy(y))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    rng = np.random.default_rng(seed)
    loss = float("nan")
    for i in range(1, steps + 1):
        loss = float(step(positive[rng.integers(0, len(positive), batch_size)],
                          negative[rng.integers(0, len(negative), batch_size)]))
        if on_eval is not None and eval_every and i % eval_every == 0:
            on_eval(i, loss)
    return loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=None, help="photographs to cut --num-patches patches from")
    parser.add_argument("--num-patches", type=int, default=50_000)
    parser.add_argument("--patches", default=None, help="a patch file (.npz) instead of --images")
    parser.add_argument("--whiten", default="zca", choices=("none", "zca", "pca", "gaussian"))
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--latents", type=int, default=64)
    parser.add_argument("--use-bias", action="store_true", help="give g a bias d (not in the exercise)")
    parser.add_argument("--v-scale", type=float, default=8.0,
                        help="multiplies V's initial values (8: filter responses of order 8 in whitened space)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=3e-2)
    parser.add_argument("--eval-every", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench/results/dem_ranking_probe.json")
    args = parser.parse_args(argv)

    import keras

    from energy_models.data.images import default_image_source
    from energy_models.data.patch_files import load_patch_set
    from energy_models.data.patches import make_patch_set
    from energy_models.dem.energy import DEMEnergy
    from energy_models.evaluation.metrics import auroc
    from energy_models.experiments.dem_build import make_whitening
    from energy_models.experiments.dem_config import DEMConfig
    from energy_models.gaussian.fitted import FittedGaussian

    patch_set = (load_patch_set(args.patches) if args.patches else
                 make_patch_set(args.images or default_image_source(), args.num_patches, seed=args.seed))
    train, heldout = patch_set.train, patch_set.heldout
    gaussian = FittedGaussian.grid(train)
    whitening = make_whitening(DEMConfig(whiten=args.whiten), train, gaussian)

    def inputs(x):
        return np.asarray(x if whitening is None else whitening(x), np.float32)

    n_eval = 5000
    u_train, u_held = inputs(train), inputs(heldout)
    noise = inputs(gaussian.sample(100_000, args.seed + 7))  # training negatives
    eval_samples = gaussian.sample(n_eval, args.seed + 2)  # never trained on
    eval_noise = inputs(eval_samples)
    eval_train = u_train[np.random.default_rng(args.seed + 1).permutation(len(u_train))[:n_eval]]

    keras.utils.set_random_seed(args.seed)
    energy = DEMEnergy(args.hidden, args.latents, args.sigma, use_bias=args.use_bias)
    energy.build((None, u_train.shape[1]))
    energy.V.assign(energy.V * args.v_scale)
    energy.b.assign(u_train.mean(axis=0) / args.sigma ** 2)  # as train.dem starts it

    def scores(x):
        return np.asarray(energy(x))

    def aurocs():
        negative = scores(eval_noise)
        return {"auroc_train": auroc(scores(eval_train), negative),
                "auroc_heldout": auroc(scores(u_held), negative)}

    start = time.perf_counter()
    trajectory = [{"step": 0, **aurocs()}]
    print(json.dumps(trajectory[-1]), flush=True)

    def on_eval(step, loss):
        trajectory.append({"step": step, "loss": loss, "seconds": time.perf_counter() - start, **aurocs()})
        print(json.dumps(trajectory[-1]), flush=True)

    train_ranker(energy, u_train, noise, args.steps, args.batch_size, args.learning_rate, args.seed,
                 on_eval, args.eval_every)
    result = {"settings": vars(args), "n_train": len(train), "n_heldout": len(heldout),
              "gaussian_auroc_heldout": auroc(gaussian.log_prob(heldout), gaussian.log_prob(eval_samples)),
              "full_gaussian_auroc_heldout": auroc(*(FittedGaussian.full(train).log_prob(x)
                                                     for x in (heldout, eval_samples))),
              "trajectory": trajectory}
    path = pathlib.Path(args.json)
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    path.write_text(json.dumps({"runs": runs + [result]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
