"""Contrastive divergence (CD-k and persistent CD) for the deep energy model, as a Keras `Model`.

The maximum-likelihood gradient of the joint model f(x, z) (see `energy_models.layers.dem_energy`) is

    grad log p(x) = E_{z ~ p(z|x)}[grad f(x, z)] - E_{(x', z') ~ p}[grad f(x', z')].

Each `train_step` estimates both expectations on a batch of n patches:

    positive phase  z ~ p(z | x) at the data (`z_sampling="gibbs"`), or z = E[z | x] = s(W g(x) + c)
                    (`"mean"`: then grad f(x, E[z|x]) = grad log p~(x) exactly, a Rao-Blackwellised
                    estimate with lower variance);
    negative phase  x' after `mcmc_steps` block Gibbs sweeps (`energy_models.samplers.dem_gibbs`),
                    started at the data batch (CD-k) or at the chains kept from the previous step
                    (persistent CD: the chains live in a non-trainable weight), and z' drawn as in the
                    positive phase;

and descends the surrogate loss

    loss = mean_i f(x'_i, z'_i) - mean_i f(x_i, z_i)     (x', z, z' held fixed),

whose gradient is minus the estimate above. Reported per step (one `keras.metrics.Mean` each):
loss, energy_data and energy_negatives (-log p~ in raw pixel space, i.e. including log|det W| of the
whitening), acceptance (mean acceptance probability of the x-moves; 1 for uncalibrated Langevin),
grad_norm (global norm of the gradient before the update) and step_size (after adaptation).

With a `LinearWhitening` layer, the energy models u = W (x - mu); batches stay in raw pixels and are
whitened inside the step, and every reported log-density adds log|det W| (change of variables).

Randomness: the model owns a seed (an `int`) and a step counter (a non-trainable weight, saved with the
checkpoints); every draw of a step uses a stateless seed split from (seed, counter), so runs are
reproducible and a restored checkpoint continues the same stream.

References: Hinton, "Training products of experts by minimizing contrastive divergence", Neural
Computation (2002); Tieleman, "Training restricted Boltzmann machines using approximations to the
likelihood gradient", ICML (2008); Ngiam et al., "Learning deep energy models", ICML (2011).
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.layers.dem_energy import DEMEnergy, sample_latents, sigmoid
from energy_models.distribute import replica_share, step_logs
from energy_models.errors import check_static_rows
from energy_models.samplers import dem_gibbs, normal_noise
from energy_models.seeding import replica_seed

Z_SAMPLING = ("gibbs", "mean")
# Folded into (seed, counter) for the Langevin/MALA noise, a stream apart from the step's split seeds.
_NOISE_STREAM = 0x4E015E
METRIC_NAMES = ("loss", "energy_data", "energy_negatives", "acceptance", "grad_norm", "step_size")


@keras.saving.register_keras_serializable(package="energy_models")
class ContrastiveDivergence(keras.Model):
    """Trains a `DEMEnergy` by CD-k or persistent CD with Gibbs/MCMC negatives (module docstring).

    Args:
        energy: the `DEMEnergy` layer (built here for `dim` inputs).
        dim: D, the number of pixels.
        whitening: an optional `LinearWhitening` applied in front of the energy.
        mcmc: x-move of the Gibbs sweeps: "langevin", "mala" or "hmc".
        mcmc_steps: k, Gibbs sweeps per training step.
        step_size: initial eta of the x-moves (adapted for mala and hmc).
        persistent: keep the chains across steps (PCD) instead of restarting them at the data.
        num_chains: persistent chains; must equal the (fixed) batch size. Ignored for CD.
        z_sampling: "gibbs" or "mean" for the latents of the gradient estimate.
        leapfrog_steps: HMC leapfrog steps per move.
        adapt_rate: step-size adaptation rate (0 disables).
        seed: integer seed of every random draw.
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: an option is not one of its allowed values.
    """

    def __init__(self, energy, dim=784, whitening=None, mcmc="mala", mcmc_steps=10, step_size=1e-2,
                 persistent=False, num_chains=256, z_sampling="gibbs", leapfrog_steps=5, adapt_rate=0.01,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        if mcmc not in dem_gibbs.METHODS:
            raise ValueError(f"mcmc must be one of {dem_gibbs.METHODS}, got mcmc={mcmc!r}")
        if z_sampling not in Z_SAMPLING:
            raise ValueError(f"z_sampling must be one of {Z_SAMPLING}, got z_sampling={z_sampling!r}")
        for name, value in (("mcmc_steps", mcmc_steps), ("num_chains", num_chains),
                            ("leapfrog_steps", leapfrog_steps)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if not (np.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a positive number, got step_size={step_size!r}")
        self.energy = energy if isinstance(energy, DEMEnergy) else keras.saving.deserialize_keras_object(energy)
        self.whitening = whitening if whitening is None or isinstance(whitening, keras.layers.Layer) \
            else keras.saving.deserialize_keras_object(whitening)
        self.dim = int(dim)
        self.mcmc = mcmc
        self.mcmc_steps = int(mcmc_steps)
        self.initial_step_size = float(step_size)
        self.persistent = bool(persistent)
        self.num_chains = int(num_chains)
        self.z_sampling = z_sampling
        self.leapfrog_steps = int(leapfrog_steps)
        self.adapt_rate = float(adapt_rate)
        self.seed = int(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        for layer in (self.energy, self.whitening):
            if layer is not None and not layer.built:
                layer.build((None, self.dim))
        # Under tf.distribute: replicas adapt eta on their own chains and the mean is kept; each replica
        # owns a slice of the persistent chains and writes it into zeros elsewhere, so the sum is all chains.
        self.step_size = self.add_weight(name="step_size", shape=(), trainable=False, aggregation="mean",
                                         initializer=keras.initializers.Constant(self.initial_step_size))
        self.seed_counter = self.add_weight(name="seed_counter", shape=(), dtype="int32", trainable=False,
                                            initializer="zeros", aggregation="only_first_replica")
        if self.persistent:
            self.chains = self.add_weight(name="chains", shape=(self.num_chains, self.dim), trainable=False,
                                          aggregation="sum",
                                          initializer="zeros")
            self.chains_ready = self.add_weight(name="chains_ready", shape=(), trainable=False, aggregation="mean",
                                                initializer="zeros")
        self._jit_update = False
        if self.prefetches_noise:
            # eps of the next step's sweeps, drawn while this step computes (train_step). Plain
            # tf.Variables: not weights, so checkpoints leave them out; the tag says which step's draw
            # the buffer holds, and any other step (the first, or one after a restore) draws its own.
            self._noise_buffer = tf.Variable(tf.zeros([self.mcmc_steps, self.num_chains, self.dim]),
                                             trainable=False, shape=[self.mcmc_steps, None, self.dim])
            self._noise_step = tf.Variable(-1, dtype=tf.int32, trainable=False)
        self.built = True

    @property
    def prefetches_noise(self):
        """Whether train_step draws the x-moves' Gaussian noise outside XLA, a step ahead (CD with
        Langevin or MALA on a CPU; HMC's tfp kernel draws its own momenta; on a GPU the sweeps draw
        theirs on the device, `normal_noise.host_noise_pays`)."""
        return (self.mcmc in dem_gibbs.NOISE_METHODS and type(self).train_step is ContrastiveDivergence.train_step
                and normal_noise.host_noise_pays())

    def compile(self, *args, jit_compile="auto", **kwargs):
        """`keras.Model.compile`; with Langevin or MALA moves, `jit_compile=True` compiles the step's
        update with XLA while Keras runs the step itself uncompiled, so that its noise is drawn outside XLA."""
        self._jit_update = jit_compile is True
        if self.prefetches_noise:
            jit_compile = False
        super().compile(*args, jit_compile=jit_compile, **kwargs)

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

    def score_samples(self, x, batch_size=4096):
        """Unnormalised log-densities of raw-pixel rows x [n, D] as float64 numpy [n].

        Raises:
            ValueError: x does not have D columns.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"X has {x.shape[-1] if x.ndim else 0} features, but the model expects {self.dim}")
        return np.concatenate([self._score(x[i:i + batch_size]).numpy().astype(np.float64)
                               for i in range(0, len(x), batch_size)] or [np.zeros(0)])

    @tf.function(jit_compile=True, reduce_retracing=True)
    def _score(self, x):
        return self(x)

    def _next_seeds(self, count):
        """`count` stateless seeds [count, 2] from (seed, step counter); advances the counter."""
        self.seed_counter.assign_add(1)
        return tf.random.experimental.stateless_split(replica_seed(self.seed, self.seed_counter), count)

    def _latents(self, u, seed):
        logits = self.energy.latent_logits(u)
        if self.z_sampling == "mean":
            return sigmoid(logits)
        return sample_latents(logits, seed)

    def _chain_rows(self, n):
        """First row of this replica's n persistent chains in the chain weight, or None when there is one
        replica (which owns all of them)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return None
        return tf.cast(context.replica_id_in_sync_group, tf.int32) * n

    def _my_chains(self, n):
        """This replica's persistent chains: rows [r n, (r + 1) n) of the chain weight (all on one device)."""
        start = self._chain_rows(n)
        return self.chains if start is None else self.chains[start:start + n]

    def _keep_chains(self, negatives):
        """Stores this replica's chains; with R > 1 replicas its rows in zeros, summed over replicas."""
        n = tf.shape(negatives)[0]
        start = self._chain_rows(n)
        if start is None:
            self.chains.assign(negatives)
            return
        rows = tf.range(start, start + n)[:, None]
        self.chains.assign(tf.scatter_nd(rows, negatives, tf.shape(self.chains)))

    def negative_phase(self, start, seed, step_size, adapt_rate, noise=None):
        """`mcmc_steps` Gibbs sweeps from `start` (model space): (negatives, acceptance, final eta).
        `noise`: Langevin or MALA, eps of every sweep [mcmc_steps, n, D] (None: drawn in the sweeps)."""
        return dem_gibbs.run_chains(start, step_size, seed, self.mcmc_steps, self.energy.latent_logits,
                                    self.energy.joint, self.mcmc, self.leapfrog_steps, adapt_rate, noise=noise)

    def _draw_noise(self, counter, n):
        """eps [mcmc_steps, n, D] of the step whose seed counter is `counter`: a pure function of
        (seed, counter, replica), whenever it is drawn."""
        seed = tf.random.experimental.stateless_fold_in(replica_seed(self.seed, counter), _NOISE_STREAM)
        return normal_noise.standard_normal(tf.stack([self.mcmc_steps, n, self.dim]), seed)

    def _chain_noise(self, n):
        """This step's Langevin or MALA noise, from the buffer when the previous step drew it, and the next
        step's draw into the buffer.

        The draw is 2.0 M normals for CD-10 on batch 256, the largest cost of the step. The draw for the
        next step does not depend on this step's update, so TensorFlow's executor runs the two at once,
        on both cores (bench/bench_dem.py). Under tf.distribute with several replicas each step draws its
        own (a replica-local buffer would need a variable per replica).
        """
        counter = tf.identity(self.seed_counter)
        if self._chain_rows(n) is not None:
            return self._draw_noise(counter, n)
        buffer = self._noise_buffer
        ready = tf.logical_and(tf.equal(self._noise_step, counter), tf.equal(tf.shape(buffer)[1], n))
        noise = tf.cond(ready, lambda: tf.identity(buffer.read_value()), lambda: self._draw_noise(counter, n))
        upcoming = self._draw_noise(counter + 1, n)
        with tf.control_dependencies([noise]):
            buffer.assign(upcoming)
            self._noise_step.assign(counter + 1)
        return noise

    def _phases(self, x, adapt_rate, seeds, noise=None):
        u = self.to_model_space(x)
        start = u
        if self.persistent:
            # The first step starts the persistent chains at the data, like CD.
            start = tf.where(self.chains_ready > 0, self._my_chains(tf.shape(u)[0]), u)
        negatives, acceptance, eta = self.negative_phase(start, seeds[2], self.step_size, adapt_rate, noise)
        negatives = tf.stop_gradient(negatives)
        z_data = tf.stop_gradient(self._latents(u, seeds[0]))
        z_neg = tf.stop_gradient(self._latents(negatives, seeds[1]))
        return u, negatives, z_data, z_neg, acceptance, eta

    def _energies(self, u, negatives):
        """Mean -log p~ of data and negatives in pixel space (model-space energy minus log|det W|)."""
        log_det = self._log_det()
        return -tf.reduce_mean(self.energy(u)) - log_det, -tf.reduce_mean(self.energy(negatives)) - log_det

    def _report(self, loss, energies, acceptance, grad_norm):
        return self._track({"loss": loss, "energy_data": energies[0], "energy_negatives": energies[1],
                            "acceptance": acceptance, "grad_norm": grad_norm, "step_size": self.step_size})

    def _track(self, values):
        """Adds this step's values to the running means; returns the logs of every tracker."""
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return step_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        seeds = self._next_seeds(3)
        if not self.prefetches_noise:
            return self._report(*self._update(x, seeds))
        noise = self._chain_noise(tf.shape(x)[0])
        # XLA compiles everything but the noise draw (normal_noise says why); Keras runs this uncompiled.
        update = self._compiled_update if self._jit_update and self._chain_rows(1) is None else self._update
        return self._report(*update(x, seeds, noise))

    @tf.function(jit_compile=True, reduce_retracing=True)
    def _compiled_update(self, x, seeds, noise):
        return self._update(x, seeds, noise)

    def _update(self, x, seeds, noise=None):
        """Negative phase, gradient and optimiser step: (loss, energies, acceptance, grad_norm)."""
        u, negatives, z_data, z_neg, acceptance, eta = self._phases(x, self.adapt_rate, seeds, noise)
        weights = self.energy.trainable_weights
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.energy.joint(negatives, z_neg)) - tf.reduce_mean(self.energy.joint(u, z_data))
            share = replica_share(loss)  # The update of the global-batch mean under tf.distribute.
        grads = tape.gradient(share, weights)
        grad_norm = tf.linalg.global_norm(grads)
        # Energies at the parameters the gradient was taken at (XLA shares their products with the loss's).
        energies = self._energies(u, negatives)
        self.optimizer.apply(grads, weights)
        self.step_size.assign(eta)
        if self.persistent:
            self._keep_chains(negatives)
            self.chains_ready.assign(1.0)
        return loss, energies, acceptance, grad_norm

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        u = self.to_model_space(x)
        seeds = self._next_seeds(3)
        # CD negatives from the held-out batch, without adapting eta or touching persistent chains.
        negatives, acceptance, _ = self.negative_phase(u, seeds[2], self.step_size, 0.0)
        z_data, z_neg = self._latents(u, seeds[0]), self._latents(negatives, seeds[1])
        loss = tf.reduce_mean(self.energy.joint(negatives, z_neg)) - tf.reduce_mean(self.energy.joint(u, z_data))
        return self._report(loss, self._energies(u, negatives), acceptance, tf.constant(np.nan, tf.float32))

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
                "persistent": self.persistent, "num_chains": self.num_chains, "z_sampling": self.z_sampling,
                "leapfrog_steps": self.leapfrog_steps, "adapt_rate": self.adapt_rate, "seed": self.seed}
