"""`python -m train.dem` end to end: patches, optional whitening, a deep energy model trained by denoising score
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
the kurtosis of their responses as rows in ZCA-whitened space (`energy_models.evaluation.filter_stats`), whatever the
model's own whitening.
"""

import os
import sys

import numpy as np

from energy_models import files, savedmodel
from energy_models.errors import UserError
from energy_models.evaluation.metrics import auroc
from energy_models.experiments import rundir
from energy_models.experiments.dem_build import build_model, make_whitening
from energy_models.gaussian.fitted import GAUSSIAN_RIDGE, FittedGaussian


def load_patches(config, run_dir):
    """The patch set: loaded from --patches, or cut from --images and saved as RUN_DIR/patches.npz."""
    from energy_models.data.images import default_image_source
    from energy_models.data.patch_files import load_patch_set
    from energy_models.data.patches import make_patch_set

    if config.patches:
        return load_patch_set(config.patches)
    source = config.images if config.images is not None else default_image_source()
    patch_set = make_patch_set(source, config.num_patches, seed=config.seed, patch_size=config.patch_size,
                               colour=config.colour)
    patch_set.save(run_dir / "patches.npz")
    return patch_set


def load_mnist(config):
    """MNIST test digits as float32 [n, 784] in [0, 1], or None when no data folder is configured."""
    data_dir = config.mnist_dir or os.environ.get("TFDS_DATA_DIR")
    if not data_dir:
        return None
    from energy_models.data.mnist import load_mnist_rows

    return load_mnist_rows("test", data_dir)


def zca_of(full):
    """(W, W^-1) of the ZCA whitening of the full-covariance Gaussian (eps = its ridge, 1e-6, as train.dem's
    default --whiten-epsilon): W = U diag(lambda)^-1/2 U^T."""
    values, vectors = np.linalg.eigh(full.covariance)
    values = np.clip(values, GAUSSIAN_RIDGE, None)
    return (vectors / np.sqrt(values)) @ vectors.T, (vectors * np.sqrt(values)) @ vectors.T


def filter_summary(pixel_filters, full, heldout, seed):
    """Localisation and response kurtosis (`energy_models.evaluation.filter_stats`) of a model's filters as rows in
    ZCA-whitened space, whatever the model's own whitening: a pixel filter f responds f^T (x - m) =
    (W^-1 f)^T u for u = W (x - m), so its row in ZCA space is f W^-1 (W is symmetric)."""
    from energy_models.evaluation import filter_stats

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
    scores = model.unnormalized_log_prob(held)
    result = {"heldout_log_prob_mean": float(np.mean(scores)), "heldout_log_prob_std": float(np.std(scores)),
              "n_eval": int(len(held)),
              # Normalised baselines for the AIS-normalised log-likelihood of train.score --ais-steps.
              "full_gaussian_heldout_log_prob": float(np.mean(full.log_prob(held))),
              "gaussian_heldout_log_prob": float(np.mean(gaussian.log_prob(held))),
              **filter_summary(model.filters(), full, held, config.seed)}
    baseline, full_baseline = gaussian.log_prob(held), full.log_prob(held)
    for name, x in others.items():
        result[f"auroc_vs_{name}"] = auroc(scores, model.unnormalized_log_prob(x))
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

    from energy_models.data.batches import epoch_batches, steps_per_epoch
    from energy_models.dem import export as export_dem
    from energy_models.evaluation import mcmc_health
    from energy_models.experiments import dem_callbacks
    from energy_models.training.resumable import resumable_fit

    strategy, run_dir, settings, defaults = rundir.start_run(config)

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
    health = dem_callbacks.MCMCHealth(run_dir / "eval", gaussian, heldout, config.seed, config.mcmc_health_every)
    steps = steps_per_epoch(len(train), config.batch_size)
    run = resumable_fit(
        model, lambda initial: epoch_batches(train, config.batch_size, config.seed, initial),
        epochs=config.epochs, steps_per_epoch=steps, checkpoint_dir=run_dir / "checkpoints",
        checkpoint_every=config.checkpoint_every, watched=dem_callbacks.WATCHED,
        remedies=f"a smaller --learning-rate (now {config.learning_rate:g})" + (
            f" or --step-size (now {config.step_size:g}), or more --mcmc-steps (now {config.mcmc_steps})"
            if config.method == "cd" else ""),
        log_dir=run_dir, after=[dem_callbacks.ImageSummaries(run_dir / "eval", gaussian, config, heldout, shape=shape),
                                health])
    seconds, epochs_run = run.seconds, len(run.history.history.get("loss", []))
    metrics = {"method": config.method, "whiten": config.whiten, "whiten_components": config.whiten_components,
               "sigma": config.sigma, "mcmc": config.mcmc, "g_bias": config.g_bias,
               "n_train": int(len(train)), "n_heldout": int(len(heldout)), "patch_shape": list(shape),
               "seconds": seconds,
               "patches_per_second": steps * config.batch_size * epochs_run / max(seconds, 1e-9),
               "resumed_from_epoch": run.initial_epoch, "replicas": strategy.num_replicas_in_sync,
               "checkpoint_seconds": run.checkpoint.seconds, "final": run.final,
               "log_abs_det_whitening": float(model.log_abs_det),
               "log_z": model.log_z if config.method == "nce" else None,
               "checkpoint": run.latest_checkpoint}
    if run.divergence.diverged:
        metrics["diverged"] = run.divergence.message
        files.write_json_atomically(run_dir / "metrics.json", metrics)
        raise UserError(run.divergence.message)
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
    info = {**{k: metrics[k] for k in ("whiten", "whiten_components", "sigma", "n_train", "method")},
            **dict(zip(("height", "width", "channels"), shape))}
    module = export_dem.DEMModule(model, gaussian.mean, gaussian.cholesky, info,
                                  sample_sweeps=config.sample_sweeps, log_z=metrics["log_z"],
                                  log_z_source="NCE against the fitted Gaussian (train.dem --method nce)")
    metrics["export_dir"] = savedmodel.save_atomically(module, config.export_dir, config.overwrite, settings,
                                                   defaults, rundir.RESUME_IGNORES)
    metrics = rundir.earlier_timings(run_dir, metrics, trained=epochs_run > 0)
    files.write_json_atomically(run_dir / "metrics.json", metrics)
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
