"""Statistics for accuracy tables: exact binomial intervals and paired tests (scipy).

- `clopper_pearson(k, n)`: the exact (conservative) 95% interval of a binomial proportion.
- `mcnemar_exact(b, c)`: the exact McNemar test of paired outcomes, i.e. a two-sided binomial test of the
  b discordant pairs out of b + c against p = 1/2.
- `paired_comparisons`: for every pair of models evaluated on the same examples, the discordant counts, the
  accuracy difference and the McNemar p-value.
- `t_interval(values)`: mean +- t-quantile x standard error over independent draws (random deformations,
  training seeds).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for k successes out of n (NaN, NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    alpha = 1.0 - level
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean +- t-quantile * standard error over independent draws, clipped to [0, 1] (NaNs for fewer than 2)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * se
    return max(0.0, m - h), min(1.0, m + h)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b (A right, B wrong) and c (A wrong, B right) discordant pairs."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def paired_comparisons(correct: dict[str, np.ndarray], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Pairwise comparisons of per-example correctness vectors over the same examples.

    Args:
        correct: model label -> boolean array (n,), True where the model is (still) right.
        keys: order of the models (default: dict order).

    Returns:
        One row per pair (a, b): n, correct_a, correct_b, a_only (b in McNemar), b_only (c), accuracy
        difference a - b, and the exact McNemar p-value.
    """
    keys = list(keys or correct)
    rows = []
    for a, b in itertools.combinations(keys, 2):
        ca, cb = np.asarray(correct[a], bool), np.asarray(correct[b], bool)
        if ca.shape != cb.shape:
            raise ValueError(f"paired comparison needs the same examples: {a} has {ca.size}, {b} has {cb.size}")
        n = int(ca.size)
        a_only, b_only = int((ca & ~cb).sum()), int((~ca & cb).sum())
        rows.append({
            "model_a": a, "model_b": b, "n": n, "correct_a": int(ca.sum()), "correct_b": int(cb.sum()),
            "a_only": a_only, "b_only": b_only,
            "accuracy_diff": (int(ca.sum()) - int(cb.sum())) / n if n else math.nan,
            "mcnemar_p": mcnemar_exact(a_only, b_only),
        })
    return pd.DataFrame(rows)
