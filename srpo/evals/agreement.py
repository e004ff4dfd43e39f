"""Agreement between two raters (a judge and humans, or two judges), with seeded percentile bootstrap intervals.

Every function takes parallel sequences of labels (any hashable values) and ignores a pair where either side is None
(not labelled, or no prediction): callers count those themselves. A statistic that is undefined on its data (no
positives for precision, one class only for kappa) is None, never 0 or NaN. Pure Python, no numpy.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence


def scored_pairs(gold: Sequence, pred: Sequence) -> list[tuple]:
    """The (gold, pred) pairs where both sides are known."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and predicted labels must be parallel; got {len(gold)} and {len(pred)}")
    return [(g, p) for g, p in zip(gold, pred, strict=True) if g is not None and p is not None]


def agreement(gold: Sequence, pred: Sequence) -> float | None:
    """Fraction of the scored pairs on which the two raters give the same label."""
    pairs = scored_pairs(gold, pred)
    return sum(g == p for g, p in pairs) / len(pairs) if pairs else None


def confusion(gold: Sequence, pred: Sequence) -> Counter:
    """Counter of (gold, pred) over the scored pairs."""
    return Counter(scored_pairs(gold, pred))


def precision_recall_f1(gold: Sequence, pred: Sequence, positive=True) -> tuple[float | None, float | None,
                                                                              float | None]:
    """Precision, recall and F1 of `positive`. F1 = 2TP / (2TP + FP + FN), which is 0 (not undefined) when there are
    positives but none found; each is None when its denominator is 0."""
    tp = fp = fn = 0
    for g, p in scored_pairs(gold, pred):
        tp += g == positive and p == positive
        fp += g != positive and p == positive
        fn += g == positive and p != positive
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return precision, recall, f1


def cohen_kappa(gold: Sequence, pred: Sequence) -> float | None:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e) with p_e from the two raters' marginals (Cohen 1960). None when chance
    agreement is 1 (both raters give one and the same label throughout) or there is nothing to compare."""
    pairs = scored_pairs(gold, pred)
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(g == p for g, p in pairs) / n
    gold_counts, pred_counts = Counter(g for g, _ in pairs), Counter(p for _, p in pairs)
    expected = sum(gold_counts[k] * pred_counts[k] for k in gold_counts) / (n * n)
    return None if expected >= 1 else (observed - expected) / (1 - expected)


def bootstrap_intervals(rows: Sequence, statistics: dict[str, Callable[[list], float | None]], n_resamples: int,
                        seed: int, level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of several statistics of `rows`, all on the same resamples (rows drawn with
    replacement, the same number as there are). A resample on which a statistic is undefined (None) is left out of
    that statistic's interval; a statistic with no defined resample, or no rows, gets None. Same seed, same figures."""
    if not rows or n_resamples <= 0:
        return {name: None for name in statistics}
    rng = random.Random(seed)
    rows = list(rows)
    values: dict[str, list[float]] = {name: [] for name in statistics}
    for _ in range(n_resamples):
        sample = rng.choices(rows, k=len(rows))
        for name, stat in statistics.items():
            v = stat(sample)
            if v is not None:
                values[name].append(v)
    return {name: percentile_interval(vals, level) for name, vals in values.items()}


def bootstrap_interval(rows: Sequence, statistic: Callable[[list], float | None], n_resamples: int, seed: int,
                       level: float = 0.95) -> list[float] | None:
    """The percentile bootstrap interval of one statistic of `rows` (see bootstrap_intervals)."""
    return bootstrap_intervals(rows, {"s": statistic}, n_resamples, seed, level)["s"]


def percentile_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """[lo, hi] at the (1 - level) / 2 and (1 + level) / 2 order statistics of `values` (as srpo.evals.scoring)."""
    if not values:
        return None
    vals = sorted(values)
    m = len(vals)
    lo, hi = int((1 - level) / 2 * m), min(m - 1, int((1 + level) / 2 * m))
    return [round(vals[lo], 6), round(vals[hi], 6)]
