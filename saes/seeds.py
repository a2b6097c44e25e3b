"""Seed statistics: per-seed values summarised as mean ± a t interval, the minimum detectable
difference, and Welch's comparison of two configurations (formulas in :mod:`saes.sweep`).
Shared by ``python -m saes.sweep``, the synthetic benchmark and the offline metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Comparison", "SeedSummary", "SweepError", "compare", "summarize"]


class SweepError(ValueError):
    """A sweep that cannot give what it was asked for (an interval over one seed, say)."""


class SeedSummary(NamedTuple):
    """A metric over seeds: mean, sample SD, t interval and the minimum detectable difference."""

    mean: float
    sd: float
    n: int
    low: float
    high: float
    mdd: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {(self.high - self.low) / 2:.2g}"


class Comparison(NamedTuple):
    """Welch's two-sample comparison of a − b."""

    diff: float
    low: float
    high: float
    t: float
    df: float
    p: float

    @property
    def exceeds_noise(self) -> bool:
        """The interval of the difference excludes 0."""
        return self.low > 0 or self.high < 0


def _values(values: Sequence[float], what: str) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise SweepError(
            f"an interval over seeds needs at least 2 seeds; {what} has {len(vals)}: run "
            "--seeds 3 or more (or --no-interval to report a single run)"
        )
    if not all(math.isfinite(v) for v in vals):
        raise SweepError(f"{what} has non-finite values {vals}: a run diverged")
    return vals


def summarize(
    values: Sequence[float], *, level: float = 0.95, alpha: float = 0.05, power: float = 0.8
) -> SeedSummary:
    """Mean ± t interval of per-seed values, and the MDD at (alpha, power) for n seeds per arm.

    >>> s = summarize([1.0, 2.0, 3.0])
    >>> round(s.low, 3), round(s.high, 3), round(s.mdd, 2)
    (-0.484, 4.484, 3.04)
    """
    from scipy import stats

    vals = _values(values, "this metric")
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n)
    df2 = 2 * n - 2
    mdd = (float(stats.t.ppf(1 - alpha / 2, df2)) + float(stats.t.ppf(power, df2))) * sd
    return SeedSummary(mean, sd, n, mean - half, mean + half, mdd * math.sqrt(2 / n))


def compare(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Comparison:
    """Welch's t test and interval of mean(a) − mean(b).

    >>> c = compare([1.0, 1.1, 0.9], [0.0, 0.1, -0.1])
    >>> round(c.diff, 3), c.exceeds_noise
    (1.0, True)
    """
    from scipy import stats

    xa, xb = _values(a, "the first configuration"), _values(b, "the second configuration")
    sa, sb = summarize(xa), summarize(xb)
    va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
    se = math.sqrt(va + vb)
    diff = sa.mean - sb.mean
    if se == 0:
        same = diff == 0
        return Comparison(
            diff, diff, diff, 0.0 if same else math.inf, math.inf, 1.0 if same else 0.0
        )
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    t = diff / se
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * se
    return Comparison(diff, diff - half, diff + half, t, df, float(2 * stats.t.sf(abs(t), df)))
