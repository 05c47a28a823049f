"""NCE with adaptive noise: rounds whose noise is the previous round's fit (`--noise adaptive`).

Round 0 fits the grid Gaussian by score matching, which needs no noise. Round r >= 1 runs NCE with the
noise p_n = N(mu, Lambda_{r-1}^-1), the previous round's fit, starting at Lambda_{r-1} itself (where the
log-ratio G is constant) and at the c that makes the loss stationary in c (`nce.start_nce`).

Why: with p_n equal to the model p_theta the NCE gradient is proportional to
E_data[grad log p_theta] - E_p_theta[grad log p_theta], the maximum-likelihood gradient, so each round
moves towards maximum likelihood; and G is then near 0 on data and noise alike, where the classifier's
log-ratio, and with it c = -log Z, is well determined. A fixed noise far from the model, such as the
data's full-covariance Gaussian on MNIST, leaves NCE far below maximum likelihood, with log Z far off
(BENCHMARKS.md, "NCE, cNCE and score matching (issue 3)").

Every round is one resumable `fit_keras_estimator` on a shared epoch axis: its checkpoints go to
RUN_DIR/checkpoints/round-R and its TensorBoard logs to RUN_DIR/rounds/round-R, so a re-run restores the
finished rounds from their last checkpoints (rebuilding each next noise from them) and resumes the
interrupted one.
"""

import pathlib

from energy_models.gaussian.model import average_log_likelihood
from energy_models.gaussian.nce import NCEGaussian, start_nce
from energy_models.gaussian.score_matching import ScoreMatchingGaussian
from energy_models.gaussian.trainable import moment_matched_start
from energy_models.gaussian.trainer import fit_keras_estimator

# Score matching's learning rate in round 0: the trainers' usual 0.01, at which the 2-epoch fit on MNIST
# already comes close to the exact MLE (BENCHMARKS.md, "NCE, cNCE and score matching (issue 3)").
WARMUP_LEARNING_RATE = 0.01


def round_seed(seed, r):
    """The noise seed of round r: distinct per round, so that rounds do not reuse each other's draws."""
    return int(seed) * 1000 + int(r)


def fit_nce_rounds(settings, data, model, writer):
    """`--estimator nce --noise adaptive`: score matching, then `settings.rounds` NCE rounds.

    Args:
      settings: needs neighbourhood, nu, noise_samples, seed, rounds, warmup_epochs, epochs (per NCE
        round), learning_rate (NCE's) and what `fit_keras_estimator` reads.
      model: the `GridGaussian` that receives the last round's Lambda.
      writer: unused (each round writes under RUN_DIR/rounds/round-R); kept for the estimators' signature.

    Returns:
      The extras of the last round, with "rounds": one summary per round (estimator, epochs, held-out
      log-likelihood, log Z analytic and estimate after its last epoch, seconds).
    """
    import tensorflow as tf

    del writer
    run_dir = pathlib.Path(settings.run_dir)
    k = settings.neighbourhood

    def fit(estimator, r, epochs, learning_rate, first_epoch):
        log_dir = run_dir / "rounds" / f"round-{r}"
        round_writer = tf.summary.create_file_writer(str(log_dir / "train"))
        extras = fit_keras_estimator(settings, data, estimator, model, round_writer, epochs=epochs,
                                     learning_rate=learning_rate, first_epoch=first_epoch,
                                     checkpoint_dir=run_dir / "checkpoints" / f"round-{r}",
                                     log_dir=log_dir)
        round_writer.close()
        # Evaluated here rather than read from the epoch history: a resumed run restores its finished
        # rounds without training them, and so without history.
        summary = {"round": r, "estimator": type(estimator).__name__, "epochs": epochs,
                   "learning_rate": learning_rate, "seconds": extras["fit_seconds"],
                   "heldout_log_likelihood": average_log_likelihood(estimator, data.test),
                   "log_z_analytic": estimator.log_normalizer(),
                   "log_z_estimate": extras["log_z_estimate"]}
        return extras, summary

    warmup = ScoreMatchingGaussian(model.height, model.width, k, seed=settings.seed, channels=model.channels)
    moment_matched_start(warmup, data)
    extras, summary = fit(warmup, 0, settings.warmup_epochs, WARMUP_LEARNING_RATE, 0)
    rounds, epoch = [summary], settings.warmup_epochs
    precision = warmup.precision_dense()
    for r in range(1, settings.rounds + 1):
        estimator = NCEGaussian(model.height, model.width, k, nu=settings.nu, noise="full",
                                noise_samples=settings.noise_samples,
                                seed=round_seed(settings.seed, r), channels=model.channels)
        estimator.set_mean(data.mean)  # Before `start_nce`: its balanced c reads mu.
        start_nce(estimator, data, settings.seed, precision)
        extras, summary = fit(estimator, r, settings.epochs, settings.learning_rate, epoch)
        rounds.append(summary)
        epoch += settings.epochs
        precision = estimator.precision_dense()
    return {**extras, "rounds": rounds}
