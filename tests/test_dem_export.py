"""`energy_models.dem.export`: the SavedModel's score is the energy formula, with and without whitening."""


import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem.contrastive_divergence import ContrastiveDivergence
from energy_models.dem.energy import DEMEnergy


@pytest.mark.parametrize("whitened", [False, True])
def test_exported_score_equals_the_energy_formula(whitened):
    """The SavedModel's scoring expression (one product with [V; b], row sums as products with ones)
    against the layer's log p~ on the whitened input plus log|det A|, for a raw and a whitened model."""
    from energy_models.dem.export import DEMModule
    from energy_models.whitening import LinearWhitening

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(300, 784)).astype(np.float32)
    whitening = LinearWhitening.zca(x, 1e-2) if whitened else None
    energy = DEMEnergy(12, 10, 0.5, use_bias=True)
    model = ContrastiveDivergence(energy, dim=784, whitening=whitening, mcmc="langevin", mcmc_steps=1)
    for weight in (energy.V, energy.W, energy.b, energy.c, energy.d):
        weight.assign(rng.normal(size=weight.shape).astype(np.float32) * 0.3)
    module = DEMModule(model, x.mean(0), 0.1 * np.eye(784), {}, sample_sweeps=1)
    u = x if whitening is None else np.asarray(whitening(x))
    expected = energy(tf.constant(u)).numpy() + (whitening.log_abs_det if whitened else 0.0)
    np.testing.assert_allclose(module.unnormalized_log_prob(x).numpy(), expected, rtol=2e-5, atol=1e-3)
