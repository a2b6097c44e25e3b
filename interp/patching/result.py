"""Results of patching methods: labelled axes, per-prompt values, bootstrap CIs, plots, files.

``values`` is ``[n_prompts, *shape]``: one metric value per prompt and cell, so the mean of a cell
comes with a confidence interval over prompts (:func:`interp.stats.bootstrap_ci`). ``clean`` and
``corrupt`` are the unpatched per-prompt metric values, the two ends of the normalised scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.manifest import write_run_manifest
from interp.stats import CI, bootstrap_ci
from interp.table import Rows
from interp.validate import check_choice, check_int, did_you_mean

__all__ = ["PatchResult"]

_FORMAT = "mechscope.patch_result/1"


@dataclass
class PatchResult:
    """A grid of patched metric values with labelled axes (``axes[i]`` labels dimension i+1)."""

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
        if self.values.ndim != len(self.axes) + 1:
            raise ValueError(
                f"values has shape {tuple(self.values.shape)}; expected [n_prompts, "
                f"{', '.join(self.axes)}]"
            )
        for i, a in enumerate(self.axes):
            if len(self.labels[a]) != self.values.shape[i + 1]:
                raise ValueError(
                    f"axis {a!r} has {len(self.labels[a])} labels for size "
                    f"{self.values.shape[i + 1]}"
                )

    # -- summaries --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    @property
    def n_prompts(self) -> int:
        return int(self.values.shape[0])

    @property
    def mean(self) -> Tensor:
        return self.values.mean(0)

    def ci(self, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0) -> CI:
        """Bootstrap CI of every cell's mean over prompts (the same resamples for all cells)."""
        return bootstrap_ci(self.values, level=level, n_resamples=n_resamples, seed=seed)

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

    def squeeze(self, *axes: str) -> PatchResult:
        """The result without its length-1 axes (or without just the named ones).

        A sweep at one position, ``over=("layer", "head", "pos"), positions=[-1]``, becomes a
        layer × head result. Each dropped axis's label is kept in ``meta["fixed"]``
        (``{"pos": "13 ' to'"}``), so views can say where the cells were patched.
        """
        for a in axes:
            if a not in self.axes:
                raise ValueError(
                    f"no axis {a!r} in this result (its axes: {', '.join(self.axes)})"
                    + did_you_mean(a, self.axes)
                )
            if len(self.labels[a]) != 1:
                raise ValueError(
                    f"axis {a!r} has {len(self.labels[a])} entries; only an axis of length 1 "
                    "can be squeezed away"
                )
        drop = set(axes) if axes else {a for a in self.axes if len(self.labels[a]) == 1}
        if not drop:
            return self
        keep = tuple(a for a in self.axes if a not in drop)
        index = (slice(None), *(0 if a in drop else slice(None) for a in self.axes))
        fixed = {
            **self.meta.get("fixed", {}),
            **{a: self.labels[a][0] for a in self.axes if a in drop},
        }
        return PatchResult(
            self.values[index],
            keep,
            {a: self.labels[a] for a in keep},
            self.metric,
            self.method,
            self.site,
            self.ablation,
            self.direction,
            self.clean,
            self.corrupt,
            {**self.meta, "fixed": fixed},
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

    def plot(self, **kwargs: Any) -> Any:
        """A Plotly heatmap (two axes), bar chart with error bars (one) or faceted heatmaps."""
        from interp.viz.patching import plot_patch_result

        return plot_patch_result(self, **kwargs)

    # -- files ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``values.npy``, ``clean.npy``, ``corrupt.npy``, ``result.json`` and ``run.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(d / "values.npy", _npy(self.values))
        atomic_write_bytes(d / "clean.npy", _npy(self.clean))
        if self.corrupt is not None:
            atomic_write_bytes(d / "corrupt.npy", _npy(self.corrupt))
        info = {
            "format": _FORMAT,
            "axes": list(self.axes),
            "labels": self.labels,
            "metric": self.metric,
            "method": self.method,
            "site": self.site,
            "ablation": self.ablation,
            "direction": self.direction,
            "meta": self.meta,
        }
        atomic_write_json(d / "result.json", info)
        write_run_manifest(
            d, kind=self.method, config={k: v for k, v in info.items() if k != "labels"}
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> PatchResult:
        d = Path(directory)
        info = read_json(d / "result.json")
        if info.get("format") != _FORMAT:
            raise ValueError(f"{d} does not hold a patch result (format {info.get('format')!r})")
        corrupt = d / "corrupt.npy"
        return cls(
            torch.from_numpy(np.load(d / "values.npy")),
            tuple(info["axes"]),
            info["labels"],
            info["metric"],
            info["method"],
            info["site"],
            info["ablation"],
            info["direction"],
            torch.from_numpy(np.load(d / "clean.npy")),
            torch.from_numpy(np.load(corrupt)) if corrupt.exists() else None,
            info.get("meta", {}),
        )

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return (
            f"PatchResult({self.method}, site={self.site}, {dims}, prompts={self.n_prompts}, "
            f"metric={self.metric}, ablation={self.ablation}, {self.direction})"
        )


def _npy(t: Tensor) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, t.detach().cpu().numpy())
    return buf.getvalue()
