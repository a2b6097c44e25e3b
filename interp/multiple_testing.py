"""Inference over many cells at once: which cells of a sweep differ from "no effect", with error
rates that still hold after every cell has been looked at.

A sweep of 30 layers x 9 positions tests 270 hypotheses; at a per-cell 5% level about 13 cells of
a sweep with no effect anywhere look significant, and the largest always does. The methods here
take the per-prompt effects ``[n_prompts, *cells]`` (a cell's value minus its no-effect baseline,
prompt by prompt) and control the error over the whole family:

- ``"maxt"`` (default): the max-statistic sign-flip test (Westfall & Young 1993; Nichols & Holmes
  2002). Under "no effect" a prompt's effect is as likely to have either sign, so flipping the
  signs of whole prompts (all cells of a prompt together, which keeps the dependence between
  cells) gives the null distribution of the largest |t| over the family. Adjusted p-values
  control the family-wise error rate (FWER) in the strong sense; the same flips of the centred
  effects give simultaneous intervals: all cells' intervals cover their true means together with
  probability 1 - alpha, so an interval stays honest whichever cell is picked from the family.
- ``"holm"``: Holm's step-down FWER adjustment of the per-cell sign-flip p-values.
- ``"bh"``: Benjamini-Hochberg's false-discovery-rate adjustment of the same p-values.
  Holm and BH adjust p-values only; they do not give simultaneous intervals (``low``/``high``
  are None), and BH controls the expected fraction of false discoveries, not the chance of any.

With ``2**n_prompts <= n_flips`` every sign vector is enumerated (an exact test); otherwise
``n_flips`` random ones are drawn (seeded), the identity among them, so no p-value is below
``1 / n_flips``.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> effects = torch.randn(16, 30, 9, generator=g)  # no effect anywhere
>>> effects[:, 4, 2] += 2.0  # except in one cell
>>> fam = family_test(effects)
>>> fam.significant.nonzero().tolist()
[[4, 2]]
>>> bool((fam.low <= 0).logical_and(fam.high >= 0).flatten().sum() == 269)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp.validate import check_choice, check_int

__all__ = ["METHODS", "FamilyTest", "adjust_p", "family_test", "split_samples"]

METHODS = ("maxt", "holm", "bh")
_WHAT = {
    "maxt": "max-statistic sign-flip test (FWER)",
    "holm": "Holm step-down (FWER)",
    "bh": "Benjamini-Hochberg (FDR)",
}


@dataclass(frozen=True)
class FamilyTest:
    """Family-wise inference over the cells of a result (shapes are ``[*cells]``)."""

    method: str
    alpha: float
    estimate: Tensor  # mean effect per cell
    low: Tensor | None  # simultaneous (1 - alpha) interval of the mean effect ("maxt" only)
    high: Tensor | None
    p_raw: Tensor  # per-cell sign-flip p-value (two-sided), unadjusted
    p_adjusted: Tensor
    significant: Tensor  # bool: p_adjusted <= alpha
    n: int  # prompts
    n_cells: int
    n_flips: int
    exact: bool  # every sign vector enumerated

    def describe(self) -> str:
        how = "all" if self.exact else "random"
        return (
            f"{_WHAT[self.method]} over {self.n_cells} cells, {self.n} prompts, "
            f"{self.n_flips} {how} sign flips, alpha {self.alpha:g}"
        )


def family_test(
    effects: Tensor,
    *,
    alpha: float = 0.05,
    method: str = "maxt",
    n_flips: int = 10000,
    seed: int = 0,
) -> FamilyTest:
    """Test every cell of ``effects`` ``[n_prompts, *cells]`` against a zero mean, controlling the
    error over all cells (see the module docstring for the methods)."""
    check_choice(method, METHODS, "method")
    check_int(n_flips, "n_flips", minimum=1)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    effects = torch.as_tensor(effects)
    if effects.ndim < 1 or effects.shape[0] < 2:
        raise ValueError(
            f"a sign-flip test needs per-prompt effects [n_prompts >= 2, *cells]; got shape "
            f"{tuple(effects.shape)}"
        )
    if not torch.isfinite(effects).all():
        raise ValueError("family_test got non-finite effects; check the metric")
    cells = effects.shape[1:]
    d = effects.detach().double().cpu().reshape(effects.shape[0], -1)
    n, m = d.shape
    signs, exact = _signs(n, n_flips, seed)
    mean, var = d.mean(0), d.var(0)
    se = (var / n).sqrt()
    ss = (d * d).sum(0)
    # The observed |t| by the same arithmetic as the flips', so the identity flip reaches it
    # exactly and no p-value falls below 1 / n_flips by rounding.
    t = _flipped_t(torch.ones(1, n, dtype=torch.float64), d, ss)[0]
    at_least = torch.zeros(m, dtype=torch.float64)  # flips with |t*| >= |t|, per cell
    max_null, max_centred = [], []
    centred = d - mean
    ss_centred = (centred * centred).sum(0)
    for s in signs.split(max(1, (1 << 22) // max(1, m * 4))):
        ts = _flipped_t(s, d, ss)
        at_least += (ts >= t).sum(0)
        max_null.append(ts.amax(1))
        max_centred.append(_flipped_t(s, centred, ss_centred).amax(1))
    b = signs.shape[0]
    p_raw = at_least / b
    if method == "maxt":
        null = torch.cat(max_null).sort().values
        p_adj = (b - torch.searchsorted(null, t, side="left")).double() / b
        q = torch.quantile(torch.cat(max_centred), 1 - alpha)
        half = torch.where(se > 0, q * se, torch.zeros_like(se))  # no spread: no width
        low, high = mean - half, mean + half
    else:
        p_adj, low, high = adjust_p(p_raw, method), None, None
    shape = lambda x: x.reshape(cells).float()  # noqa: E731
    return FamilyTest(
        method, alpha, shape(mean),
        None if low is None else shape(low), None if high is None else shape(high),
        shape(p_raw), shape(p_adj), (p_adj <= alpha).reshape(cells), n, m, b, exact,
    )  # fmt: skip


def split_samples(n: int, split: float | None, seed: int) -> tuple[Tensor, Tensor]:
    """Sample indices ``(select, report)``: a seeded random ``split`` of ``n`` to choose a cell
    on and the rest to report it on, disjoint, each sorted; ``split=None`` is all of them for
    both. Each side needs at least 2 samples (an interval needs a spread)."""
    if split is None:
        every = torch.arange(n)
        return every, every
    if not 0 < split < 1:
        raise ValueError(f"split must be in (0, 1) or None; got {split}")
    n_sel = round(n * split)
    if n_sel < 2 or n - n_sel < 2:
        raise ValueError(
            f"split={split} of {n} prompts leaves {n_sel} to rank on and {n - n_sel} to report "
            "on; each side needs at least 2 prompts. Use more prompts, or split=None to choose "
            "and report on all of them with intervals simultaneous over every cell"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_sel].sort().values, perm[n_sel:].sort().values


def adjust_p(p: Tensor, method: str) -> Tensor:
    """Holm (``"holm"``) or Benjamini-Hochberg (``"bh"``) adjusted p-values of ``p`` (any shape)."""
    check_choice(method, ("holm", "bh"), "method")
    flat = torch.as_tensor(p).double().flatten()
    m = flat.numel()
    order = torch.argsort(flat)
    ranked = flat[order]
    k = torch.arange(1, m + 1, dtype=torch.float64)
    if method == "holm":  # step down: max over the smaller p's of (m - k + 1) p_(k)
        adj = torch.cummax((m - k + 1) * ranked, 0).values
    else:  # step up: min over the larger p's of m p_(k) / k
        adj = torch.flip(torch.cummin(torch.flip(m * ranked / k, [0]), 0).values, [0])
    out = torch.empty_like(flat)
    out[order] = adj.clamp(max=1.0)
    return out.reshape(torch.as_tensor(p).shape)


def _signs(n: int, n_flips: int, seed: int) -> tuple[Tensor, bool]:
    """``[b, n]`` of +-1: all 2**n sign vectors where that is at most ``n_flips``, else the
    identity and ``n_flips - 1`` random ones."""
    if n < 31 and 2**n <= n_flips:
        codes = torch.arange(2**n)[:, None]
        bits = (codes >> torch.arange(n)[None, :]) & 1
        return (1 - 2 * bits).double(), True
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randint(0, 2, (n_flips - 1, n), generator=gen).double() * 2 - 1
    return torch.cat([torch.ones(1, n, dtype=torch.float64), rand]), False


def _abs_t(mean: Tensor, var: Tensor, n: int) -> Tensor:
    """|mean| / sqrt(var / n); a cell without spread is 0 where its mean is 0, else inf.
    In place on ``mean`` and ``var`` (the flips make large temporaries)."""
    t = mean.abs_().div_(var.div_(n).sqrt_())
    return t.nan_to_num_(nan=0.0, posinf=torch.inf)


def _flipped_t(signs: Tensor, d: Tensor, ss: Tensor) -> Tensor:
    """|t| of every cell for every sign vector, ``[b, m]``. Flipping signs keeps each prompt's
    squared effect (``ss`` is their sum per cell), so the variance needs only the flipped mean."""
    n = d.shape[0]
    mean = (signs @ d).div_(n)
    var = (ss - n * mean * mean).clamp_(min=0).div_(n - 1)
    return _abs_t(mean, var, n)
