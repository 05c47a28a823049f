"""AIS recovers known log normalisers; its standard error covers the error; forward <= reverse."""

import numpy as np
import pytest
import tensorflow as tf

from energy_models.evaluation import ais
from energy_models.evaluation.mcmc_health import RHAT_THRESHOLD


def test_forward_and_reverse_ais_on_a_gaussian_with_known_log_z():
    mu, cov, target, rng = _gaussian_30d()
    d = len(mu)
    true = 0.5 * d * np.log(2 * np.pi) + 0.5 * np.linalg.slogdet(cov)[1]
    # A base that differs from the target: isotropic, with the target's average variance.
    base = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d))
    fwd = ais.forward_ais(target, base, num_steps=300, num_chains=128, step_size=0.02, seed=(1, 2))
    exact = rng.multivariate_normal(mu, cov, size=128)
    rev = ais.reverse_ais(target, base, exact, num_steps=300, step_size=0.02, seed=(3, 4))
    assert abs(fwd.log_z - true) < 3 * fwd.stderr + 0.05, (fwd.log_z, fwd.stderr, true)
    assert abs(rev.log_z - true) < 3 * rev.stderr + 0.05, (rev.log_z, rev.stderr, true)
    assert 0.3 < fwd.acceptance <= 1.0


def _gaussian_30d():
    """(mu, covariance, unnormalised log density, the generator that drew them) of a 30-D Gaussian."""
    rng = np.random.default_rng(0)
    d = 30
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = 0.05 * a @ a.T + 0.01 * np.eye(d)
    prec = np.linalg.inv(cov).astype(np.float32)
    mu = rng.uniform(0, 1, d).astype(np.float32)

    def target(x):
        centred = x - mu
        return -0.5 * tf.reduce_sum(centred * tf.matmul(centred, prec), -1)

    return mu, cov, target, rng


def test_split_rhat_of_the_ais_chains_passes_mixed_chains_and_flags_chains_split_between_modes():
    mu, cov, target, _ = _gaussian_30d()
    d = len(mu)
    base = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d))
    untraced = ais.forward_ais(target, base, num_steps=300, num_chains=64, step_size=0.02, seed=(1, 2))
    assert np.isnan(untraced.rhat_max) and np.isnan(untraced.chain_ess_min)
    mixed = ais.forward_ais(target, base, num_steps=300, num_chains=64, step_size=0.02, seed=(1, 2), trace=True)
    assert mixed.log_z == untraced.log_z  # the trace runs after the estimate, which it leaves alone
    assert mixed.rhat_max <= RHAT_THRESHOLD and mixed.chain_ess_min > 64, mixed
    # Exact draws as the chains' end states: the continuation itself passes (measured at most 1.04).
    exact = np.random.default_rng(3).multivariate_normal(mu, cov, size=64).astype(np.float32)
    health = ais.final_chain_diagnostics(target, tf.constant(exact), base, (4, 5))
    assert health["rhat_max"] <= RHAT_THRESHOLD, health
    # Two equal modes 4 units (40 of the smallest standard deviations) apart: the chains end in either one
    # and cannot cross, so they disagree (measured 2.8 to 17.5).
    prec = tf.constant(np.linalg.inv(cov), tf.float32)
    shift = np.r_[2.0, np.zeros(d - 1)].astype(np.float32)

    def two_modes(x):
        return tf.reduce_logsumexp(tf.stack([-0.5 * tf.reduce_sum(c * tf.matmul(c, prec), -1)
                                             for c in (x - mu - shift, x - mu + shift)]), 0)

    wide = ais.base_gaussian(mu, np.trace(cov) / d * np.eye(d) + np.diag(np.r_[4.0, np.zeros(d - 1)]))
    split = ais.forward_ais(two_modes, wide, num_steps=300, num_chains=64, step_size=0.02, seed=(1, 2), trace=True)
    assert split.rhat_max > 1.5, split


def test_forward_ais_on_a_non_gaussian_2d_energy_against_numerical_integration():
    def energy(x):
        return -0.25 * tf.reduce_sum(x ** 2, -1) ** 2 + x[..., 0] + 0.5 * tf.sin(3.0 * x[..., 1])

    grid = np.linspace(-6, 6, 1201)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    values = energy(tf.constant(np.stack([xx, yy], -1).reshape(-1, 2))).numpy()
    h = grid[1] - grid[0]
    true = np.log(np.sum(np.exp(values)) * h * h)  # Riemann sum: the integrand is smooth and ~0 at |x|=6.
    base = ais.base_gaussian(np.zeros(2), np.eye(2))
    est = ais.forward_ais(energy, base, num_steps=200, num_chains=512, step_size=0.3, seed=(5, 6))
    assert abs(est.log_z - true) < 3 * est.stderr + 0.02, (est.log_z, est.stderr, true)
    assert est.stderr < 0.05


def test_log_mean_exp_is_stable_for_huge_weights():
    log_z, stderr = ais._log_mean_exp_and_stderr(np.array([1e4, 1e4, 1e4 + np.log(4.0)]))
    assert log_z == pytest.approx(1e4 + np.log(2.0))
    assert np.isfinite(stderr)


def test_ais_recovers_log_z_of_a_deep_energy_model_with_v_zero(tmp_path, capsys):
    """V = 0 makes g(x) = 1/2, so the DEM is N(sigma^2 b, sigma^2 I) with an analytic log Z; the AIS base
    is a different Gaussian, so the annealing has real work to do."""
    import json

    from energy_models import savedmodel
    from energy_models.dem.contrastive_divergence import ContrastiveDivergence
    from energy_models.dem.energy import DEMEnergy
    from energy_models.dem.export import DEMModule
    from energy_models.gaussian import export
    from energy_models.gaussian.model import GridGaussian
    from train import _cli
    from train import score as score_cli

    d, sigma, rng = 784, 0.1, np.random.default_rng(0)
    energy = DEMEnergy(8, 6, sigma)
    model = ContrastiveDivergence(energy, dim=d, mcmc="mala", mcmc_steps=1, step_size=1e-3, seed=0)
    energy.V.assign(np.zeros((8, d)))
    w, c = rng.normal(size=(6, 8)), rng.normal(size=6)
    b = rng.uniform(30, 70, size=d)  # Mean sigma^2 b in [0.3, 0.7], like pixels.
    energy.W.assign(w.astype(np.float32))
    energy.c.assign(c.astype(np.float32))
    energy.b.assign(b.astype(np.float32))
    b = np.asarray(energy.b, np.float64)
    constant = np.sum(np.logaddexp(0.0, 0.5 * np.asarray(energy.W, np.float64).sum(1)
                                   + np.asarray(energy.c, np.float64)))
    true = d / 2 * np.log(2 * np.pi * sigma ** 2) + sigma ** 2 * np.sum(b ** 2) / 2 + constant
    dem_dir = savedmodel.save_atomically(
        DEMModule(model, sigma ** 2 * b, sigma * np.eye(d), {"name": "v0"}, sample_sweeps=2), tmp_path / "dem")
    # The base: the right mean but twice the variance (KL ~ 120 nats), exported like any project Gaussian.
    base = GridGaussian(28, 28, 4, diagonal_init=50.0)
    base.set_mean(sigma ** 2 * b)
    base_dir = savedmodel.save_atomically(export.gaussian_module(base, {}), tmp_path / "base")
    code = _cli.run_main(score_cli.main, [
        "--model", dem_dir, "--ais-steps", "300", "--ais-chains", "32", "--ais-step-size", "0.005",
        "--gaussian-samples", base_dir, "--json", str(tmp_path / "a.json"), "--figures-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    entry = json.loads((tmp_path / "a.json").read_text())["models"][0]
    a = entry["ais"]
    assert abs(a["log_z_forward"] - true) < 3 * a["stderr_forward"] + 0.5, (a, true)
    # Reverse AIS from exact samples is a stochastic upper bound: the sandwich holds, and is narrow.
    assert a["log_z_reverse"] + 3 * a["stderr_reverse"] >= true >= a["log_z_forward"] - 3 * a["stderr_forward"]
    assert a["log_z_reverse"] - true < 3.0, (a, true)
    # Kish's ESS of the weights is printed beside the standard error, and lies in [1, chains].
    assert 1.0 <= a["ess_forward"] <= 32.0 and 1.0 <= a["ess_reverse"] <= 32.0
    assert f"(ESS {a['ess_forward']:.1f})" in out
    # The chains' own health after the last temperature is printed, with the warning above 1.1.
    assert 0.9 <= a["rhat_forward"] < 1.5 and a["chain_ess_forward"] > 32, a
    assert f"split R-hat {a['rhat_forward']:.3f}" in out
    assert ("warning: forward AIS: MCMC chains have not mixed" in out) == (a["rhat_forward"] > RHAT_THRESHOLD)
    # A log Z is stored only when forward and reverse agree within 1 nat (train.score's rule).
    agree = abs(a["log_z_forward"] - a["log_z_reverse"]) <= 1.0
    assert bool(entry["normalised"]) == agree
    if agree:
        assert entry["info"]["log_z_source"] == "forward AIS"
