"""pass@k: the unbiased estimator of Chen et al. (2021) and a bootstrap confidence interval over problems.

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that at least one
of k samples drawn without replacement passes. It is computed as a running product (no huge binomials) and
is only defined where n >= k; `pass_at_k` reports a k only when every problem has at least k samples.

The interval is a percentile bootstrap over problems: resample the problems with replacement, take the mean
of their per-problem estimates, repeat, read off the quantiles. It measures how much the score depends on
which problems the benchmark happens to contain (the dominant uncertainty with 164 problems), not the
sampling noise within a problem.
"""

from __future__ import annotations

import numpy as np


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples, `c` correct (requires n >= k)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_interval(values: list[float] | np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per problem)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def pass_at_k(counts: dict[str, tuple[int, int]], ks: list[int], confidence: float = 0.95) -> dict[str, dict]:
    """{f"pass@{k}": {"value", "ci_low", "ci_high", "problems"}} for each k that every problem's n allows.

    `counts` maps task_id -> (n samples, c correct).
    """
    if not counts:
        return {}
    min_n = min(n for n, _ in counts.values())
    out = {}
    for k in sorted(set(ks)):
        if k > min_n:
            continue
        per_problem = [estimate_pass_at_k(n, c, k) for n, c in counts.values()]
        low, high = bootstrap_interval(per_problem, confidence)
        out[f"pass@{k}"] = {"value": float(np.mean(per_problem)), "ci_low": low, "ci_high": high,
                            "confidence": confidence, "problems": len(per_problem)}
    return out
