"""Estimators of the grid Gaussian: exact maximum likelihood (and NCE, cNCE, score matching)."""
