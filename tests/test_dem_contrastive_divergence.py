"""`energy_models.dem.contrastive_divergence`: the noise the CD step prefetches is the noise it would draw, and
only on a CPU."""


import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem.contrastive_divergence import ContrastiveDivergence
from energy_models.dem.energy import DEMEnergy


@pytest.mark.parametrize("method", ["langevin", "mala"])
def test_prefetched_noise_gives_the_steps_of_fresh_draws(method):
    # train_step uses the noise the previous step drew for it; a model that draws fresh noise every
    # step (its buffer tag reset before each step) must end with the same parameters.
    rng = np.random.default_rng(8)
    batches = [tf.constant(rng.random((32, 20), dtype=np.float32)) for _ in range(4)]
    import keras

    models = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        model = ContrastiveDivergence(DEMEnergy(5, 4, 1.0), dim=20, mcmc=method, mcmc_steps=3,
                                      step_size=0.05, persistent=True, num_chains=32, seed=2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
        models.append(model)
    prefetched, fresh = models
    assert prefetched.prefetches_noise and not prefetched.jit_compile  # the update alone is compiled
    step_a, step_b = tf.function(prefetched.train_step), tf.function(fresh.train_step)
    for batch in batches:
        step_a(batch)
        fresh._noise_step.assign(-1)
        step_b(batch)
    assert int(prefetched._noise_step.numpy()) == int(prefetched.seed_counter.numpy()) + 1
    np.testing.assert_allclose(prefetched._noise_buffer.numpy(),
                               prefetched._draw_noise(prefetched.seed_counter + 1, 32).numpy())
    for a, b in zip(prefetched.energy.weights, fresh.energy.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # The buffer is what the step uses: zeros in it (tag intact) change the next step.
    prefetched._noise_buffer.assign(tf.zeros_like(prefetched._noise_buffer))
    step_a(batches[0])
    fresh._noise_step.assign(-1)
    step_b(batches[0])
    assert not np.allclose(prefetched.energy.V.numpy(), fresh.energy.V.numpy(), rtol=1e-5, atol=1e-6)


def _forbid_host_noise(*args):
    raise AssertionError("the numpy noise path was used")


@pytest.mark.parametrize("gpu", [False, True])
def test_host_noise_feeds_the_step_only_without_a_gpu(monkeypatch, gpu):
    # On a GPU the numpy draw would be copied from the host every step: the sweeps draw on the device.
    import keras

    from energy_models import sampling as normal_noise

    monkeypatch.setattr(normal_noise, "host_noise_pays", lambda: not gpu)
    keras.utils.set_random_seed(1)
    model = ContrastiveDivergence(DEMEnergy(5, 4, 1.0), dim=20, mcmc="mala", mcmc_steps=3, step_size=0.05, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    assert model.prefetches_noise is (not gpu) and hasattr(model, "_noise_buffer") is (not gpu)
    monkeypatch.setattr(normal_noise, "standard_normal", _forbid_host_noise)
    before = model.energy.V.numpy().copy()
    batch = tf.constant(np.random.default_rng(0).random((32, 20), dtype=np.float32))
    if not gpu:
        with pytest.raises(Exception, match="numpy noise path"):
            model.train_on_batch(batch)
        return
    logs = model.train_on_batch(batch, return_dict=True)
    assert model.jit_compile and np.isfinite(logs["loss"]) and 0.0 < logs["acceptance"] <= 1.0
    assert not np.allclose(model.energy.V.numpy(), before)


@pytest.mark.parametrize("mcmc", ["langevin", "hmc"])
def test_a_partial_batch_with_persistent_chains_names_batch_size_and_num_chains(mcmc):
    """Persistent CD keeps one chain per batch row: fit on 100 rows in batches of 32 ends with a batch of 4,
    which gets a message naming num_chains and the batch size (it was TensorFlow's SelectV2 error)."""
    import keras

    x = np.random.default_rng(0).random((100, 20), dtype=np.float32)
    model = ContrastiveDivergence(DEMEnergy(5, 4, 1.0), dim=20, mcmc=mcmc, mcmc_steps=1, step_size=0.01,
                                  persistent=True, num_chains=32, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match=r"persistent CD keeps num_chains=32 chains, one per row of a batch, but a batch has 4 "
                             r"rows; pass batch_size=32 and a row count divisible by it"):
        model.fit(x, batch_size=32, epochs=1, verbose=0)
    model.fit(x[:96], batch_size=32, epochs=1, verbose=0)  # whole batches train
    assert np.all(np.isnan(model.log_prob(x[:3])))  # CD learns no log Z: log_prob is NaN, as in its SavedModel
