"""MCMC health: split R-hat and ESS against known answers, importance ESS against its closed form, the
warning line, and the TensorBoard scalars of a train.dem run."""

import numpy as np
import pytest

from energy_models.dem.contrastive_divergence import ContrastiveDivergence
from energy_models.dem.energy import DEMEnergy
from energy_models.evaluation import mcmc_health


def test_rhat_and_ess_of_independent_draws_and_of_stuck_chains():
    rng = np.random.default_rng(0)
    iid = mcmc_health.chain_diagnostics(rng.standard_normal((200, 8, 3)))
    np.testing.assert_allclose(iid["rhat"], 1.0, atol=0.02)
    assert iid["mixed"] and 1000 < iid["ess_min"] < 2400  # 1,600 independent draws (tfp estimates 1,158)
    # Each chain stuck near its own start: the between-chain variance dominates.
    stuck = rng.standard_normal((200, 8, 3)) * 0.1 + np.arange(8)[None, :, None]
    bad = mcmc_health.chain_diagnostics(stuck)
    assert not bad["mixed"] and bad["rhat_max"] > 5 and bad["ess_min"] < 50


def test_ess_of_an_ar1_chain_matches_n_times_1_minus_rho_over_1_plus_rho():
    rho, n, m = 0.8, 4000, 4
    rng = np.random.default_rng(1)
    x = np.zeros((n, m, 1))
    x[0] = rng.standard_normal((m, 1)) / np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + rng.standard_normal((m, 1))
    ess = mcmc_health.chain_diagnostics(x)["ess_min"]
    assert ess == pytest.approx(n * m * (1 - rho) / (1 + rho), rel=0.15)


def test_importance_ess_closed_form():
    assert mcmc_health.importance_ess(np.zeros(10)) == pytest.approx(10.0)
    assert mcmc_health.importance_ess([0.0, -1e4, -1e4]) == pytest.approx(1.0)
    w = np.array([1.0, 2.0, 3.0])
    assert mcmc_health.importance_ess(np.log(w) + 900.0) == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert mcmc_health.importance_ess([np.nan, -np.inf]) == 0.0


def test_warning_line_only_above_the_threshold():
    assert mcmc_health.not_mixed_line("x", 1.05, 300) is None
    line = mcmc_health.not_mixed_line("samples of the trained model", 1.31, 12)
    assert line.startswith("warning: samples of the trained model: MCMC chains have not mixed")
    assert "1.310 > 1.1" in line and "ESS 12" in line and "\n" not in line


@pytest.mark.parametrize("eta, mixed", [(0.3, True), (1e-6, False)])
def test_traced_chains_of_a_known_gaussian(eta, mixed):
    # V = 0: the model is N(sigma^2 b, sigma^2 I) exactly; MALA at eta 0.3 mixes from starts 3 sd away,
    # at eta 1e-6 the chains stay at their starts.
    energy = DEMEnergy(6, 5, 1.0)
    model = ContrastiveDivergence(energy, dim=16, mcmc="mala", step_size=eta, seed=3)
    energy.V.assign(np.zeros((6, 16)))
    start = np.random.default_rng(0).standard_normal((64, 16)) * 3
    trace, u = mcmc_health.trace_chains(model, start, seed=1)
    assert trace.shape == (mcmc_health.TRACE_LENGTH, 64, 1 + mcmc_health.NUM_PROJECTIONS)
    np.testing.assert_allclose(trace[-1, :, 0], energy(u).numpy(), rtol=1e-5)  # the energy is log p~
    diagnostics = mcmc_health.chain_diagnostics(trace)
    assert diagnostics["mixed"] is mixed
    if mixed:
        # Projections of N(0, I) on unit directions have variance 1.
        np.testing.assert_allclose(trace[:, :, 1:].var(axis=(0, 1)), 1.0, atol=0.15)
