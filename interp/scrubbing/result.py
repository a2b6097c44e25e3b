"""Results of causal scrubbing: per-sample losses, loss recovered with a bootstrap CI, plot, files.

Loss recovered (the metric is a loss: lower is better), on means over samples::

    recovered = (random - scrubbed) / (random - clean)

1 means the hypothesis explains all of the loss the model achieves over a fully randomised input
(the model run on a random other input, scored against the reference input's labels); 0 means the
scrubbed model does no better than random. Its CI resamples the samples with replacement, the
three losses of a sample together (paired), and recomputes the ratio of means.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.manifest import write_run_manifest
from interp.stats import CI, bootstrap_ci

__all__ = ["RecoveredCI", "ScrubComparison", "ScrubResult", "loss_recovered"]

_FORMAT = "mechscope.scrub_result/1"


class RecoveredCI(NamedTuple):
    estimate: float
    low: float
    high: float
    level: float
    n: int


def loss_recovered(clean: Tensor, scrubbed: Tensor, random: Tensor) -> float:
    """``(random - scrubbed) / (random - clean)`` on the means of per-sample losses."""
    span = float(random.double().mean() - clean.double().mean())
    if abs(span) < 1e-12:
        raise ValueError("the clean and random losses have the same mean: nothing to recover")
    return float(random.double().mean() - scrubbed.double().mean()) / span


def _recovered_ci(
    clean: Tensor, scrubbed: Tensor, random: Tensor, level: float, n_resamples: int, seed: int
) -> RecoveredCI:
    n = clean.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=gen)
    c, s, r = (t.double()[idx].mean(1) for t in (clean, scrubbed, random))
    ratio = (r - s) / (r - c)
    ratio = ratio[torch.isfinite(ratio)]
    alpha = (1 - level) / 2
    q = torch.quantile(ratio, torch.tensor([alpha, 1 - alpha], dtype=ratio.dtype))
    est = loss_recovered(clean, scrubbed, random)
    return RecoveredCI(est, float(q[0]), float(q[1]), level, n)


@dataclass
class ScrubResult:
    """One hypothesis scrubbed: per-sample losses ``[n_samples]`` and what made them.

    ``nodes`` has one row per claim of the treeified hypothesis (``path`` from the output,
    ``feature``, ``classes``: how many classes its feature splits the dataset into, and
    ``pool``: the mean number of dataset rows a resample of it is drawn from).
    """

    hypothesis: str
    tree: dict[str, Any]
    metric: str
    clean: Tensor
    scrubbed: Tensor
    random: Tensor
    nodes: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.clean.shape[0])

    @property
    def recovered(self) -> float:
        """Fraction of loss recovered: ``(random - scrubbed) / (random - clean)``."""
        return loss_recovered(self.clean, self.scrubbed, self.random)

    def recovered_ci(
        self, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0
    ) -> RecoveredCI:
        return _recovered_ci(self.clean, self.scrubbed, self.random, level, n_resamples, seed)

    def ci(self, level: float = 0.95) -> dict[str, CI]:
        """Bootstrap CIs of the mean clean, scrubbed and random losses."""
        return {
            k: bootstrap_ci(getattr(self, k), level=level) for k in ("clean", "scrubbed", "random")
        }

    def summary(self) -> dict[str, Any]:
        rc = self.recovered_ci()
        return {
            "hypothesis": self.hypothesis,
            "clean": float(self.clean.mean()),
            "scrubbed": float(self.scrubbed.mean()),
            "random": float(self.random.mean()),
            "recovered": rc.estimate,
            "low": rc.low,
            "high": rc.high,
            "n_samples": self.n_samples,
        }

    def plot(self, **kwargs: Any) -> Any:
        """A Plotly drawing of the hypothesis tree, each node with its feature and numbers."""
        from interp.scrubbing.plot import plot_scrub_result

        return plot_scrub_result(self, **kwargs)

    def save(self, directory: str | Path) -> Path:
        """Write ``losses.npz``, ``result.json`` and ``run.json`` (atomically) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **{k: getattr(self, k).numpy() for k in ("clean", "scrubbed", "random")})
        atomic_write_bytes(d / "losses.npz", buf.getvalue())
        info = {
            "format": _FORMAT,
            "hypothesis": self.hypothesis,
            "tree": self.tree,
            "metric": self.metric,
            "summary": self.summary(),
            "nodes": self.nodes,
            "meta": self.meta,
        }
        atomic_write_json(d / "result.json", info)
        write_run_manifest(
            d,
            kind="scrub",
            config={k: v for k, v in info.items() if k not in ("nodes", "summary")},
            seed=self.meta.get("seed"),
            data=self.meta.get("data"),
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ScrubResult:
        d = Path(directory)
        info = read_json(d / "result.json")
        if info.get("format") != _FORMAT:
            raise ValueError(f"{d} does not hold a scrub result (format {info.get('format')!r})")
        arrays = np.load(d / "losses.npz")
        return cls(
            info["hypothesis"],
            info["tree"],
            info["metric"],
            clean=torch.from_numpy(arrays["clean"]),
            scrubbed=torch.from_numpy(arrays["scrubbed"]),
            random=torch.from_numpy(arrays["random"]),
            nodes=info["nodes"],
            meta=info["meta"],
        )

    def __repr__(self) -> str:
        rc = self.recovered_ci()
        return (
            f"ScrubResult({self.hypothesis!r}: recovered {rc.estimate:.3f} "
            f"[{rc.low:.3f}, {rc.high:.3f}], clean {float(self.clean.mean()):.4f}, scrubbed "
            f"{float(self.scrubbed.mean()):.4f}, random {float(self.random.mean()):.4f}, "
            f"n={self.n_samples})"
        )


@dataclass
class ScrubComparison:
    """Several hypotheses scrubbed on the same samples (same references, same baselines)."""

    results: list[ScrubResult]

    def __getitem__(self, name: str) -> ScrubResult:
        for r in self.results:
            if r.hypothesis == name:
                return r
        raise KeyError(f"no hypothesis {name!r}; have {[r.hypothesis for r in self.results]}")

    def table(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.results]

    def difference_ci(self, a: str, b: str, level: float = 0.95) -> RecoveredCI:
        """CI of recovered(a) − recovered(b), samples resampled jointly (a paired comparison)."""
        ra, rb = self[a], self[b]
        n = ra.n_samples
        gen = torch.Generator().manual_seed(0)
        idx = torch.randint(0, n, (2000, n), generator=gen)
        c, r = ra.clean.double()[idx].mean(1), ra.random.double()[idx].mean(1)
        sa, sb = ra.scrubbed.double()[idx].mean(1), rb.scrubbed.double()[idx].mean(1)
        diff = (sb - sa) / (r - c)
        diff = diff[torch.isfinite(diff)]
        q = torch.quantile(diff, torch.tensor([(1 - level) / 2, (1 + level) / 2]).double())
        return RecoveredCI(ra.recovered - rb.recovered, float(q[0]), float(q[1]), level, n)

    def plot(self) -> Any:
        """Bars of loss recovered per hypothesis, with 95% CIs."""
        import plotly.graph_objects as go

        from interp.viz.text import plotly_text

        rows = self.table()
        slots = list(range(len(rows)))  # one bar per hypothesis, even where two names agree
        names = [plotly_text(r["hypothesis"]) for r in rows]
        fig = go.Figure(
            go.Bar(
                x=slots,
                y=[r["recovered"] for r in rows],
                customdata=names,
                hovertemplate="%{customdata}<br>recovered %{y:.3f}<extra></extra>",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["high"] - r["recovered"] for r in rows],
                    "arrayminus": [r["recovered"] - r["low"] for r in rows],
                },
                text=[f"{r['recovered']:.2f}" for r in rows],
            )
        )
        fig.update_layout(
            title="Causal scrubbing: fraction of loss recovered (95% CI)",
            yaxis_title="(random − scrubbed) / (random − clean)",
            xaxis={"title": "hypothesis", "tickvals": slots, "ticktext": names},
            template="plotly_white",
        )
        return fig

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        for i, r in enumerate(self.results):
            r.save(d / f"{i:02d}_{_slug(r.hypothesis)}")
        atomic_write_json(d / "comparison.json", {"table": self.table()})
        return d

    def __repr__(self) -> str:
        return "ScrubComparison(\n" + "\n".join(f"  {r!r}" for r in self.results) + "\n)"


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)[:60]
