"""Results of causal scrubbing: per-sample losses, loss recovered with an interval, plot, files.

Loss recovered (the metric is a loss: lower is better), on means over samples::

    recovered = (random - scrubbed) / (random - clean)

1 means the hypothesis explains all of the loss the model achieves over a fully randomised input
(the model run on a random other input, scored against the reference input's labels); 0 means the
scrubbed model does no better than random. Its interval is over dataset rows: a delete-one-row
jackknife (a row left out with every sample that read it, a sample's losses together) with a
t quantile (:mod:`interp.scrubbing.resampling`, docs/methods.md); only a result saved before rows
were kept falls back to a percentile bootstrap over samples, and says so in ``unit``.

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
from interp.scrubbing.resampling import RowDraws, jackknife
from interp.stats import CI, bootstrap_ci

__all__ = ["RecoveredCI", "ScrubComparison", "ScrubResult", "loss_recovered"]

_FORMAT = "mechscope.scrub_result/1"
_COMPARISON_FILE = "comparison.json"
RUNS = ["clean", "scrubbed", "random"]


class RecoveredCI(NamedTuple):
    estimate: float
    low: float
    high: float
    level: float
    n: int  # units resampled
    unit: str = "dataset rows"  # or "samples" (a result saved without its rows)


def loss_recovered(clean: Tensor, scrubbed: Tensor, random: Tensor) -> float:
    """``(random - scrubbed) / (random - clean)`` on the means of per-sample losses."""
    span = float(random.double().mean() - clean.double().mean())
    if abs(span) < 1e-12:
        raise ValueError("the clean and random losses have the same mean: nothing to recover")
    return float(random.double().mean() - scrubbed.double().mean()) / span


def _recovered_ci(
    losses: dict[str, Tensor],
    draws: RowDraws | None,
    level: float,
    n_resamples: int,
    seed: int,
) -> RecoveredCI:
    """Interval of (random - a) / (random - clean), less (random - b) / (random - clean) when
    ``b`` is given: over dataset rows (the row jackknife) where the rows are known, else a
    bootstrap over samples (a result saved before they were kept)."""
    if draws is not None:
        est, low, high = jackknife(losses, draws, _recovered, level)
        return RecoveredCI(float(est), float(low), float(high), level, draws.n_rows, _unit(draws))
    n = len(losses["clean"])
    idx = torch.randint(0, n, (n_resamples, n), generator=torch.Generator().manual_seed(seed))
    ratio = _recovered({k: v.double()[idx].mean(1) for k, v in losses.items()})
    ratio = ratio[torch.isfinite(ratio)]
    alpha = (1 - level) / 2
    q = torch.quantile(ratio, torch.tensor([alpha, 1 - alpha], dtype=ratio.dtype))
    point = float(_recovered({k: v.double().mean() for k, v in losses.items()}))
    return RecoveredCI(point, float(q[0]), float(q[1]), level, n, _unit(draws))


def _recovered(m: dict[str, Tensor]) -> Tensor:
    out = (m["random"] - m["a"]) / (m["random"] - m["clean"])
    if "b" in m:
        out = out - (m["random"] - m["b"]) / (m["random"] - m["clean"])
    return out


def _row_ci(losses: dict[str, Tensor], draws: RowDraws, level: float) -> CI:
    """Each loss's mean with its row-jackknife interval, as a :class:`CI`."""
    names = list(losses)
    est, low, high = jackknife(
        losses, draws, lambda m: torch.stack([m[k] for k in names], -1), level
    )
    return CI(est, low, high, level, draws.n_rows)


def _unit(draws: RowDraws | None) -> str:
    return "samples" if draws is None else "dataset rows"


def _check_unit(rows: Tensor | None, meta: dict[str, Any], n_samples: int) -> None:
    """A result without its samples' dataset rows (saved before they were kept) can only be
    bootstrapped over samples, which is wrong once samples repeat rows."""
    n_data = meta.get("dataset_rows")
    if rows is None and isinstance(n_data, int) and n_samples > n_data:
        raise ValueError(
            f"this result has {n_samples} samples drawn from {n_data} dataset rows but does not "
            "record which row each sample came from (it was saved before mechscope kept them), "
            "so an interval over samples would measure Monte-Carlo noise on one dataset, not "
            "the task; run scrub again to get intervals over dataset rows"
        )


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
    rows: Tensor | None = None  # [n_samples] the dataset row each sample scored (its reference)
    scrubbed_from: Tensor | None = None  # [n_samples, k] the other rows its scrubbed run read
    random_from: Tensor | None = None  # [n_samples, 1] the row of its random baseline

    def draws(self, role: str = "a") -> RowDraws | None:
        """The dataset rows behind each sample's clean, scrubbed (as ``role``) and random
        losses, for the row bootstrap; None for a result saved before they were kept."""
        n_rows = self.meta.get("dataset_rows")
        if self.rows is None or self.scrubbed_from is None or self.random_from is None:
            return None
        assert isinstance(n_rows, int)
        empty = torch.empty(len(self.rows), 0, dtype=torch.long)
        parts = {"clean": empty, role: self.scrubbed_from, "random": self.random_from}
        return RowDraws(n_rows, self.rows, parts)

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
        """Interval of loss recovered over dataset rows (the row jackknife: each row left out
        with every sample that read it), so it is about the task's inputs, not about the
        Monte-Carlo noise of resampling one dataset. ``n_resamples`` and ``seed`` act only on
        the samples bootstrap of a result saved without its rows."""
        _check_unit(self.rows, self.meta, self.n_samples)
        losses = {"clean": self.clean, "a": self.scrubbed, "random": self.random}
        return _recovered_ci(losses, self.draws(), level, n_resamples, seed)

    def ci(self, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0) -> CI:
        """Interval of each mean loss (clean, scrubbed, random), over dataset rows."""
        _check_unit(self.rows, self.meta, self.n_samples)
        draws = self.draws("scrubbed")
        if draws is None:
            return bootstrap_ci(self.values, level=level, n_resamples=n_resamples, seed=seed)
        losses = dict(zip(RUNS, self.values.unbind(1), strict=True))
        return _row_ci(losses, draws, level)

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
            "ci_over": f"{rc.n} {rc.unit}",
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``losses.npz``, ``result.json`` and ``run.json`` (atomically) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        arrays = {k: getattr(self, k).numpy() for k in ("clean", "scrubbed", "random")}
        for k in ("rows", "scrubbed_from", "random_from"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k).numpy()
        np.savez(buf, **arrays)
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
            config={k: v for k, v in info.items() if k not in ("nodes", "summary", "meta")}
            | {"meta": {k: v for k, v in self.meta.items() if k != "replay"}},
            seed=self.meta.get("seed"),
            data=self.meta.get("data"),
            extra={"replay": self.meta.get("replay")},
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
            **{
                k: torch.from_numpy(arrays[k]) if k in arrays.files else None
                for k in ("rows", "scrubbed_from", "random_from")
            },
        )

    def __repr__(self) -> str:
        try:
            rc = self.recovered_ci()
            interval = f"[{rc.low:.3f}, {rc.high:.3f}]"
            over = f" over {rc.n} {rc.unit}" if rc.unit != "samples" else ""
        except ValueError:  # a result saved without its rows: no honest interval
            interval, over = "(no interval: rows unknown)", ""
        return (
            f"ScrubResult({self.hypothesis!r}: recovered {self.recovered:.3f} {interval}, "
            f"clean {float(self.clean.mean()):.4f}, scrubbed {float(self.scrubbed.mean()):.4f}, "
            f"random {float(self.random.mean()):.4f}, n={self.n_samples}{over})"
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
        """Interval of recovered(a) − recovered(b) over dataset rows, paired: the row jackknife
        leaves each row out of both hypotheses' samples at once."""
        ra, rb = self[a], self[b]
        _check_unit(ra.rows, ra.meta, ra.n_samples)
        losses = {"clean": ra.clean, "a": ra.scrubbed, "b": rb.scrubbed, "random": ra.random}
        da, db = ra.draws("a"), rb.draws("b")
        draws = None
        if da is not None and db is not None:
            draws = RowDraws(da.n_rows, da.ref, {**da.partners, "b": db.partners["b"]})
        return _recovered_ci(losses, draws, level, n_resamples, seed)

    def ci(self, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0) -> CI:
        """Interval of each hypothesis's mean scrubbed loss, over dataset rows."""
        if not self.results:
            raise ValueError("an empty comparison has no intervals")
        first = self.results[0]
        _check_unit(first.rows, first.meta, first.n_samples)
        parts = [r.draws(f"h{i}") for i, r in enumerate(self.results)]
        if any(d is None for d in parts):
            return bootstrap_ci(self.values, level=level, n_resamples=n_resamples, seed=seed)
        partners = {k: v for d in parts if d is not None for k, v in d.partners.items()}
        draws = RowDraws(parts[0].n_rows, first.rows, partners)  # type: ignore[union-attr,arg-type]
        losses = {f"h{i}": r.scrubbed for i, r in enumerate(self.results)}
        return _row_ci(losses, draws, level)

    def save(self, directory: str | Path) -> Path:
        """Each result in its own folder, then ``comparison.json`` (written last: a folder with
        it holds a complete comparison, which :meth:`load` reads back)."""
        d = Path(directory)
        folders = []
        for i, r in enumerate(self.results):
            folders.append(f"{i:02d}_{_slug(r.hypothesis)}")
            r.save(d / folders[-1])
        info = {"format": self.format(), "results": folders, "meta": self.meta}
        write_run_manifest(
            d,
            kind="scrub_comparison",
            config={"results": folders},
            seed=self.meta.get("seed"),
            extra={"replay": self.meta.get("replay")},
        )
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
