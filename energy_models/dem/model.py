"""`DeepEnergyModel`: the two-layer deep energy model as a Keras `Model`, what every trainer of it shares.

    log p~(x) = f(W (x - mu)) + log|det W|,

f the `DEMEnergy` in model space and W an optional `LinearWhitening` in front of it (batches stay in raw
pixels and are whitened inside; every reported log-density adds log|det W|, the change of variables). The
model holds the MCMC settings of its block Gibbs sampler (`energy_models.dem.gibbs`), which `sample` runs
and contrastive divergence uses for its negatives, a step size (adapted during CD), and a seed with a step
counter (a non-trainable weight saved with checkpoints): every draw of a step uses a stateless seed split
from (seed, counter), so runs are reproducible and a restored checkpoint continues the same stream.

The trainers are its subclasses, siblings that differ only in `train_step`: `ContrastiveDivergence`,
`DEMNoiseContrastive` and `DEMScoreMatching`.
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.dem import gibbs as dem_gibbs
from energy_models.dem.energy import DEMEnergy
from energy_models.errors import check_choice, check_positive_int, check_static_rows
from energy_models.training.distribute import replica_share, track
from energy_models.training.seeding import replica_seed


class DeepEnergyModel(keras.Model):
    """The deep energy model with its whitening and sampler (module docstring); subclasses train it.

    Args:
        energy: the `DEMEnergy` layer (built here for `dim` inputs).
        dim: D, the number of pixels.
        whitening: an optional `LinearWhitening` applied in front of the energy.
        mcmc: x-move of the Gibbs sweeps: "langevin", "mala" or "hmc".
        mcmc_steps: Gibbs sweeps per negative phase.
        step_size: initial eta of the x-moves.
        leapfrog_steps: HMC leapfrog steps per move.
        seed: integer seed of every random draw.
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: an option is not one of its allowed values.
    """

    METRIC_NAMES = ("loss",)  # One `keras.metrics.Mean` each; a trainer lists what its step reports.

    def __init__(self, energy, dim=784, whitening=None, mcmc="mala", mcmc_steps=10, step_size=1e-2, leapfrog_steps=5,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        check_choice("mcmc", mcmc, dem_gibbs.METHODS)
        for name, value in (("mcmc_steps", mcmc_steps), ("leapfrog_steps", leapfrog_steps)):
            check_positive_int(name, value)
        if not (np.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a positive number, got step_size={step_size!r}")
        self.energy = energy if isinstance(energy, DEMEnergy) else keras.saving.deserialize_keras_object(energy)
        self.whitening = whitening if whitening is None or isinstance(whitening, keras.layers.Layer) \
            else keras.saving.deserialize_keras_object(whitening)
        self.dim = int(dim)
        self.mcmc = mcmc
        self.mcmc_steps = int(mcmc_steps)
        self.initial_step_size = float(step_size)
        self.leapfrog_steps = int(leapfrog_steps)
        self.seed = int(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.METRIC_NAMES}
        for layer in (self.energy, self.whitening):
            if layer is not None and not layer.built:
                layer.build((None, self.dim))
        # Under tf.distribute replicas adapt eta on their own chains and the mean is kept.
        self.step_size = self.add_weight(name="step_size", shape=(), trainable=False, aggregation="mean",
                                         initializer=keras.initializers.Constant(self.initial_step_size))
        self.seed_counter = self.add_weight(name="seed_counter", shape=(), dtype="int32", trainable=False,
                                            initializer="zeros", aggregation="only_first_replica")
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def log_abs_det(self):
        """log|det W| of the whitening (0 without), added to model-space log-densities."""
        return 0.0 if self.whitening is None else self.whitening.log_abs_det

    def _log_det(self):
        """log|det W| as a float32 tensor (usable inside compiled steps)."""
        if self.whitening is None:
            return tf.constant(0.0)
        return tf.cast(self.whitening.log_abs_det_weight, tf.float32)

    def to_model_space(self, x):
        """u = W (x - mu) with whitening, else x."""
        x = tf.convert_to_tensor(x, tf.float32)
        return x if self.whitening is None else self.whitening(x)

    def to_pixel_space(self, u):
        """x = W^-1 u + mu with whitening, else u."""
        return u if self.whitening is None else self.whitening.inverse(u)

    def call(self, x):
        """log p~(x) in raw pixel space: the energy at W (x - mu) plus log|det W|. [n]."""
        check_static_rows(x, self.dim)
        return self.energy(self.to_model_space(x)) + self._log_det()

    def unnormalized_log_prob(self, x, batch_size=4096):
        """log p~(x) of raw-pixel rows x [n, D] as float64 numpy [n], in batches.

        Raises:
            ValueError: x does not have D columns.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"X has {x.shape[-1] if x.ndim else 0} features, but the model expects {self.dim}")
        return np.concatenate([self._score(x[i:i + batch_size]).numpy().astype(np.float64)
                               for i in range(0, len(x), batch_size)] or [np.zeros(0)])

    @property
    def log_z(self):
        """log Z of the unnormalised model, where the trainer learns it (NCE); NaN otherwise (estimate it by AIS:
        `energy_models.evaluation.ais`, or `train.score --ais-steps` on the SavedModel)."""
        return float("nan")

    def log_prob(self, x, batch_size=4096):
        """log p(x) = log p~(x) - log Z as float64 numpy [n]: NaN where log Z is unknown (`log_z`), as the
        SavedModel's `log_prob`."""
        return self.unnormalized_log_prob(x, batch_size) - self.log_z

    @tf.function(jit_compile=True, reduce_retracing=True)
    def _score(self, x):
        return self(x)

    def _next_seeds(self, count):
        """`count` stateless seeds [count, 2] from (seed, step counter); advances the counter."""
        self.seed_counter.assign_add(1)
        return tf.random.experimental.stateless_split(replica_seed(self.seed, self.seed_counter), count)

    def negative_phase(self, start, seed, step_size, adapt_rate, noise=None):
        """`mcmc_steps` Gibbs sweeps from `start` (model space): (negatives, acceptance, final eta).
        `noise`: Langevin or MALA, eps of every sweep [mcmc_steps, n, D] (None: drawn in the sweeps)."""
        return dem_gibbs.run_chains(start, step_size, seed, self.mcmc_steps, self.energy.latent_logits,
                                    self.energy.joint, self.mcmc, self.leapfrog_steps, adapt_rate, noise=noise)

    def _track(self, values):
        """Adds this step's values (one per name in METRIC_NAMES) to the running means; returns the logs."""
        return track(self.trackers, values)

    def _descend(self, objective, weights):
        """One optimiser step on `weights` down objective()[0], the loss (the rest are reported values):
        (objective(), the gradient's global norm). Under tf.distribute the loss is this replica's share."""
        with tf.GradientTape() as tape:
            values = objective()
            share = replica_share(values[0])
        grads = tape.gradient(share, weights)
        self.optimizer.apply(grads, weights)
        return values, tf.linalg.global_norm(grads)

    def sample(self, start, num_sweeps, seed, step_size=None):
        """Runs `num_sweeps` Gibbs sweeps from raw-pixel `start` [n, D]; returns raw-pixel samples (numpy).

        eta stays fixed (the step size adapted during training unless `step_size` is given).
        """
        u = self.to_model_space(start)
        eta = self.step_size if step_size is None else tf.constant(step_size, tf.float32)
        seed = tf.constant([int(seed), 0x5EED], tf.int32)
        return np.asarray(self.to_pixel_space(self._sample_chains(u, eta, seed, tf.constant(int(num_sweeps)))))

    @tf.function(jit_compile=True, reduce_retracing=True)
    def _sample_chains(self, u, eta, seed, num_sweeps):
        # Compiled: an eager tf.while_loop would rebuild the tfp kernel in Python on every sweep.
        x, _, _ = dem_gibbs.run_chains(u, eta, seed, num_sweeps, self.energy.latent_logits, self.energy.joint,
                                       self.mcmc, self.leapfrog_steps, unroll=False)
        return x

    def filters(self):
        """Rows of V mapped to pixel space [hidden, D]: V W for whitened models (v^T W (x - mu) = (W^T v)^T
        (x - mu)), V otherwise."""
        V = np.asarray(self.energy.effective_V)
        if self.whitening is None:
            return V
        return V @ np.asarray(self.whitening.matrix)

    def get_config(self):
        return {**super().get_config(),
                "energy": keras.saving.serialize_keras_object(self.energy), "dim": self.dim,
                "whitening": None if self.whitening is None
                else keras.saving.serialize_keras_object(self.whitening),
                "mcmc": self.mcmc, "mcmc_steps": self.mcmc_steps, "step_size": self.initial_step_size,
                "leapfrog_steps": self.leapfrog_steps, "seed": self.seed}
