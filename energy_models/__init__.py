"""energy_models: unnormalised (energy-based) models of images in TensorFlow/Keras.

Grid Gaussians (a zero-mean Gaussian whose precision Lambda has the sparsity of a 4- or 8-connected pixel
grid), fitted exactly (covariance selection) or by noise-contrastive estimation, conditional NCE and score
matching; two-layer deep energy models trained by contrastive divergence; annealed importance sampling of
log Z, MCMC diagnostics, scoring and SavedModels.

One folder per model family, and layers that import only downwards (tests/test_layout.py):

    errors                                    one-line user errors, argument checks
    files, sampling, figures, whitening,      atomic files; shared sampler numerics; image grids; whitening;
    linalg/, training/, objectives            grid linear algebra; fit scaffolding; the losses of every family
    data/, savedmodel                         MNIST, photographs, patches, arrays; the SavedModel contract
    gaussian/, dem/                           the two model families with their estimators and exports
    evaluation/                               AIS, modes, MCMC diagnostics, AUROC, filter statistics
    energy_estimator                          any Keras energy layer trained with any objective
    experiments/                              the front ends: command-line configs and pipelines, `fit`

The public names below are imported on first use (`energy_models.GridGaussian`), so that importing the
package does not import TensorFlow until something needs it.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GridGaussian": "energy_models.gaussian.model",
    "fit_grid_gaussian": "energy_models.experiments.fit",
    "fit_deep_energy_model": "energy_models.experiments.fit",
    "grid_pattern": "energy_models.linalg.grid",
    "GridPrecision": "energy_models.gaussian.layer",
    "fit_grid_mle": "energy_models.gaussian.mle",
    "fit_grid_mle_newton_cg": "energy_models.gaussian.mle_newton_cg",
    "pattern_covariance": "energy_models.gaussian.mle_newton_cg",
    "FittedGaussian": "energy_models.gaussian.fitted",
    "DEMEnergy": "energy_models.dem.energy",
    "DeepEnergyModel": "energy_models.dem.model",
    "ContrastiveDivergence": "energy_models.dem.contrastive_divergence",
    "DEMNoiseContrastive": "energy_models.dem.nce",
    "DEMScoreMatching": "energy_models.dem.score_matching",
    "LinearWhitening": "energy_models.whitening",
    "EnergyEstimator": "energy_models.energy_estimator",
    "score_matching_loss": "energy_models.objectives",
    "sliced_score_matching_loss": "energy_models.objectives",
    "contrastive_divergence_loss": "energy_models.objectives",
    "nce_loss": "energy_models.objectives",
    "cnce_loss": "energy_models.objectives",
    "base_gaussian": "energy_models.evaluation.ais",
    "forward_ais": "energy_models.evaluation.ais",
    "reverse_ais": "energy_models.evaluation.ais",
    "chain_diagnostics": "energy_models.evaluation.mcmc_health",
    "load_model": "energy_models.savedmodel",
    "auroc": "energy_models.evaluation.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'energy_models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
