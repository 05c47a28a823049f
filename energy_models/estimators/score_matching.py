"""Score matching (Hyvarinen, 2005) of the grid Gaussian, with the closed-form score and Laplacian."""

import keras
import tensorflow as tf

from energy_models.estimators.common import EstimatorGaussian, fit_keras_estimator, moment_matched_start


def score_matching_loss(residual_scores, trace):
    """Hyvarinen's score-matching loss from the scores and the trace of Lambda.

        J(Lambda) = E[ ||grad_x log p(x)||^2 / 2 + laplacian_x log p(x) ]
                  = E[ ||Lambda (x - mu)||^2 / 2 ] - tr(Lambda),

    Args:
      residual_scores: [B, D], Lambda (x - mu) (minus the score).
      trace: tr(Lambda).

    Returns:
      (J, the squared-score term, the Laplacian term -tr(Lambda)).
    """
    squared = 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(residual_scores), axis=-1))
    return squared - trace, squared, -trace


@keras.saving.register_keras_serializable(package="energy_models")
class ScoreMatchingGaussian(EstimatorGaussian):
    """Grid Gaussian fitted by score matching.

    For the quadratic energy log phi(x) = -(x - mu)^T Lambda (x - mu) / 2 the score and the Laplacian are
    closed-form, and this model uses them rather than automatic differentiation in x:

        grad_x log p(x)       = -Lambda (x - mu)          (one O(D k) stencil product, `apply_rows`),
        laplacian_x log p(x)  = -tr(Lambda)               (the sum of the diagonal map).

    J is then a convex quadratic in Lambda, E[(x-mu)^T Lambda^2 (x-mu)] / 2 - tr(Lambda) =
    tr(Lambda S Lambda) / 2 - tr(Lambda), whose minimiser over all symmetric matrices is S^-1 (the
    MLE), but whose minimiser over the grid pattern need not be positive definite (on MNIST it is not).

    References:
      Hyvarinen, "Estimation of non-normalized statistical models by score matching", JMLR 2005.
    """

    REPORTED = ("loss", "squared_score", "laplacian")

    def loss_terms(self, x):
        operator = self.precision_layer.operator()
        loss, squared, laplacian = score_matching_loss(operator.apply_rows(x - self.mu),
                                                       operator.trace())
        return {"loss": loss, "squared_score": squared, "laplacian": laplacian}


def fit_score_matching(config, data, model, writer):
    """`--estimator sm`: trains a `ScoreMatchingGaussian` from the moment-matched start."""
    estimator = ScoreMatchingGaussian(28, 28, config.neighbourhood, seed=config.seed)
    # diag(1 / S_ii) is also score matching's optimum among diagonal precisions.
    moment_matched_start(estimator, data)
    return fit_keras_estimator(config, data, estimator, model, writer)
