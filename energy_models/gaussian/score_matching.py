"""Score matching (Hyvarinen, 2005) of the grid Gaussian, with the closed-form score and Laplacian."""

import keras
import tensorflow as tf

from energy_models.gaussian.trainable import EstimatorGaussian, moment_matched_start
from energy_models.gaussian.trainer import fit_keras_estimator
from energy_models.objectives import score_matching_loss


@keras.saving.register_keras_serializable(package="energy_models")
class ScoreMatchingGaussian(EstimatorGaussian):
    """Grid Gaussian fitted by score matching.

    For the quadratic energy log phi(x) = -(x - mu)^T Lambda (x - mu) / 2 the score and the Laplacian are
    closed-form, and this model uses them rather than automatic differentiation in x:

        grad_x log p(x)       = -Lambda (x - mu)          (one O(D k) stencil product, `matvec`),
        laplacian_x log p(x)  = -tr(Lambda)               (the sum of the diagonal map).

    J is then a convex quadratic in Lambda, E[(x-mu)^T Lambda^2 (x-mu)] / 2 - tr(Lambda) =
    tr(Lambda S Lambda) / 2 - tr(Lambda), whose minimiser over all symmetric matrices is S^-1 (the
    MLE), but whose minimiser over the grid pattern need not be positive definite (on MNIST it is not).

    References:
      Hyvarinen, "Estimation of non-normalized statistical models by score matching", JMLR 2005.
    """

    REPORTED = ("loss", "squared_score", "laplacian")

    def loss_terms(self, x):
        # With Lambda = D Lambda~ D (D = diag(1/sigma)): Lambda (x - mu) = D Lambda~ x~ and
        # tr(Lambda) = sum_i Lambda~_ii / sigma_i^2; the loss is that of Lambda, in the original x.
        operator = self.precision_layer.operator()
        residual = self.inv_sigma * operator.matvec(self.standardize(x))
        trace = tf.reduce_sum(tf.square(self.inv_sigma) * operator.diag_part())
        loss, squared, laplacian = score_matching_loss(residual, trace)
        return {"loss": loss, "squared_score": squared, "laplacian": laplacian}


def fit_score_matching(settings, data, model, writer):
    """`--estimator sm`: trains a `ScoreMatchingGaussian` from the moment-matched start."""
    estimator = ScoreMatchingGaussian(model.height, model.width, settings.neighbourhood, seed=settings.seed,
                                      channels=model.channels)
    # diag(1 / S_ii) (Lambda~ = I) is also score matching's optimum among diagonal precisions.
    moment_matched_start(estimator, data)
    return fit_keras_estimator(settings, data, estimator, model, writer)
