"""The grid Gaussian's estimators by name: `ESTIMATORS[name](settings, data, model, writer)` fits `model` to
`data` and returns what the estimator reports. Exact maximum likelihood (`fit_mle`) is here; the stochastic
estimators (NCE, cNCE, score matching) are imported on first use, since NCE pulls in
tensorflow-probability.
"""

from energy_models.gaussian.model import LOG_2PI

# Above this many values per image the exact MLE uses block-tridiagonal Newton-CG: dense Newton's P x P
# Hessian costs O(P^3) time and O(P^2) memory, fast at 28 x 28 but far slower and larger than Newton-CG at
# 64 x 64 (BENCHMARKS.md, "Issue 17: MCMC health, image mosaics, exact MLE on large patches").
DENSE_MLE_MAX_DIM = 1024


def fit_mle(settings, data, model, writer):
    """Exact constrained maximum likelihood: `gaussian.mle` (dense Newton) up to DENSE_MLE_MAX_DIM values,
    `gaussian.mle_newton_cg` above; returns extras for metrics."""
    import tensorflow as tf

    from energy_models.gaussian.mle import fit_grid_mle
    from energy_models.gaussian.mle_newton_cg import fit_grid_mle_newton_cg

    d = data.dim

    def log_step(iteration, objective, residual):
        with writer.as_default(step=iteration):
            # Average training log-likelihood = -D/2 log(2 pi) + objective / 2.
            tf.summary.scalar("loss", 0.5 * d * LOG_2PI - 0.5 * objective)
            tf.summary.scalar("max_abs_residual", residual)

    if d <= DENSE_MLE_MAX_DIM:
        result = fit_grid_mle(data.covariance(), model.pattern, callback=log_step)
    else:
        # A tolerance near the residual max |Sigma - S| that dense Newton's decrement rule leaves (BENCHMARKS.md,
        # "Issue 17: MCMC health, image mosaics, exact MLE on large patches").
        result = fit_grid_mle_newton_cg(data.covariance(), model.pattern, tol=1e-7, callback=log_step)
    model.precision_layer.set_dense(result.precision)  # dense, or the scipy sparse matrix of Newton-CG
    return {"log_z_estimate": None, "newton_iterations": result.iterations,
            "max_abs_residual": result.max_abs_residual}


def _lazy(module, name):
    """A fit function imported on first use (NCE pulls in tensorflow-probability)."""

    def fit(settings, data, model, writer):
        import importlib

        return getattr(importlib.import_module(module), name)(settings, data, model, writer)

    fit.__name__ = name
    return fit


def fit_nce(settings, data, model, writer):
    """NCE: in rounds whose noise is the previous round's fit with `noise="adaptive"` (the default,
    `nce_rounds`), else one fit against a fixed noise (`nce.fit_nce`)."""
    if settings.noise == "adaptive":
        from energy_models.gaussian.nce_rounds import fit_nce_rounds

        return fit_nce_rounds(settings, data, model, writer)
    from energy_models.gaussian import nce

    return nce.fit_nce(settings, data, model, writer)


ESTIMATORS = {
    "mle": fit_mle,
    "nce": fit_nce,
    "cnce": _lazy("energy_models.gaussian.cnce", "fit_cnce"),
    "sm": _lazy("energy_models.gaussian.score_matching", "fit_score_matching"),
}
