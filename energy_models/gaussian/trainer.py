"""The resumable `model.fit` driver of the stochastic grid-Gaussian estimators (NCE, cNCE, score matching),
with its per-epoch held-out evaluation."""


import keras
import tensorflow as tf

from energy_models import figures
from energy_models.gaussian.model import average_log_likelihood
from energy_models.gaussian.pd_guard import PositiveDefiniteGuard
from energy_models.linalg.positive_definite import smallest_eigenvalue_sparse
from energy_models.training.optimizers import make_optimizer
from energy_models.training.tensorboard import epoch_summaries


class HeldOutEvaluation(keras.callbacks.Callback):
    """Per epoch: held-out log-likelihood, log Z analytic (and the estimate), lambda_min, 64 samples.

    Written with `writer` (TensorBoard, run_dir/train) at step = epoch + 1. Runs after the
    `PositiveDefiniteGuard` (callbacks run in list order), so Lambda is positive definite here.
    """

    def __init__(self, test, writer, seed=0, n_test=10_000):
        super().__init__()
        self.test, self.writer, self.seed = test[:n_test], writer, int(seed)
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        log_z = model.log_normalizer()
        row = {"epoch": epoch + 1, "heldout_log_likelihood": average_log_likelihood(model, self.test),
               "log_z_analytic": log_z,
               "smallest_eigenvalue": smallest_eigenvalue_sparse(model.precision_dense())}
        estimate = model.log_z_estimate() if hasattr(model, "log_z_estimate") else None
        if estimate is not None:
            row["log_z_estimate"] = estimate
            row["log_z_error"] = estimate - log_z
        self.history.append(row)
        with epoch_summaries(self.writer, epoch + 1):
            for key, value in row.items():
                if key != "epoch":
                    tf.summary.scalar(f"epoch_{key}", value)
            grid = figures.image_grid(model.sample(64, seed=self.seed),
                                      size=(model.height, model.width, model.channels))
            tf.summary.image("epoch_samples", figures.summary_image(grid))
        self.writer.flush()
        if logs is not None:
            logs["heldout_log_likelihood"] = row["heldout_log_likelihood"]


def fit_keras_estimator(settings, data, estimator, target, writer, verbose="auto", *, epochs=None,
                        learning_rate=None, first_epoch=0, checkpoint_dir=None, log_dir=None):
    """Runs `estimator.fit` on fresh-noise batches, resumably, and copies Lambda into `target`.

    Training state is checkpointed in RUN_DIR/checkpoints every `settings.checkpoint_every` epochs
    (`energy_models.training.checkpoints`); a run directory that already holds checkpoints continues from the
    newest one, with the batches the uninterrupted run would have seen. A non-finite loss or parameter
    stops training with `checkpoints.DivergenceGuard`'s message (a `UserError`), keeping the last good
    checkpoint and exporting nothing.

    Args:
      settings: the estimator settings, any object with the attributes epochs, batch_size, optimizer,
        learning_rate, seed, pd_floor, pd_check_every, pd_mode, checkpoint_every and run_dir
        (`GaussianConfig` resolves them from flags, `fit_grid_gaussian` from keywords).
      data: the `NoisyMnist` or `ArrayData`.
      estimator: a compiled-able GridGaussian subclass with its own `train_step`.
      target: the `GridGaussian` that `train_and_evaluate` evaluates; receives the trained Lambda.
      writer: TensorBoard writer of run_dir/train.
      epochs, learning_rate: this fit's epochs and starting learning rate (default: the settings').
      first_epoch: the epoch this fit starts at on a time axis shared by several fits (the rounds of
        adaptive NCE): it trains epochs first_epoch + 1 .. first_epoch + epochs, whose batches and
        TensorBoard steps are those epochs'.
      checkpoint_dir, log_dir: where its checkpoints and Keras TensorBoard logs go (default:
        RUN_DIR/checkpoints and RUN_DIR).

    Returns:
      The extras dict for metrics.json (epoch history, PD-guard statistics, log Z estimate).

    Raises:
      UserError: training diverged.
    """
    import pathlib

    from energy_models.data.batches import steps_per_epoch
    from energy_models.errors import UserError
    from energy_models.training.resumable import resumable_fit

    epochs = settings.epochs if epochs is None else int(epochs)
    learning_rate = settings.learning_rate if learning_rate is None else float(learning_rate)
    run_dir = pathlib.Path(settings.run_dir)
    estimator.set_mean(data.mean)
    steps = steps_per_epoch(len(data.train_pixels), settings.batch_size)
    estimator.compile(optimizer=make_optimizer(settings.optimizer, learning_rate, steps * epochs))
    guard = PositiveDefiniteGuard(settings.pd_floor, settings.pd_check_every, mode=settings.pd_mode)
    held_out = HeldOutEvaluation(data.test, writer, settings.seed)
    run = resumable_fit(
        estimator, lambda initial: data.training_dataset(settings.batch_size, settings.seed, initial),
        epochs=first_epoch + epochs, steps_per_epoch=steps, first_epoch=first_epoch,
        checkpoint_dir=checkpoint_dir or run_dir / "checkpoints", checkpoint_every=settings.checkpoint_every,
        watched=estimator.REPORTED, remedies=f"a smaller --learning-rate (now {learning_rate:g})",
        log_dir=log_dir or run_dir, before_checkpoint=[guard, held_out],
        # Batch-level scalars are stepped by the optimiser's own count, which restarts in every fit of a
        # shared axis: such fits log per epoch only.
        update_freq=50 if first_epoch == 0 else "epoch", write_graph=False, verbose=verbose)
    if run.divergence.diverged:
        raise UserError(run.divergence.message)
    target.precision_layer.set_dense(estimator.precision_dense())  # Lambda = D Lambda~ D.
    return {"log_z_estimate": estimator.log_z_estimate(), "final_train_metrics": run.final,
            "pd_failures": guard.failures, "pd_halvings": guard.halvings,
            "pd_projections": guard.projections, "pd_check_seconds": guard.seconds,
            "steps": steps * epochs, "resumed_from_epoch": run.initial_epoch,
            "checkpoint_seconds": run.checkpoint.seconds, "fit_seconds": run.seconds,
            "checkpoint": run.latest_checkpoint, "epochs_held_out": held_out.history}
