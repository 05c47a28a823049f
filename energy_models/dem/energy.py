"""`DEMEnergy`: the deep energy model's unnormalised log-density as a Keras layer.

    log p~(x)  = -||x||^2 / (2 sigma^2) + b^T x + sum_k S(w_k^T g(x) + c_k),   g(x) = s(V x + d),
    f(x, z)    = -||x||^2 / (2 sigma^2) + b^T x + c^T z + z^T W g(x),           z in {0, 1}^K,
    p(z | x)   = prod_k Bernoulli(z_k; s(w_k^T g(x) + c_k)),

with S(u) = log(1 + e^u) (softplus), s(u) = 1 / (1 + e^-u) (sigmoid), V [hidden, D], W [K, hidden]
(rows w_k), b [D], c [K] and an optional bias d [hidden] of g (off by default).
With `components` k < D, V = V_k B: the rows of V are confined to the span of k fixed orthonormal rows
B [k, D] (e.g. the top principal directions of whitened patches) and only V_k [hidden, k] is learnt; the
other D - k directions are modelled by the Gaussian term alone, so the density stays proper in all D.
Summing z out of exp f gives exp log p~: sum_z exp(c^T z + z^T W g) = prod_k (1 + e^{w_k^T g + c_k}).

The tensor functions below (`unnormalized_log_prob`, `latent_logits`, `joint_log_prob`, ...) take the
parameters explicitly, so the Keras layer and the exported `tf.Module` (which holds plain constants and
must load without project code) evaluate exactly the same graph.

Reference: Ngiam, Chen, Koh and Ng, "Learning deep energy models", ICML (2011).
"""

import keras
import numpy as np
import tensorflow as tf

from energy_models.errors import check_positive_int


def softplus(u):
    """S(u) = log(1 + e^u), computed as max(u, 0) + log1p(e^-|u|) so that e^u never overflows.

    TensorFlow's kernel and its XLA lowering use this form (and S(u) = u for large u); its gradient is
    s(u), which is bounded, so gradients stay finite at |u| = 1e4.
    """
    return tf.nn.softplus(u)


def sigmoid(u):
    """s(u) = 1 / (1 + e^-u), evaluated as e^u / (1 + e^u) for u < 0 so that e^-u never overflows."""
    return tf.math.sigmoid(u)


def pre_activations(x, V, d=None):
    """V x + d for x [n, D]: [n, hidden]. Every path (z draws, MCMC gradients, scores) uses this one
    expression, so XLA can share the matrix product between a Gibbs draw and the next x-update."""
    u = tf.matmul(x, V, transpose_b=True)
    return u if d is None else u + d


def features(x, V, d=None):
    """g(x) = s(V x + d): [n, hidden]."""
    return sigmoid(pre_activations(x, V, d))


def latent_logits(x, V, W, c, d=None):
    """w_k^T g(x) + c_k for every k: [n, K]; p(z_k = 1 | x) = s(latent_logits)."""
    return tf.matmul(features(x, V, d), W, transpose_b=True) + c


def row_sum(a):
    """sum_j a_ij for a [n, m]: [n], as the product a 1 with a vector of ones. Under XLA on CPU the
    product is several times faster than a row reduction, so the exported scoring and the MALA acceptance
    use this form (BENCHMARKS.md, "Scoring through SavedModels (issue 6)")."""
    return tf.matmul(a, tf.ones([a.shape[-1], 1], a.dtype))[:, 0]


def gaussian_term(x, b, sigma):
    """-||x||^2 / (2 sigma^2) + b^T x: [n]."""
    return -0.5 * tf.reduce_sum(tf.square(x), axis=-1) / sigma ** 2 + tf.linalg.matvec(x, b)


def unnormalized_log_prob(x, V, W, b, c, sigma, d=None):
    """log p~(x) = -||x||^2/(2 sigma^2) + b^T x + sum_k S(w_k^T g(x) + c_k): [n]."""
    return gaussian_term(x, b, sigma) + tf.reduce_sum(softplus(latent_logits(x, V, W, c, d)), axis=-1)


def joint_log_prob(x, z, V, W, b, c, sigma, d=None):
    """f(x, z) = -||x||^2/(2 sigma^2) + b^T x + c^T z + z^T W g(x): [n] for x [n, D], z [n, K]."""
    g = features(x, V, d)
    return gaussian_term(x, b, sigma) + tf.reduce_sum(z * (tf.matmul(g, W, transpose_b=True) + c), axis=-1)


def sample_latents(logits, seed):
    """z ~ prod_k Bernoulli(s(logits_k)) as float32 0/1, from a stateless seed [2] (reproducible).

    z_k = 1 when U < s(logit) with U ~ Uniform(0, 1), i.e. when log U - log(1 - U) < logit: comparing
    logits avoids rounding s(logit) to exactly 1 in float32 for large logits.
    """
    u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-7, maxval=1.0 - 1e-7)
    return tf.cast(tf.math.log(u) - tf.math.log1p(-u) < logits, logits.dtype)


@keras.saving.register_keras_serializable(package="energy_models")
class DEMEnergy(keras.layers.Layer):
    """The deep energy model: returns log p~(x) [n] for inputs x [n, D] (see the module docstring).

    Weights, created by name in `build()`: V [hidden, D], W [latents, hidden], b [D], c [latents] and,
    with `use_bias`, d [hidden]. V and W start as small Gaussians (std 1/sqrt(D) and 1/sqrt(hidden):
    w_k^T g(x) is then of order 1 for unit-scale inputs); b and c start at zero, so the initial model is
    close to N(0, sigma^2 I). sigma is a fixed hyperparameter, not a weight.

    Args:
        hidden: width of g (rows of V), default 64.
        latents: K, the number of binary latents (rows of W), default 64.
        sigma: the standard deviation of the Gaussian base term, > 0.
        use_bias: whether g has a bias d (default False).
        components: None (V free in all D inputs) or k: V = V_k B with a fixed basis B [k, D] (see the
            module docstring; `set_basis` sets B, which starts as the first k unit vectors).
        v_stddev: std of V's (of V_k's) Gaussian start; default 1/sqrt(D).
        learn_sigma: learn sigma (as log sigma^2, started at `sigma`) instead of keeping it fixed. The
            softplus terms are bounded in g, so far from the data every direction decays like the
            Gaussian term, and sigma sets those tails. Off by default: a learnt sigma gives localised
            filters too, but forward and reverse AIS then fail to agree on log Z and the held-out
            log-likelihood does not rise (BENCHMARKS.md, "energy_models/dem/energy.py: learnt sigma").
        **kwargs: passed to `keras.layers.Layer`.

    Raises:
        ValueError: a width is not a positive integer or sigma is not a positive finite number.
    """

    def __init__(self, hidden=64, latents=64, sigma=1.0, use_bias=False, components=None, v_stddev=None,
                 learn_sigma=False, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("hidden", hidden)
        check_positive_int("latents", latents)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)) \
                or not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"sigma must be a positive finite number, got sigma={sigma!r}")
        self.hidden = int(hidden)
        self.latents = int(latents)
        self.sigma = float(sigma)
        self.use_bias = bool(use_bias)
        if components is not None and (isinstance(components, bool) or not isinstance(components, (int, np.integer))
                                       or components < 1):
            raise ValueError(f"components must be None or a positive integer, got components={components!r}")
        self.components = None if components is None else int(components)
        if v_stddev is not None and not (np.isfinite(v_stddev) and v_stddev > 0):
            raise ValueError(f"v_stddev must be None or a positive number, got v_stddev={v_stddev!r}")
        self.v_stddev = None if v_stddev is None else float(v_stddev)
        self.learn_sigma = bool(learn_sigma)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("the input width D must be known to build DEMEnergy")
        self.dim = int(dim)
        if self.components is not None and self.components > self.dim:
            raise ValueError(f"components ({self.components}) must be at most the input width {self.dim}")
        width = self.dim if self.components is None else self.components
        stddev = self.v_stddev if self.v_stddev is not None else self.dim ** -0.5
        self.V = self.add_weight(name="V", shape=(self.hidden, width),
                                 initializer=keras.initializers.RandomNormal(stddev=stddev))
        # Fixed, saved with the model (a checkpoint restores it with the weights).
        self.basis = None if self.components is None else self.add_weight(
            name="basis", shape=(self.components, self.dim), trainable=False,
            initializer=lambda shape, dtype=None: tf.eye(shape[0], shape[1], dtype=dtype or "float32"))
        self.W = self.add_weight(name="W", shape=(self.latents, self.hidden),
                                 initializer=keras.initializers.RandomNormal(stddev=self.hidden ** -0.5))
        self.b = self.add_weight(name="b", shape=(self.dim,), initializer="zeros")
        self.c = self.add_weight(name="c", shape=(self.latents,), initializer="zeros")
        self.d = self.add_weight(name="d", shape=(self.hidden,), initializer="zeros") if self.use_bias else None
        self.log_sigma_sq = self.add_weight(
            name="log_sigma_sq", shape=(), initializer=keras.initializers.Constant(2 * np.log(self.sigma))) \
            if self.learn_sigma else None

    def _check(self, x):
        if x.shape[-1] is not None and x.shape[-1] != self.dim:
            raise ValueError(f"X has {x.shape[-1]} features, but the model expects {self.dim}")

    def set_basis(self, basis):
        """Sets B [k, D] (orthonormal rows) of a model with `components` k."""
        if self.basis is None:
            raise ValueError("set_basis needs a model built with components=k")
        basis = np.asarray(basis, np.float32)
        if basis.shape != tuple(self.basis.shape):
            raise ValueError(f"basis must have shape {tuple(self.basis.shape)}, got {basis.shape}")
        self.basis.assign(basis)

    @property
    def effective_V(self):
        """V [hidden, D] as the energy uses it: V_k B with a basis, else the weight V itself."""
        return self.V if self.basis is None else tf.matmul(self.V, self.basis)

    @property
    def scale(self):
        """sigma as the energy uses it: the learnt exp(log sigma^2 / 2), or the fixed `sigma`."""
        return self.sigma if self.log_sigma_sq is None else tf.exp(0.5 * self.log_sigma_sq)

    @property
    def params(self):
        """(V, W, b, c, sigma, d) in the order of the tensor functions' arguments (V as `effective_V`)."""
        return self.effective_V, self.W, self.b, self.c, self.scale, self.d

    def call(self, x):
        self._check(x)
        return unnormalized_log_prob(x, *self.params)

    def features(self, x):
        """g(x) = s(V x + d): [n, hidden]."""
        return features(x, self.effective_V, self.d)

    def latent_logits(self, x):
        """w_k^T g(x) + c_k: [n, K]."""
        return latent_logits(x, self.effective_V, self.W, self.c, self.d)

    def latent_means(self, x):
        """E[z | x] = s(w_k^T g(x) + c_k): [n, K]."""
        return sigmoid(self.latent_logits(x))

    def sample_latents(self, x, seed):
        """z ~ p(z | x) with a stateless seed [2]: float [n, K] of 0/1."""
        return sample_latents(self.latent_logits(x), seed)

    def joint(self, x, z):
        """f(x, z): [n]."""
        return joint_log_prob(x, z, *self.params)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "latents": self.latents,
                "sigma": self.sigma, "use_bias": self.use_bias, "components": self.components,
                "v_stddev": self.v_stddev, "learn_sigma": self.learn_sigma}
