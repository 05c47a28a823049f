"""MCMC samplers: block Gibbs sweeps of the deep energy model (latents exactly, pixels by tfp.mcmc)."""
