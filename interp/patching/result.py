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
            dict(self.meta),
        )

    def top(self, k: int = 10, *, by: str = "abs_effect") -> Rows:
        """The k cells with the largest effect (|mean − base-run mean|), with their CIs."""
        check_int(k, "k", minimum=1)
        check_choice(by, ("abs_effect", "value"), "by")
        base = self.corrupt if self.direction == "denoise" else self.clean
        ref = float(base.mean()) if base is not None else 0.0
        ci = self.ci()
        mean = self.mean.flatten()
        score = (mean - ref).abs() if by == "abs_effect" else mean
        order = torch.argsort(score, descending=True)[:k]
        rows = Rows()
        for flat in order.tolist():
            idx = np.unravel_index(flat, self.shape)
            rows.append(
                {
                    "cell": {
                        a: self.labels[a][int(i)] for a, i in zip(self.axes, idx, strict=True)
                    },
                    "index": tuple(int(i) for i in idx),
                    "mean": float(mean[flat]),
                    "effect": float(mean[flat]) - ref,
                    "low": float(ci.low.flatten()[flat]),
                    "high": float(ci.high.flatten()[flat]),
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
