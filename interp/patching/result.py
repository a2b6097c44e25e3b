"""Results of patching methods: labelled axes, per-prompt values, bootstrap CIs, plots, files.

``values`` is ``[n_prompts, *shape]``: one metric value per prompt and cell, so the mean of a cell
comes with a confidence interval over prompts (:func:`interp.stats.bootstrap_ci`). ``clean`` and
``corrupt`` are the unpatched per-prompt metric values, the two ends of the normalised scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from interp.core.result import Result
from interp.multiple_testing import family_test, split_samples
from interp.stats import CI, bootstrap_ci
from interp.table import Rows
from interp.validate import check_choice, check_int

__all__ = ["PatchResult"]


@dataclass
class PatchResult(Result):
    """A grid of patched metric values with labelled axes (``axes[i]`` labels dimension i+1)."""

    kind: ClassVar[str] = "patch_result"

    values: Tensor  # [n_prompts, *shape]
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    metric: str
    method: str  # "patch_sweep", "attribution_patch", ...
    site: str
    ablation: str
    direction: str  # "denoise": source = clean into the corrupted run; "noise": the reverse
    clean: Tensor  # [n_prompts] unpatched metric on clean inputs
    corrupt: Tensor | None  # [n_prompts] on corrupted inputs (None for mean/zero ablation)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_layout()

    @property
    def n_prompts(self) -> int:
        return self.n_samples

    def baseline_ci(self, level: float = 0.95) -> dict[str, CI]:
        out = {"clean": bootstrap_ci(self.clean, level=level)}
        if self.corrupt is not None:
            out["corrupt"] = bootstrap_ci(self.corrupt, level=level)
        return out

    def normalized(self) -> PatchResult:
        """Values rescaled so the corrupted run's mean is 0 and the clean run's mean is 1.

        Per-prompt values are mapped with the two *mean* baselines (not per-prompt ones, which
        explode on prompts whose clean and corrupted values nearly agree), so the CI of a cell
        is the CI of its normalised mean.
        """
        if self.corrupt is None:
            raise ValueError(
                f"normalising needs corrupted-run baselines; this result used {self.ablation!r} "
                "ablation, which has none"
            )
        lo, hi = self.corrupt.mean(), self.clean.mean()
        span = hi - lo
        if span.abs() < 1e-12:
            raise ValueError("clean and corrupted runs have the same mean metric: cannot normalise")
        return PatchResult(
            (self.values - lo) / span,
            self.axes,
            self.labels,
            f"normalized({self.metric})",
            self.method,
            self.site,
            self.ablation,
            self.direction,
            (self.clean - lo) / span,
            (self.corrupt - lo) / span,
            self.followed_by("normalized"),
        )

    def no_effect(self) -> Tensor | float:
        """The base run's metric per prompt, ``[n, 1, ...]``: the corrupted run when denoising,
        the clean run when noising (a cell equal to it has no effect)."""
        base = self.corrupt if self.direction == "denoise" else self.clean
        if base is None:
            return 0.0
        return base.reshape(-1, *([1] * len(self.shape)))

    def top(
        self,
        k: int = 10,
        *,
        by: str = "abs_effect",
        split: float | None = 0.5,
        alpha: float = 0.05,
        seed: int = 0,
    ) -> Rows:
        """The k cells with the largest effect (|mean − base-run mean|, or ``by="value"``), with
        intervals that survive the choice.

        ``split`` (default 0.5): a seeded random ``split`` of the prompts ranks the cells and the
        other prompts report them; the intervals are simultaneous over the k reported cells
        (max-statistic sign-flip, level 1 − ``alpha``) and ``p_adj`` is each cell's adjusted
        p-value against no effect. The reporting prompts took no part in the ranking, so the
        maximum of many cells cannot inflate them. ``split=None``: ranked and reported on every
        prompt, with intervals simultaneous over all cells of the result (they cover every cell
        together, so also the ones picked). ``rows.note`` says which.
        """
        check_int(k, "k", minimum=1)
        check_choice(by, ("abs_effect", "value"), "by")
        chosen, shown = split_samples(self.n_samples, split, seed)
        effects = self.effects().flatten(1)
        values = self.values.flatten(1)
        score = effects[chosen].mean(0).abs() if by == "abs_effect" else values[chosen].mean(0)
        order = torch.argsort(score, descending=True)[:k]
        if split is None:
            fam = family_test(effects, alpha=alpha, seed=seed)
            pick = lambda x: x.flatten()[order]  # noqa: E731
            family = f"all {effects.shape[1]} cells"
        else:
            fam = family_test(effects[shown][:, order], alpha=alpha, seed=seed)
            pick = lambda x: x  # noqa: E731
            family = f"the {len(order)} cells shown"
        assert fam.low is not None and fam.high is not None
        offset = values[shown][:, order].mean(0) - effects[shown][:, order].mean(0)
        low, high, p_adj = pick(fam.low) + offset, pick(fam.high) + offset, pick(fam.p_adjusted)
        rows = Rows(
            note=(
                f"top {len(order)} by {by}, "
                + (
                    f"ranked on {len(chosen)} prompts, reported on the other {len(shown)}"
                    if split is not None
                    else f"ranked and reported on all {len(shown)} prompts"
                )
                + f"; {1 - alpha:.0%} intervals simultaneous over {family} (max-t sign flips)"
            )
        )
        for j, flat in enumerate(order.tolist()):
            idx = np.unravel_index(flat, self.shape)
            mean = float(values[shown, flat].mean())
            rows.append(
                {
                    "cell": {
                        a: self.labels[a][int(i)] for a, i in zip(self.axes, idx, strict=True)
                    },
                    "index": tuple(int(i) for i in idx),
                    "mean": mean,
                    "effect": float(effects[shown, flat].mean()),
                    "low": float(low[j]),
                    "high": float(high[j]),
                    "p_adj": float(p_adj[j]),
                }
            )
        return rows

    def to_dataframe(self) -> Any:
        """One row per cell: its labels, mean and CI (a pandas DataFrame)."""
        import pandas as pd

        ci = self.ci()
        rows = []
        for flat in range(int(np.prod(self.shape))):
            idx = np.unravel_index(flat, self.shape)
            row: dict[str, Any] = {
                a: self.labels[a][int(i)] for a, i in zip(self.axes, idx, strict=True)
            }
            row.update(
                mean=float(self.mean.flatten()[flat]),
                low=float(ci.low.flatten()[flat]),
                high=float(ci.high.flatten()[flat]),
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return (
            f"PatchResult({self.method}, site={self.site}, {dims}, prompts={self.n_prompts}, "
            f"metric={self.metric}, ablation={self.ablation}, {self.direction})"
        )
