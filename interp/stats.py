"""Bootstrap confidence intervals over prompts (percentile method), vectorised over result cells.

A result with per-prompt values ``[n_prompts, *cells]`` (say, a patching sweep over layers and
positions) gets one interval per cell from the same resamples of prompts, so cells stay comparable.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "CI", "OnePromptWarning", "SMALL_SAMPLE", "SmallSampleWarning", "bootstrap_ci",
    "paired_difference_ci",
]  # fmt: skip

# Below this many prompts the percentile bootstrap under-covers (docs/methods.md: nominal 95%
# covered 87.5% of normal and 84% of exponential means at n = 8, 93% and 90% at n = 16).
SMALL_SAMPLE = 20


class OnePromptWarning(UserWarning):
    """An interval over a single prompt: every resample is that prompt, so low = high."""


_SHOWN: dict = {}  # warnings registry of the small-sample warning


class SmallSampleWarning(UserWarning):
    """A percentile bootstrap interval over fewer than ``SMALL_SAMPLE`` prompts: too narrow."""


class CI(NamedTuple):
    estimate: Tensor  # the statistic on the full sample, [*cells]
    low: Tensor  # lower bound, [*cells]
    high: Tensor  # upper bound, [*cells]
    level: float
    n: int  # prompts


def bootstrap_ci(
    values: Float[Tensor, "n ..."],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> CI:
    """Percentile bootstrap interval of the mean over the first axis (prompts).

    Each resample draws n prompts with replacement (seeded) and takes the mean of every cell.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    values = torch.as_tensor(values)
    if values.ndim == 0 or values.shape[0] < 1:
        raise ValueError("bootstrap_ci needs at least one value along the first (prompt) axis")
    if not torch.isfinite(values).all():
        raise ValueError("bootstrap_ci got non-finite values; check the metric")
    x = values.double()
    n = x.shape[0]
    if n == 1:
        warnings.warn(
            "a confidence interval over one prompt is degenerate (low = high = the value): it "
            "shows no uncertainty because none can be measured; use several prompts",
            OnePromptWarning,
            stacklevel=2,
        )
    elif n < SMALL_SAMPLE:
        # Named by module, not by file: a notebook stores it without a machine path, and the
        # registry shows it once per number of prompts (Jupyter resets it with each cell).
        warnings.warn_explicit(
            f"a percentile bootstrap interval over {n} prompts is too narrow (nominal 95% covered "
            "87.5% of means at n = 8 and 93% at n = 16 for normal values, less for skewed ones; "
            "docs/methods.md); use 20 or more prompts, or a result's family() / top(), whose "
            "sign-flip t intervals covered 97% at n = 8",
            SmallSampleWarning,
            "interp/stats.py",
            0,
            module="interp.stats",
            registry=_SHOWN,
        )
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=gen)
    flat = x.reshape(n, -1)
    means = _resample_means(flat, idx)  # [n_resamples, cells]
    alpha = (1 - level) / 2
    q = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=means.dtype), dim=0)
    shape = x.shape[1:]
    return CI(flat.mean(0).reshape(shape), q[0].reshape(shape), q[1].reshape(shape), level, n)


def _resample_means(flat: Tensor, idx: Tensor, chunk_elems: int = 1 << 24) -> Tensor:
    """Means of ``flat[idx[r]]`` for every resample r, in chunks that bound memory."""
    n_res, n = idx.shape
    per = max(1, chunk_elems // max(1, n * flat.shape[1]))
    return torch.cat([flat[idx[r : r + per]].mean(1) for r in range(0, n_res, per)])


def paired_difference_ci(
    a: Float[Tensor, "n ..."], b: Float[Tensor, "n ..."], **kwargs: float | int
) -> CI:
    """Interval of mean(a − b) with prompts resampled in pairs (the same prompts on both sides)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired values must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return bootstrap_ci(a - b, **kwargs)  # type: ignore[arg-type]
