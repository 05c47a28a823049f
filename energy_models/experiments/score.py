"""Scoring held-out sets with SavedModels: mean and std of log p per set, AUROC against the first set.

`score(config)` is what `python -m train.score` runs.
"""

import pathlib

import numpy as np

from energy_models import figures, files, savedmodel
from energy_models.evaluation import metrics


def load_sets(config, shape, order=None):
    """The named sets to score, in the order of their flags on the command line (`order`, from
    `set_order`; without it photos, patches, MNIST, Gaussian samples). The first is the AUROC reference.

    `shape` is the model's (height, width, channels) (`savedmodel.model_shape`): photographs are cut into
    patches of that size (in colour for 3 channels), and a patch file must hold that size."""
    height, width, channels = shape
    dim = height * width * channels
    if config.images or config.gaussian_samples:
        from energy_models.data.memory import check_fits

        check_fits(config.num_patches, 4 * dim, 2, "--num-patches", f"{dim}-value float32 rows")  # The model's D.
    sets, kinds = {}, {}
    if config.images:
        from energy_models.data import images, patches

        loaded = images.load_images(config.images, min_size=(height, width), colour=channels == 3)
        sets["photos"] = patches.extract_patches(loaded, config.num_patches, (height, width), seed=config.seed)[0]
        kinds["photos"] = "images"
    if config.patches:
        from energy_models.data.patch_files import load_patch_array

        name = f"patches:{pathlib.Path(config.patches).name}"
        sets[name], kinds[name] = load_patch_array(config.patches, patch_size=(height, width),
                                                   channels=channels), "patches"
    if config.mnist:
        from energy_models.data.mnist import add_pixel_noise, load_mnist_rows

        pixels = load_mnist_rows(config.mnist, config.data_dir)
        name = f"mnist-{config.mnist}"
        if config.mnist_noise:
            # The whole split's draw, as train.gaussian draws its test noise, then the first rows.
            pixels = add_pixel_noise(pixels, config.mnist_noise, np.random.SeedSequence([config.seed, 1]))
            name += f"+noise{config.mnist_noise:g}"
        sets[name], kinds[name] = pixels[:config.num_patches], "mnist"
    if config.gaussian_samples:
        gaussian = savedmodel.load_model(config.gaussian_samples)
        sets["gaussian-samples"] = gaussian.module.sample(config.num_patches, config.seed).numpy()
        kinds["gaussian-samples"] = "gaussian_samples"
    rank = {kind: i for i, kind in enumerate(order or ())}
    names = sorted(sets, key=lambda n: rank.get(kinds[n], len(rank)))  # Stable: unlisted keep their order.
    return {name: savedmodel.check_rows(sets[name], dim, f"set {name}") for name in names}


def score(config, order=None):
    """Runs AIS and mode search if asked, then scores every set with every model.

    `order`: the set kinds in command-line order (`set_order`); the first set is the AUROC reference.
    Returns the report dict (also written as JSON with --json); figures go to --figures-dir.
    """
    config.resolve()
    models = [savedmodel.load_model(path) for path in config.model]
    report = {"models": []}
    cached_sets = {}
    for model in models:
        entry = {}
        if config.ais_steps:
            entry["ais"] = run_ais(model, config)
            entry["ais"]["stored"] = storing_decision(model, entry["ais"])
            if entry["ais"]["stored"].startswith("stored"):
                model = store_log_z(model, entry["ais"])
        if config.modes:
            entry["modes"] = run_modes(model, config)
        if model.shape not in cached_sets:
            cached_sets[model.shape] = load_sets(config, model.shape, order)
        scores = {name: savedmodel.checked_scores(savedmodel.log_probs(model, x, normalised=model.normalised), x,
                                               f"set {name}", model.path)
                  for name, x in cached_sets[model.shape].items()}
        if scores:
            histogram = pathlib.Path(config.figures_dir) / f"log_p_{_slug(model.path)}.png"
            figures.histograms(scores, histogram, title=f"log p under {model.path}",
                               xlabel="log p(x)" if model.normalised else "unnormalised log p(x)")
            entry["histogram"] = str(histogram)
        report["models"].append({"model": model.path, "info": model.info,
                                 "normalised": model.normalised, "sets": metrics.summarise(scores),
                                 "auroc_reference": next(iter(scores), None),
                                 **entry})
    if config.json:
        files.write_json_atomically(config.json, report)
    return report


def _base_gaussian(model, config):
    """AIS base and mode-search start: the Gaussian of --gaussian-samples, else one fitted to 4,000
    of the model's own samples (mean and covariance, with a 1e-4 ridge so it is positive definite)."""
    if config.gaussian_samples:
        gaussian = savedmodel.load_model(config.gaussian_samples).module
        return gaussian.mean().numpy(), np.linalg.inv(gaussian.precision().numpy().astype(np.float64))
    x = model.module.sample(4000, config.seed + 1).numpy().astype(np.float64)
    return x.mean(0), np.cov(x.T, bias=True) + 1e-4 * np.eye(x.shape[1])


def run_ais(model, config):
    """Forward AIS (lower bound) and reverse AIS from the model's own samples (upper bound) of log Z."""
    import time

    from energy_models.evaluation import ais

    start = time.perf_counter()
    mean, cov = _base_gaussian(model, config)
    base = ais.base_gaussian(mean, cov)
    target = model.module.unnormalized_log_prob
    fwd = ais.forward_ais(target, base, config.ais_steps, config.ais_chains, config.ais_step_size,
                          seed=(config.seed, 11), trace=True)
    samples = model.module.sample(config.ais_chains, config.seed + 2).numpy()
    rev = ais.reverse_ais(target, base, samples, config.ais_steps, config.ais_step_size,
                          seed=(config.seed, 12))
    gap = rev.log_z - fwd.log_z
    return {"log_z_forward": fwd.log_z, "stderr_forward": fwd.stderr, "log_z_reverse": rev.log_z,
            "stderr_reverse": rev.stderr, "ess_forward": fwd.ess, "ess_reverse": rev.ess, "gap": gap,
            "acceptance": fwd.acceptance,
            "rhat_forward": fwd.rhat_max, "chain_ess_forward": fwd.chain_ess_min,
            "converged": bool(abs(gap) <= 1.0), "steps": config.ais_steps, "chains": config.ais_chains,
            "log_z_stored": model.info.get("log_z"), "seconds": time.perf_counter() - start}


def storing_decision(model, estimate):
    """Whether AIS's estimate goes into the model folder, as the sentence the table prints.

    Stored only when forward and reverse agree (|gap| <= 1 nat), and then only into a model without a
    log Z or over an earlier AIS estimate that is worse: one that did not converge, or one made with
    fewer temperatures x chains. A log Z of another source (analytic, NCE) is never replaced.
    """
    if not estimate["converged"]:
        return (f"not stored: forward and reverse differ by {abs(estimate['gap']):.2f} nats (> 1); re-run "
                f"with more --ais-steps (now {estimate['steps']})")
    if not model.normalised:
        return "stored in the model folder (it had no log Z)"
    info = model.info
    if info.get("log_z_source") != "forward AIS":
        return f"not stored: the model keeps its own log Z ({info.get('log_z_source') or 'analytic'})"
    old_gap = abs(info.get("log_z_reverse", float("nan")) - info["log_z"])
    old_work = info.get("log_z_steps", 0) * info.get("log_z_chains", 0)
    if not old_gap <= 1.0:
        return f"stored in the model folder (replaces an estimate whose directions differed by {old_gap:.2f} nats)"
    if estimate["steps"] * estimate["chains"] > old_work:
        return (f"stored in the model folder (replaces the estimate of {info.get('log_z_steps', '?')} steps x "
                f"{info.get('log_z_chains', '?')} chains)")
    return (f"not stored: the model's log Z {info['log_z']:.2f} came from as many or more AIS steps x chains "
            f"({info.get('log_z_steps', '?')} x {info.get('log_z_chains', '?')})")


def store_log_z(model, estimate):
    """Re-exports `model` in place (atomically) with AIS's forward log Z, so its log_prob is normalised."""
    from energy_models import savedmodel

    info = dict(model.info, log_z=estimate["log_z_forward"], log_z_source="forward AIS",
                log_z_stderr=estimate["stderr_forward"], log_z_reverse=estimate["log_z_reverse"],
                log_z_steps=estimate["steps"], log_z_chains=estimate["chains"])
    module = savedmodel.NormalisedModule(model.module, estimate["log_z_forward"], info)
    savedmodel.save_atomically(module, model.path, overwrite=True)
    return savedmodel.load_model(model.path)


def run_modes(model, config):
    """Maximises log p from samples of the base Gaussian (`modes.find_modes`); start | mode figure and log p.

    The search stops with a one-line `UserError` if log p or a position turns non-finite, so no figure
    or table shows a diverged search.
    """
    import time

    from energy_models.evaluation import modes

    begin = time.perf_counter()
    mean, cov = _base_gaussian(model, config)
    rng = np.random.default_rng(config.seed)
    start = rng.multivariate_normal(mean, cov, size=config.modes).astype(np.float32)
    log_prob = model.module.log_prob if model.normalised else model.module.unnormalized_log_prob
    search = modes.find_modes(log_prob, start, optimizer=config.mode_optimizer,
                              learning_rate=config.mode_learning_rate, max_steps=config.mode_steps,
                              tol=config.mode_tolerance)
    mosaic = figures.pair_grid(search.start, search.end, cols=min(config.modes, 4), size=model.shape)
    path = pathlib.Path(config.figures_dir) / f"modes_{_slug(model.path)}.png"
    figures.save_gray_png(path, mosaic)
    _modes_to_tensorboard(pathlib.Path(config.figures_dir) / "tensorboard", model.path, mosaic)
    return {"n": config.modes, "optimizer": search.optimizer, "steps": search.steps,
            "evaluations": search.evaluations, "converged": int(search.converged.sum()),
            "stalled": int(search.stalled.sum()), "monotonic": search.monotonic,
            "log_p_start_mean": float(search.log_p_start.mean()),
            "log_p_end_mean": float(search.log_p_end.mean()),
            "log_p_start": search.log_p_start.tolist(), "log_p_end": search.log_p_end.tolist(),
            "seconds": time.perf_counter() - begin, "figure": str(path)}


def _modes_to_tensorboard(logdir, name, pair):
    import tensorflow as tf

    with tf.summary.create_file_writer(str(logdir)).as_default():
        tf.summary.image(f"modes/{_slug(name)} (start | mode pairs)", figures.summary_image(pair), step=0)


def _slug(path):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in pathlib.Path(path).name) or "model"


def table_lines(report):
    """The human-readable tables, one per model."""
    lines = []
    for entry in report["models"]:
        kind = "log p" if entry["normalised"] else "unnormalised log p (no log Z stored)"
        lines.append(f"{entry['model']}  [{kind}]")
        if "ais" in entry:
            a = entry["ais"]
            verdict = "agree" if a["converged"] else "DISAGREE: increase --ais-steps"
            lines.append(f"  AIS log Z: forward {a['log_z_forward']:.2f} +- {a['stderr_forward']:.2f} "
                         f"(ESS {a['ess_forward']:.1f}), reverse {a['log_z_reverse']:.2f} +- "
                         f"{a['stderr_reverse']:.2f} (ESS {a['ess_reverse']:.1f}) ({verdict}; "
                         f"{a['steps']} steps x {a['chains']} chains, {a['seconds']:.0f} s)")
            if "rhat_forward" in a:
                from energy_models.evaluation.mcmc_health import RHAT_THRESHOLD, not_mixed_line

                lines.append(f"  AIS chains after the last temperature: split R-hat {a['rhat_forward']:.3f}, "
                             f"ESS {a['chain_ess_forward']:.0f} (mixed below {RHAT_THRESHOLD})")
                warning = not_mixed_line("forward AIS", a["rhat_forward"], a["chain_ess_forward"],
                                         "increase --ais-steps")
                if warning:
                    lines.append(f"  {warning}")
            if a.get("stored"):
                lines.append(f"  AIS log Z {a['stored']}")
        if "modes" in entry:
            m = entry["modes"]
            lines.append(f"  modes: mean {kind} {m['log_p_start_mean']:.2f} -> {m['log_p_end_mean']:.2f} "
                         f"in {_mode_effort(m)}, {_mode_outcome(m)} ({m['figure']})")
        if entry["sets"]:
            reference = entry["sets"][0]["set"]
            lines.append(f"  {'set':<28} {'n':>7} {'mean':>11} {'std':>9} {'AUROC':>7}   (AUROC: P(log p of "
                         f"{reference}, the first set named, > log p of the row's set))")
        for row in entry["sets"]:
            auc = "reference" if row["auroc_vs_first"] is None else f"{row['auroc_vs_first']:.4f}"
            lines.append(f"  {row['set']:<28} {row['n']:>7} {row['mean']:>11.2f} {row['std']:>9.2f} "
                         f"{auc:>9}")
    return lines


def _mode_effort(m):
    """What the search cost, e.g. 87 L-BFGS iterations (312 gradient evaluations, 4.1 s)."""
    if m["optimizer"] == "lbfgs":
        return f"{m['steps']} L-BFGS iterations ({m['evaluations']} gradient evaluations, {m['seconds']:.1f} s)"
    return f"{m['steps']} {m['optimizer']} steps ({m['seconds']:.1f} s)"


def _mode_outcome(m):
    """How the searches ended: met --mode-tolerance, stalled at float32 precision, or ran out of steps."""
    parts = [f"{m['converged']} of {m['n']} met --mode-tolerance"]
    if m["stalled"]:
        parts.append(f"{m['stalled']} stopped where the line search found no higher log p (float32 precision)")
    left = m["n"] - m["converged"] - m["stalled"]
    if left:
        parts.append(f"{left} reached --mode-steps {m['steps']}")
    if not m["monotonic"]:
        parts.append("log p fell at some step")
    return ", ".join(parts)
