"""Results of causal scrubbing: per-sample losses, loss recovered with a bootstrap CI, plot, files.

Loss recovered (the metric is a loss: lower is better), on means over samples::

    recovered = (random - scrubbed) / (random - clean)

1 means the hypothesis explains all of the loss the model achieves over a fully randomised input
(the model run on a random other input, scored against the reference input's labels); 0 means the
scrubbed model does no better than random. Its CI resamples the samples with replacement, the
three losses of a sample together (paired), and recomputes the ratio of means.

Both are results (:class:`~interp.core.result.Result`): a :class:`ScrubResult`'s values are its
per-sample losses ``[n_samples, run]`` (``run``: clean, scrubbed, random), a
:class:`ScrubComparison`'s the scrubbed losses ``[n_samples, hypothesis]``; ``ci()``, ``sel()``
and ``plot()`` (the views in :mod:`interp.viz.scrubbing`) come from the base.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.core.result import Result, Values
from interp.manifest import write_run_manifest

__all__ = ["RecoveredCI", "ScrubComparison", "ScrubResult", "loss_recovered"]

_FORMAT = "mechscope.scrub_result/1"
_COMPARISON_FILE = "comparison.json"
RUNS = ["clean", "scrubbed", "random"]


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
class ScrubResult(Result):
    """One hypothesis scrubbed: per-sample losses ``[n_samples]`` and what made them.

    ``nodes`` has one row per claim of the treeified hypothesis (``path`` from the output,
    ``feature``, ``classes``: how many classes its feature splits the dataset into, and
    ``pool``: the mean number of dataset rows a resample of it is drawn from).

    As a :class:`~interp.core.result.Result`: ``values`` is ``[n_samples, 3]`` (the clean,
    scrubbed and random losses) on the axis ``run``; ``ci()`` gives the interval of each mean
    loss, ``sel(run="scrubbed")`` a plain :class:`~interp.core.result.Values`.
    """

    kind: ClassVar[str] = "scrub_result"

    hypothesis: str
    tree: dict[str, Any]
    metric: str
    clean: Tensor
    scrubbed: Tensor
    random: Tensor
    nodes: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> Tensor:  # type: ignore[override]
        """``[n_samples, 3]``: the clean, scrubbed and random loss of every sample."""
        return torch.stack([self.clean, self.scrubbed, self.random], dim=1)

    @property
    def axes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("run",)

    @property
    def labels(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {"run": list(RUNS)}

    def _with(
        self, values: Tensor, axes: tuple[str, ...], labels: dict[str, list[str]], meta: dict
    ) -> Result:
        where = {"hypothesis": self.hypothesis, "metric": self.metric}
        return Values(values, axes, labels, {**meta, **where})

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
class ScrubComparison(Result):
    """Several hypotheses scrubbed on the same samples (same references, same baselines).

    As a :class:`~interp.core.result.Result`: ``values`` is ``[n_samples, n_hypotheses]``, the
    scrubbed losses, on the axis ``hypothesis``; ``ci()`` gives the interval of each mean
    scrubbed loss. ``sel(hypothesis=[...])`` is a comparison of those hypotheses, a single one a
    plain :class:`~interp.core.result.Values` (``comparison[name]`` is its :class:`ScrubResult`).
    """

    kind: ClassVar[str] = "scrub_comparison"

    results: list[ScrubResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {r.n_samples for r in self.results}
        if len(sizes) > 1:
            raise ValueError(
                f"the hypotheses of a comparison are scrubbed on the same samples; these have "
                f"{sorted(sizes)} samples"
            )

    @property
    def values(self) -> Tensor:  # type: ignore[override]
        """``[n_samples, n_hypotheses]``: the scrubbed loss of every sample and hypothesis."""
        return torch.stack([r.scrubbed for r in self.results], dim=1)

    @property
    def axes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("hypothesis",)

    @property
    def labels(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {"hypothesis": [r.hypothesis for r in self.results]}

    def sel(self, **by: Any) -> Any:
        """A list of hypotheses gives a comparison of them; one gives its scrubbed losses as a
        :class:`~interp.core.result.Values` (``self[name]`` is the whole :class:`ScrubResult`)."""
        key = by.get("hypothesis")
        if set(by) == {"hypothesis"} and isinstance(key, (list, tuple)):
            picked = self._index("hypothesis", key)
            assert isinstance(picked, list)
            return ScrubComparison([self.results[i] for i in picked], dict(self.meta))
        return super().sel(**by)

    def _with(
        self, values: Tensor, axes: tuple[str, ...], labels: dict[str, list[str]], meta: dict
    ) -> Result:
        metric = self.results[0].metric if self.results else None
        return Values(values, axes, labels, {**meta, "run": "scrubbed", "metric": metric})

    def __getitem__(self, name: str) -> ScrubResult:
        for r in self.results:
            if r.hypothesis == name:
                return r
        raise KeyError(f"no hypothesis {name!r}; have {[r.hypothesis for r in self.results]}")

    def table(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.results]

    def difference_ci(
        self, a: str, b: str, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0
    ) -> RecoveredCI:
        """CI of recovered(a) − recovered(b), samples resampled jointly (a paired comparison)."""
        ra, rb = self[a], self[b]
        n = ra.n_samples
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (n_resamples, n), generator=gen)
        c, r = ra.clean.double()[idx].mean(1), ra.random.double()[idx].mean(1)
        sa, sb = ra.scrubbed.double()[idx].mean(1), rb.scrubbed.double()[idx].mean(1)
        diff = (sb - sa) / (r - c)
        diff = diff[torch.isfinite(diff)]
        q = torch.quantile(diff, torch.tensor([(1 - level) / 2, (1 + level) / 2]).double())
        return RecoveredCI(ra.recovered - rb.recovered, float(q[0]), float(q[1]), level, n)

    def save(self, directory: str | Path) -> Path:
        """Each result in its own folder, then ``comparison.json`` (written last: a folder with
        it holds a complete comparison, which :meth:`load` reads back)."""
        d = Path(directory)
        folders = []
        for i, r in enumerate(self.results):
            folders.append(f"{i:02d}_{_slug(r.hypothesis)}")
            r.save(d / folders[-1])
        info = {"format": self.format(), "results": folders, "meta": self.meta}
        atomic_write_json(d / _COMPARISON_FILE, {**info, "table": self.table()})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ScrubComparison:
        """The comparison :meth:`save` wrote (also a folder saved before ``load`` existed, whose
        ``comparison.json`` lists no folders: its ``NN_name`` folders, in order)."""
        d = Path(directory)
        if not (d / _COMPARISON_FILE).is_file():
            raise FileNotFoundError(f"{d} holds no complete scrub comparison ({_COMPARISON_FILE})")
        info = read_json(d / _COMPARISON_FILE)
        if info.get("format", cls.format()) != cls.format():
            raise ValueError(
                f"{d} does not hold a scrub comparison (format {info.get('format')!r}, "
                f"expected {cls.format()!r})"
            )
        folders = info.get("results")
        if folders is None:
            found = [p.name for p in d.iterdir() if (p / "result.json").is_file()]
            numbered = [f for f in found if re.match(r"\d+_", f)]
            folders = sorted(numbered, key=lambda f: int(f.split("_", 1)[0]))
        return cls([ScrubResult.load(d / f) for f in folders], info.get("meta", {}))

    def __repr__(self) -> str:
        return "ScrubComparison(\n" + "\n".join(f"  {r!r}" for r in self.results) + "\n)"


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)[:60]
