"""Summaries of log-density scores: AUROC between two sets and per-set mean and spread."""

import numpy as np


def auroc(positive, negative):
    """Area under the ROC curve of telling `positive` scores (higher) from `negative` ones.

        AUROC = P(s+ > s-) + P(s+ = s-) / 2,

    computed from ranks (the Mann-Whitney U statistic) in O(n log n), ties counted half. Non-finite
    scores rank lowest (a NaN log density is no evidence for the positive set).
    """
    import scipy.stats

    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    positive = np.where(np.isfinite(positive), positive, -np.inf)
    negative = np.where(np.isfinite(negative), negative, -np.inf)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(np.concatenate([positive, negative]))
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2.0
    return float(u / (len(positive) * len(negative)))


def summarise(scores):
    """Table rows: set, n, mean and std of log p, and AUROC of each set against the first set."""
    names = list(scores)
    first = scores[names[0]] if names else None
    rows = []
    for name in names:
        s = scores[name]
        rows.append({"set": name, "n": int(len(s)), "mean": float(np.mean(s)), "std": float(np.std(s)),
                     "auroc_vs_first": None if name == names[0] else auroc(first, s)})
    return rows
