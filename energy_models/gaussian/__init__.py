"""The grid Gaussian p(x) = N(x; mu, Lambda^-1), Lambda on a pixel grid's pattern.

The model (`model.GridGaussian`, a Keras model around the `layer.GridPrecision` layer) and its estimators
by name (`fits.ESTIMATORS`): exact maximum likelihood (`mle`, dense Newton; `mle_newton_cg`, block
tridiagonal Newton-CG for large images), NCE (`nce`; adaptive noise in `nce_rounds`), conditional NCE
(`cnce`) and score matching (`score_matching`), the stochastic ones trained by `model.fit` (`trainable`,
`trainer`) under a positive-definiteness guard (`pd_guard`). The exact optima the trainers are measured
against: `nce_optimum`, `cnce_optimum`, `sm_optimum`. Also the Gaussian fitted to patches that the deep
energy model starts from (`fitted`) and the SavedModel of a fitted Gaussian (`export`).
"""
