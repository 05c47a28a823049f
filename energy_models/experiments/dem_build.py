"""The deep energy model `train.dem` trains: its whitening layer and its compiled trainer, from a `DEMConfig`."""

import numpy as np

from energy_models.errors import UserError
from energy_models.experiments.dem_config import SCORE_METHODS


def gaussian_whitening(gaussian):
    """`LinearWhitening` W = L^T from a `FittedGaussian`'s precision Lambda = L L^T.

    `--whiten gaussian` passes the fitted grid Gaussian, so u = L^T (x - m) maps its samples to N(0, I).

    Raises:
        NotPositiveDefiniteError: Lambda is not positive definite.
    """
    from energy_models.whitening import LinearWhitening

    return LinearWhitening.from_precision_cholesky(gaussian.mean, gaussian.precision_cholesky, name="whitening")


def make_whitening(config, train, gaussian):
    """The whitening layer named by `config.whiten` (None for "none")."""
    from energy_models.whitening import LinearWhitening

    if config.whiten == "zca":
        return LinearWhitening.zca(train, config.whiten_epsilon, name="whitening")
    if config.whiten == "pca":
        return LinearWhitening.pca(train, config.whiten_epsilon, name="whitening")
    if config.whiten == "gaussian":
        return gaussian_whitening(gaussian)
    return None


def build_model(config, train, whitening, gaussian=None):
    """The compiled trainer of `config.method` (`DEMScoreMatching` for dsm and sm, `ContrastiveDivergence`
    for cd, `DEMNoiseContrastive` with `gaussian` as its noise for nce), with b started at the data's
    maximum-likelihood value for V = 0: b = mean(u) / sigma^2, so the initial model is close to
    N(mean(u), sigma^2 I). With --whiten-components k, V's rows span the top k principal directions."""
    import keras
    import tensorflow as tf

    from energy_models.dem.contrastive_divergence import ContrastiveDivergence
    from energy_models.dem.energy import DEMEnergy
    from energy_models.training.optimizers import make_optimizer

    keras.utils.set_random_seed(config.seed)
    settings = dict(dim=train.shape[1], whitening=whitening, mcmc=config.mcmc, mcmc_steps=config.mcmc_steps,
                    step_size=config.step_size, leapfrog_steps=config.leapfrog_steps, seed=config.seed)
    components = config.whiten_components if whitening is not None else None
    if components is not None and components > train.shape[1] and getattr(config, "components_by_default", False):
        components = config.whiten_components = train.shape[1]  # the default, for patches under 150 values
    elif components is not None and components > train.shape[1]:
        raise UserError(f"--whiten-components {components} is more than the {train.shape[1]} pixels of a "
                        "patch; pass at most that")
    energy = DEMEnergy(config.hidden, config.latents, config.sigma, use_bias=config.g_bias,
                       components=components, learn_sigma=config.learn_sigma, name="energy")
    u = train if whitening is None else np.asarray(whitening(train[:10_000]))
    if config.method in SCORE_METHODS:
        from energy_models.dem.score_matching import DEMScoreMatching

        # dsm's noise in units of the data's spread: 1 per coordinate when whitened, ~0.2 for raw pixels.
        noise_std = config.dsm_noise * float(np.sqrt(np.mean(np.var(u, axis=0)))) if config.method == "dsm" else 0.0
        model = DEMScoreMatching(energy, noise_std=noise_std, **settings)
    elif config.method == "nce":
        from energy_models.dem.nce import DEMNoiseContrastive

        if gaussian is None:
            raise ValueError("--method nce needs the fitted Gaussian as its noise: pass gaussian")

        model = DEMNoiseContrastive(energy, gaussian.mean, gaussian.precision_cholesky,
                                    nu=config.nu, **settings)
    else:
        model = ContrastiveDivergence(energy, persistent=config.persistent, num_chains=config.batch_size,
                                      z_sampling=config.z_sampling, **settings)
    if components is not None:
        from energy_models.whitening import principal_directions

        # In model space: zca keeps U, so the top-k directions are U_k's columns; pca's coordinates are
        # already the principal components, in order.
        basis = principal_directions(train, components) if config.whiten == "zca" \
            else np.eye(components, train.shape[1])
        model.energy.set_basis(basis)
    model.energy.b.assign(u.mean(axis=0) / config.sigma ** 2)
    if config.method == "nce":
        model.c.assign(model.initial_c(train[:5000], seed=config.seed))
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    # XLA compiles the step for one device only: a step that reads variables mirrored on other devices
    # fails ("tf.Variable on a different device", XLA known issues), so replicas run it uncompiled.
    model.compile(optimizer=optimizer, jit_compile=tf.distribute.get_strategy().num_replicas_in_sync == 1,
                  steps_per_execution=config.steps_per_execution)
    return model
