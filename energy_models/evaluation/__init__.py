"""Evaluating energy models: log Z by annealed importance sampling (`ais`), modes by maximising log p
(`modes`), MCMC diagnostics R-hat and ESS (`mcmc_health`), AUROC and score summaries (`metrics`), and the
localisation and response kurtosis of filters (`filter_stats`)."""
