"""Estimators: for the grid Gaussian exact maximum likelihood (`mle`), NCE (`nce`, with adaptive-noise
rounds in `nce_rounds`), conditional NCE (`cnce`) and score matching (`score_matching`), with the exact
optima the trainers are measured against (`nce_exact`, `cnce_exact`, `score_matching`); for the deep
energy model contrastive divergence and NCE."""
