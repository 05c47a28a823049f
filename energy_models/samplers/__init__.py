"""MCMC samplers: block Gibbs sweeps of the deep energy model (latents exactly; pixels by Langevin or
MALA, tfp.mcmc's moves written out to take pre-drawn noise, or by tfp.mcmc's HMC)."""
