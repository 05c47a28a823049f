"""The deep energy model's energy (`energy_models.dem.energy`): softplus and sigmoid, log p~ against NumPy, its
gradient against finite differences."""


import numpy as np
import pytest
import tensorflow as tf

from energy_models.dem.energy import DEMEnergy, sigmoid, softplus


def test_softplus_and_sigmoid_exact_values_and_extremes():
    u = tf.constant([-1e4, -2.0, 0.0, 1.0, 1e4], tf.float64)
    u_np = np.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(softplus(u).numpy()[1:4], np.log1p(np.exp(u_np)), rtol=1e-12)
    np.testing.assert_allclose(sigmoid(u).numpy()[1:4], 1 / (1 + np.exp(-u_np)), rtol=1e-12)
    assert softplus(u).numpy()[0] == 0.0 and softplus(u).numpy()[4] == 1e4
    assert sigmoid(u).numpy()[0] == 0.0 and sigmoid(u).numpy()[4] == 1.0
    for dtype in (tf.float32, tf.float64):
        x = tf.constant([-1e4, 0.0, 1e4], dtype)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            s_values, big_s = sigmoid(x), softplus(x)
        grad_s, grad_big_s = tape.gradient(s_values, x).numpy(), tape.gradient(big_s, x).numpy()
        assert np.all(np.isfinite(big_s.numpy())) and np.all(np.isfinite(s_values.numpy()))
        np.testing.assert_allclose(grad_big_s, [0.0, 0.5, 1.0])  # S'(u) = s(u)
        np.testing.assert_allclose(grad_s, [0.0, 0.25, 0.0])  # s'(u) = s(u)(1 - s(u))


def _layer(dim=12, hidden=5, latents=4, sigma=0.7, use_bias=True, seed=0):
    layer = DEMEnergy(hidden, latents, sigma, use_bias=use_bias, dtype="float64")
    layer.build((None, dim))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape))
    return layer


def _numpy_log_p(layer, x):
    V, W, b, c = (np.asarray(w, np.float64) for w in (layer.V, layer.W, layer.b, layer.c))
    d = 0.0 if layer.d is None else np.asarray(layer.d, np.float64)
    g = 1 / (1 + np.exp(-(x @ V.T + d)))
    a = g @ W.T + c
    return -np.sum(x ** 2, 1) / (2 * layer.sigma ** 2) + x @ b + np.sum(np.logaddexp(0, a), 1)


def test_layer_log_p_matches_numpy_and_config_round_trips():
    layer = _layer()
    x = np.random.default_rng(1).normal(size=(9, 12))
    np.testing.assert_allclose(layer(x).numpy(), _numpy_log_p(layer, x), rtol=1e-12)
    # Summing z out of exp f: log p~(x) = log sum_z exp f(x, z), checked by brute force over {0,1}^4.
    zs = np.array(np.meshgrid(*[[0, 1]] * 4)).reshape(4, -1).T.astype(np.float64)
    joint = np.stack([layer.joint(x, np.tile(z, (9, 1))).numpy() for z in zs])
    np.testing.assert_allclose(np.logaddexp.reduce(joint, axis=0), layer(x).numpy(), rtol=1e-10)
    clone = DEMEnergy.from_config(layer.get_config())
    assert (clone.hidden, clone.latents, clone.sigma, clone.use_bias) == (5, 4, 0.7, True)
    with pytest.raises(ValueError, match="sigma must be a positive finite number, got sigma=0"):
        DEMEnergy(sigma=0)


def test_grad_x_log_p_matches_finite_differences():
    layer = _layer(use_bias=False)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 12)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_p = layer(x)
    grad = tape.gradient(log_p, x).numpy()
    h = 1e-6
    numeric = np.zeros_like(grad)
    for j in range(12):
        step = np.zeros((1, 12))
        step[0, j] = h
        numeric[:, j] = (_numpy_log_p(layer, x.numpy() + step) - _numpy_log_p(layer, x.numpy() - step)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
