"""energy_models: unnormalised (energy-based) models of images in TensorFlow/Keras.

Grid Gaussians (a zero-mean Gaussian whose precision Lambda has the sparsity of a 4- or 8-connected pixel
grid), fitted exactly (covariance selection) or by noise-contrastive estimation, conditional NCE and score
matching; two-layer deep energy models trained by contrastive divergence; annealed importance sampling of
log Z, MCMC diagnostics, scoring and SavedModels.

The public names below are imported on first use (`energy_models.GridGaussian`), so that importing the
package does not import TensorFlow until something needs it.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GridGaussian": "energy_models.gaussian",
    "fit_grid_gaussian": "energy_models.fit",
    "fit_deep_energy_model": "energy_models.fit",
    "grid_pattern": "energy_models.grid",
    "GridPrecision": "energy_models.layers.grid_precision",
    "fit_grid_mle": "energy_models.estimators.mle",
    "fit_grid_mle_newton_cg": "energy_models.estimators.mle_newton_cg",
    "pattern_covariance": "energy_models.estimators.mle_newton_cg",
    "DEMEnergy": "energy_models.layers.dem_energy",
    "ContrastiveDivergence": "energy_models.estimators.contrastive_divergence",
    "LinearWhitening": "energy_models.whitening",
    "EnergyEstimator": "energy_models.objectives",
    "sliced_score_matching_loss": "energy_models.objectives",
    "contrastive_divergence_loss": "energy_models.objectives",
    "nce_loss": "energy_models.estimators.nce",
    "cnce_loss": "energy_models.estimators.cnce",
    "base_gaussian": "energy_models.ais",
    "forward_ais": "energy_models.ais",
    "reverse_ais": "energy_models.ais",
    "chain_diagnostics": "energy_models.mcmc_health",
    "load_model": "energy_models.scoring",
    "auroc": "energy_models.scoring",
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
