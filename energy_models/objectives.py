"""Estimation objectives as pure tensor functions, shared by every trainer: the grid Gaussian's
(`energy_models.gaussian`), the deep energy model's (`energy_models.dem`) and `EnergyEstimator`, which
trains any Keras layer that maps x [n, D] to log p~(x) [n] by `fit`:

* NCE (Gutmann and Hyvarinen 2012, `nce_loss`): with G(x) = log p~(x) + c - log p_n(x) - log nu,
      J = E_data[softplus(-G(x))] + nu E_noise[softplus(G(y))],
  c learns -log Z. The noise p_n is any normalised tfp distribution the user can sample (near the data:
  a Gaussian with the data's mean and covariance is the usual choice, the default here).
* cNCE (Ceylan and Gutmann 2018, `cnce_loss`): y = x + epsilon u, u ~ N(0, I), symmetric, so with
  G = log p~(x) - log p~(y), J = 2 E[softplus(-G)]; log Z cancels.
* Score matching (Hyvarinen 2005, `score_matching_loss`) where the Laplacian has a closed form (the
  grid Gaussian's is -tr(Lambda)), and sliced score matching (Song et al. 2019), for energies without a
  closed-form Laplacian: with s(x) = grad_x log p~(x) and v ~ N(0, I),
      J = E_{x, v}[ v^T (d s / dx) v + (v^T s(x))^2 / 2 ],
  whose expectation over v is Hyvarinen's E[tr(d s / dx) + ||s||^2 / 2]; the Hessian-vector product is
  one more gradient.
* Contrastive divergence: negatives by `langevin_steps` steps of unadjusted Langevin dynamics from the
  data batch, x <- x + eta / 2 grad log p~(x) + sqrt(eta) u, and the surrogate
      J = E_data[-log p~(x)] - E_neg[-log p~(x-)]
  whose gradient is the CD estimate of the negative log-likelihood gradient.
"""

import tensorflow as tf

OBJECTIVES = ("nce", "cnce", "ssm", "cd")


def sliced_score_matching_loss(log_p, x, v):
    """Sliced score matching J for log_p: x [n, D] -> [n], at x with projections v [n, D]."""
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            log_px = log_p(x)
        score = inner.gradient(log_px, x)
        projected = tf.reduce_sum(score * v, axis=-1)
    hvp = outer.gradient(projected, x)  # (d s / dx) v, per row
    return tf.reduce_mean(tf.reduce_sum(v * hvp, axis=-1) + 0.5 * projected ** 2)


def langevin_negatives(log_p, x, steps, step_size, seed):
    """`steps` unadjusted Langevin steps from x (stateless `seed` [2]); no gradient flows through them."""
    seeds = tf.random.experimental.stateless_split(seed, steps)
    for k in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_px = log_p(x)
        x = x + 0.5 * step_size * tape.gradient(log_px, x) + tf.sqrt(step_size) * tf.random.stateless_normal(
            tf.shape(x), seeds[k])
    return tf.stop_gradient(x)


def contrastive_divergence_loss(log_p_data, log_p_negatives):
    """E_data[-log p~] - E_neg[-log p~]: its gradient is the CD estimate of the NLL gradient."""
    return tf.reduce_mean(log_p_negatives) - tf.reduce_mean(log_p_data)


def nce_loss(log_phi_data, log_pn_data, log_phi_noise, log_pn_noise, c, nu):
    """The NCE loss and its classification accuracy, in log space.

        G(u) = log phi(u) + c - log p_n(u) - log nu,
        J    = -E_data[log sigmoid(G(x))] - nu E_noise[log sigmoid(-G(y))]
             =  E_data[softplus(-G(x))]   + nu E_noise[softplus(G(y))].

    -log sigmoid(z) = softplus(-z) = max(-z, 0) + log(1 + exp(-|z|)) is finite for every finite z, so
    J stays finite when phi or p_n underflow (x far from mu): only their logs are ever formed.

    Returns:
      (J, data term, noise term, accuracy); accuracy weights the noise samples by nu, as the
      classifier's prior P(noise) = nu / (1 + nu) does.
    """
    log_nu = tf.math.log(tf.cast(nu, log_phi_data.dtype))
    g_data = log_phi_data + c - log_pn_data - log_nu
    g_noise = log_phi_noise + c - log_pn_noise - log_nu
    data_term = tf.reduce_mean(tf.math.softplus(-g_data))
    noise_term = nu * tf.reduce_mean(tf.math.softplus(g_noise))
    accuracy = (tf.reduce_mean(tf.cast(g_data > 0, g_data.dtype))
                + nu * tf.reduce_mean(tf.cast(g_noise < 0, g_data.dtype))) / (1.0 + nu)
    return data_term + noise_term, data_term, noise_term, accuracy


def cnce_loss(log_phi_data, log_phi_noise):
    """The cNCE loss for symmetric conditional noise, and the fraction of pairs ranked correctly.

        G(x, y) = log phi(x) - log phi(y),
        J       = 2 / kappa sum_k E_x[ log(1 + exp(-G(x, y_k))) ] = 2 E_{x, k}[ softplus(-G(x, y_k)) ].

    log Z cancels in G, so the model needs no c. softplus(-G) is finite for every finite G, so J stays
    finite when phi(x) or phi(y) underflow.

    Args:
      log_phi_data: [B] log phi(x).
      log_phi_noise: [kappa, B] log phi(y_k) for the noise y_k = x + epsilon u_k paired with x.
    """
    g = log_phi_data[None, :] - log_phi_noise
    return 2.0 * tf.reduce_mean(tf.math.softplus(-g)), tf.reduce_mean(tf.cast(g > 0, g.dtype))


def score_matching_loss(residual_scores, trace):
    """Hyvarinen's score-matching loss from the scores and the trace of Lambda.

        J(Lambda) = E[ ||grad_x log p(x)||^2 / 2 + laplacian_x log p(x) ]
                  = E[ ||Lambda (x - mu)||^2 / 2 ] - tr(Lambda),

    Args:
      residual_scores: [B, D], Lambda (x - mu) (minus the score).
      trace: tr(Lambda).

    Returns:
      (J, the squared-score term, the Laplacian term -tr(Lambda)).
    """
    squared = 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(residual_scores), axis=-1))
    return squared - trace, squared, -trace
