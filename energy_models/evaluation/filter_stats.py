"""What the rows of a filter matrix have learnt: localisation and sparseness of their responses.

For a row v [D] (a filter in ZCA-whitened space) and whitened patches u_n [D]:

    localisation(v) = sum of the largest ceil(f D) of v_i^2 / sum_i v_i^2       (f = 0.1: 79 of 784 pixels)
    kurtosis(v)     = E[(r - E r)^4] / Var(r)^2 - 3,   r_n = v^T u_n           (excess kurtosis)

A random Gaussian row has localisation about 0.44 at D = 784 (the share of E[z^2] above the 90th
percentile of z^2, z ~ N(0, 1): 2 (1.645 phi(1.645) + 0.05) = 0.439) and,
on whitened natural patches, the kurtosis of a random projection (a few units: the patches' contrast
varies); localised, oriented edge filters (ICA's, a trained sparse model's) reach 0.7-0.9 and responses
an order of magnitude more kurtotic. The medians over rows summarise a filter bank, and `random_baseline`
gives the same statistics for random rows so a trained bank can be reported as a ratio.
"""

import math

import numpy as np


def localisation(rows, fraction=0.1):
    """Fraction of each row's squared weight in its largest ceil(fraction * D) entries: [m] in (0, 1]."""
    rows = np.atleast_2d(np.asarray(rows, np.float64))
    top = max(1, math.ceil(fraction * rows.shape[1]))
    squares = np.sort(rows ** 2, axis=1)[:, ::-1]
    total = squares.sum(axis=1)
    return squares[:, :top].sum(axis=1) / np.where(total > 0, total, 1.0)


def response_kurtosis(rows, u):
    """Excess kurtosis of each row's responses r = u v over the patches u [n, D]: [m]."""
    r = np.asarray(u, np.float64) @ np.atleast_2d(np.asarray(rows, np.float64)).T
    r = r - r.mean(axis=0)
    variance = np.mean(r ** 2, axis=0)
    return np.mean(r ** 4, axis=0) / np.where(variance > 0, variance, 1.0) ** 2 - 3.0


def random_baseline(num_rows, u, seed=0):
    """Median localisation and response kurtosis of `num_rows` standard Gaussian rows on patches u."""
    rows = np.random.default_rng(seed).standard_normal((num_rows, np.shape(u)[1]))
    return float(np.median(localisation(rows))), float(np.median(response_kurtosis(rows, u)))


def summary(rows, u, seed=0):
    """Medians of the rows' localisation and kurtosis on u, the random rows' and the kurtosis ratio."""
    random_localisation, random_kurtosis = random_baseline(len(rows), u, seed)
    kurtosis = float(np.median(response_kurtosis(rows, u)))
    return {"filter_localisation": float(np.median(localisation(rows))),
            "filter_kurtosis": kurtosis,
            "random_localisation": random_localisation,
            "random_kurtosis": random_kurtosis,
            "kurtosis_ratio": kurtosis / random_kurtosis if random_kurtosis > 0 else float("nan")}
