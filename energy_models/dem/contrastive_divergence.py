"""Contrastive divergence (CD-k and persistent CD) for the deep energy model, as a Keras `Model`.

The maximum-likelihood gradient of the joint model f(x, z) (see `energy_models.dem.energy`) is

    grad log p(x) = E_{z ~ p(z|x)}[grad f(x, z)] - E_{(x', z') ~ p}[grad f(x', z')].

Each `train_step` estimates both expectations on a batch of n patches:

    positive phase  z ~ p(z | x) at the data (`z_sampling="gibbs"`), or z = E[z | x] = s(W g(x) + c)
                    (`"mean"`: then grad f(x, E[z|x]) = grad log p~(x) exactly, a Rao-Blackwellised
                    estimate with lower variance);
    negative phase  x' after `mcmc_steps` block Gibbs sweeps (`energy_models.dem.gibbs`),
                    started at the data batch (CD-k) or at the chains kept from the previous step
                    (persistent CD: the chains live in a non-trainable weight), and z' drawn as in the
                    positive phase;

and descends the surrogate loss

    loss = mean_i f(x'_i, z'_i) - mean_i f(x_i, z_i)     (x', z, z' held fixed),

whose gradient is minus the estimate above. Reported per step (one `keras.metrics.Mean` each):
loss, energy_data and energy_negatives (-log p~ in raw pixel space, i.e. including log|det W| of the
whitening), acceptance (mean acceptance probability of the x-moves; 1 for uncalibrated Langevin),
grad_norm (global norm of the gradient before the update) and step_size (after adaptation).

Whitening, sampling and seeding are the `DeepEnergyModel`'s (`energy_models.dem.model`).

References: Hinton, "Training products of experts by minimizing contrastive divergence", Neural
Computation (2002); Tieleman, "Training restricted Boltzmann machines using approximations to the
likelihood gradient", ICML (2008); Ngiam et al., "Learning deep energy models", ICML (2011).
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models import sampling
from energy_models.dem import gibbs as dem_gibbs
from energy_models.dem.energy import sample_latents, sigmoid
from energy_models.dem.model import DeepEnergyModel
from energy_models.errors import check_choice, check_positive_int
from energy_models.objectives import contrastive_divergence_loss
from energy_models.training.distribute import replica_share
from energy_models.training.seeding import replica_seed

Z_SAMPLING = ("gibbs", "mean")
# Folded into (seed, counter) for the Langevin/MALA noise, a stream apart from the step's split seeds.
_NOISE_STREAM = 0x4E015E
METRIC_NAMES = ("loss", "energy_data", "energy_negatives", "acceptance", "grad_norm", "step_size")


@keras.saving.register_keras_serializable(package="energy_models")
class ContrastiveDivergence(DeepEnergyModel):
    """Trains a `DEMEnergy` by CD-k or persistent CD with Gibbs/MCMC negatives (module docstring).

    Args:
        energy: the `DEMEnergy` layer.
        persistent: keep the chains across steps (PCD) instead of restarting them at the data.
        num_chains: persistent chains; must equal the (fixed) batch size. Ignored for CD.
        z_sampling: "gibbs" or "mean" for the latents of the gradient estimate.
        adapt_rate: step-size adaptation rate (0 disables).
        **kwargs: passed to `DeepEnergyModel` (dim, whitening, mcmc, mcmc_steps, step_size, leapfrog_steps,
            seed, ...).

    Raises:
        ValueError: an option is not one of its allowed values.
    """

    METRIC_NAMES = METRIC_NAMES

    def __init__(self, energy, persistent=False, num_chains=256, z_sampling="gibbs", adapt_rate=0.01, **kwargs):
        super().__init__(energy, **kwargs)
        check_choice("z_sampling", z_sampling, Z_SAMPLING)
        check_positive_int("num_chains", num_chains)
        self.persistent = bool(persistent)
        self.num_chains = int(num_chains)
        self.z_sampling = z_sampling
        self.adapt_rate = float(adapt_rate)
        if self.persistent:
            # Each replica owns a slice of the persistent chains and writes it into zeros elsewhere, so the
            # sum over replicas is all chains.
            self.chains = self.add_weight(name="chains", shape=(self.num_chains, self.dim), trainable=False,
                                          aggregation="sum", initializer="zeros")
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

    @property
    def prefetches_noise(self):
        """Whether train_step draws the x-moves' Gaussian noise outside XLA, a step ahead (CD with
        Langevin or MALA on a CPU; HMC's tfp kernel draws its own momenta; on a GPU the sweeps draw
        theirs on the device, `sampling.host_noise_pays`)."""
        return self.mcmc in dem_gibbs.NOISE_METHODS and sampling.host_noise_pays()

    def compile(self, *args, jit_compile="auto", **kwargs):
        """`keras.Model.compile`; with Langevin or MALA moves, `jit_compile=True` compiles the step's
        update with XLA while Keras runs the step itself uncompiled, so that its noise is drawn outside XLA."""
        self._jit_update = jit_compile is True
        if self.prefetches_noise:
            jit_compile = False
        super().compile(*args, jit_compile=jit_compile, **kwargs)

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

    def _draw_noise(self, counter, n):
        """eps [mcmc_steps, n, D] of the step whose seed counter is `counter`: a pure function of
        (seed, counter, replica), whenever it is drawn."""
        seed = tf.random.experimental.stateless_fold_in(replica_seed(self.seed, counter), _NOISE_STREAM)
        return sampling.standard_normal(tf.stack([self.mcmc_steps, n, self.dim]), seed)

    def _chain_noise(self, n):
        """This step's Langevin or MALA noise, from the buffer when the previous step drew it, and the next
        step's draw into the buffer.

        The draw is 2.0 M normals for CD-10 on batch 256, the largest cost of the step. The draw for the
        next step does not depend on this step's update, so TensorFlow's executor runs the two at once,
        on both cores (BENCHMARKS.md, "Deep energy model (issue 5)"). Under tf.distribute with several
        replicas each step draws its own (a replica-local buffer would need a variable per replica).
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

    def _chain_batch_error(self, rows):
        return ValueError(f"persistent CD keeps num_chains={self.num_chains} chains, one per row of a batch, but a "
                          f"batch has {rows} rows; pass batch_size={self.num_chains} and a row count divisible by it")

    def _check_chain_batch(self, rows):
        """Persistent chains are one per row of the global batch: another batch size is an error naming both
        (checked where the batch size is known: `fit` on arrays, or a dataset of fixed-size batches)."""
        if not self.persistent or rows is None:
            return
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if int(rows) * replicas != self.num_chains:
            raise self._chain_batch_error(int(rows) * replicas)

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        """`keras.Model.fit`; with persistent chains, arrays must come in whole batches of num_chains rows."""
        if self.persistent and x is not None and hasattr(x, "shape") and not isinstance(x, tf.data.Dataset):
            size, rows = batch_size or 32, int(x.shape[0])  # 32: Keras' default batch size
            if size != self.num_chains or rows % size:
                raise self._chain_batch_error(size if size != self.num_chains else rows % size)
        return super().fit(x, y, batch_size, *args, **kwargs)

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._check_chain_batch(x.shape[0])
        seeds = self._next_seeds(3)
        if not self.prefetches_noise:
            return self._report(*self._update(x, seeds))
        noise = self._chain_noise(tf.shape(x)[0])
        # XLA compiles everything but the noise draw (`sampling.standard_normal` says why); Keras runs this uncompiled.
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
            loss = contrastive_divergence_loss(self.energy.joint(u, z_data), self.energy.joint(negatives, z_neg))
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
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        u = self.to_model_space(x)
        seeds = self._next_seeds(3)
        # CD negatives from the held-out batch, without adapting eta or touching persistent chains.
        negatives, acceptance, _ = self.negative_phase(u, seeds[2], self.step_size, 0.0)
        z_data, z_neg = self._latents(u, seeds[0]), self._latents(negatives, seeds[1])
        loss = contrastive_divergence_loss(self.energy.joint(u, z_data), self.energy.joint(negatives, z_neg))
        return self._report(loss, self._energies(u, negatives), acceptance, tf.constant(np.nan, tf.float32))

    def get_config(self):
        return {**super().get_config(), "persistent": self.persistent, "num_chains": self.num_chains,
                "z_sampling": self.z_sampling, "adapt_rate": self.adapt_rate}
