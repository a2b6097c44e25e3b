"""``Result``: the one base of every method's answer.

A result holds per-sample values ``[n_samples, *shape]`` with labelled axes (``axes[i]`` names
dimension i + 1, ``labels[axis]`` its entries), so every cell's mean comes with an interval over
samples. The base gives every result the same verbs:

- ``shape``, ``n_samples``, ``mean``;
- ``ci(level, n_resamples=, seed=)``: a percentile bootstrap interval per cell, the same
  resamples for all cells;
- ``effects()``: per-sample values minus each sample's no-effect baseline (0 unless the result
  has one, as a patching result's base run), and ``family(alpha, method=)``: which cells differ
  from no effect with the error controlled over all cells (:mod:`interp.multiple_testing`:
  max-statistic sign-flip test with simultaneous intervals, Holm, Benjamini-Hochberg);
- ``sel(axis=label | index | [...])``: a sub-result; a single entry drops the axis and is kept in
  ``meta["fixed"]`` so a view can say where the cells are; ``squeeze()`` drops length-1 axes;
- ``save(dir)`` / ``load(dir)``: tensors as ``.npy``, the rest as ``result.json``, and the run
  manifest ``run.json`` (written last, so a folder with ``run.json`` is complete);
- ``plot()``: the view registered for the result's ``kind`` (see :func:`register_plot`; the
  plotting modules register themselves when ``interp.viz`` is imported, which ``plot`` does).

Subclasses are dataclasses whose fields include ``values``, ``axes``, ``labels`` and ``meta``;
one that derives them from fields of its own (properties) overrides ``_with``, which builds what
``sel`` returns, to give a plain :class:`Values`.

>>> import torch
>>> from dataclasses import dataclass, field
>>> @dataclass
... class Scores(Result):
...     values: torch.Tensor
...     axes: tuple
...     labels: dict
...     meta: dict = field(default_factory=dict)
>>> r = Scores(torch.arange(12.0).reshape(2, 2, 3), ("layer", "pos"), {"layer": ["L0", "L1"], "pos": ["a", "b", "c"]})
>>> r.sel(layer="L1").mean.tolist(), r.sel(layer="L1").meta["fixed"]
([6.0, 7.0, 8.0], {'layer': 'L1'})
"""

from __future__ import annotations

import dataclasses
import importlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.manifest import write_run_manifest
from interp.multiple_testing import FamilyTest, family_test
from interp.stats import CI, bootstrap_ci
from interp.validate import did_you_mean

__all__ = ["Result", "Values", "register_plot"]

R = TypeVar("R", bound="Result")
_PLOTS: dict[str, Callable[..., Any] | str] = {}
_KINDS: dict[str, type[Result]] = {}


def register_plot(kind: str, fn: Callable[..., Any] | str) -> None:
    """Make ``fn(result, **kwargs)`` the view of results of ``kind``; ``fn`` may be a
    ``"module:function"`` string, imported on first use (so registering costs nothing)."""
    _PLOTS[kind] = fn


class Result:
    """Base of every result type (see the module docstring)."""

    kind: ClassVar[str] = "result"
    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    meta: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls  # so a saved result loads by its format alone

    @staticmethod
    def class_of(directory: str | Path) -> type[Result]:
        """The result class whose ``save`` wrote ``directory`` (read from its format)."""
        info = read_json(Path(directory) / "result.json")
        fmt = str(info.get("format", ""))
        kind = fmt.removeprefix("mechscope.").rsplit("/", 1)[0]
        if kind not in _KINDS:
            raise ValueError(
                f"{directory} holds format {fmt!r}, which no loaded result class reads (known: "
                f"{', '.join(sorted(_KINDS))})"
            )
        return _KINDS[kind]

    def followed_by(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """This result's meta with ``op(**kwargs)`` added to its recipe's steps (if it has one),
        for a result derived from this one: replay makes the original again, then repeats them."""
        meta = dict(self.meta)
        if isinstance(meta.get("replay"), dict):
            recipe = dict(meta["replay"])
            recipe["then"] = [*recipe.get("then", []), {"op": op, "kwargs": kwargs}]
            meta["replay"] = recipe
        return meta

    # -- summaries --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def mean(self) -> Tensor:
        return self.values.mean(0)

    def ci(self, level: float = 0.95, *, n_resamples: int = 2000, seed: int = 0) -> CI:
        """Bootstrap CI of every cell's mean over samples (the same resamples for all cells)."""
        return bootstrap_ci(self.values, level=level, n_resamples=n_resamples, seed=seed)

    def no_effect(self) -> Tensor | float:
        """Each sample's value where nothing was changed, broadcastable against ``values``
        (``[n, 1, ...]``); 0 here. A result with a base run overrides it."""
        return 0.0

    def effects(self) -> Tensor:
        """Per-sample effects ``[n_samples, *shape]``: ``values`` minus :meth:`no_effect`."""
        return self.values - self.no_effect()

    def family(
        self, alpha: float = 0.05, *, method: str = "maxt", n_flips: int = 10000, seed: int = 0
    ) -> FamilyTest:
        """Which cells' effects differ from zero, with the error controlled over every cell of
        this result: ``"maxt"`` (adjusted p-values and simultaneous intervals), ``"holm"`` or
        ``"bh"`` (adjusted p-values). See :mod:`interp.multiple_testing`."""
        return family_test(self.effects(), alpha=alpha, method=method, n_flips=n_flips, seed=seed)

    def check_layout(self) -> None:
        if self.values.ndim != len(self.axes) + 1:
            raise ValueError(
                f"values has shape {tuple(self.values.shape)}; expected [n_samples, "
                f"{', '.join(self.axes)}]"
            )
        for i, a in enumerate(self.axes):
            if len(self.labels[a]) != self.values.shape[i + 1]:
                raise ValueError(
                    f"axis {a!r} has {len(self.labels[a])} labels for size "
                    f"{self.values.shape[i + 1]}"
                )

    # -- selection --------------------------------------------------------------------------
    def _index(self, axis: str, key: Any) -> int | list[int]:
        labels = self.labels[axis]
        if isinstance(key, (list, tuple)):
            return [self._one(axis, k, labels) for k in key]
        return self._one(axis, key, labels)

    @staticmethod
    def _one(axis: str, key: Any, labels: Sequence[str]) -> int:
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(labels) <= key < len(labels):
                raise IndexError(f"axis {axis!r} has {len(labels)} entries; index {key} is outside")
            return key % len(labels)
        if isinstance(key, str):
            hits = [i for i, x in enumerate(labels) if x == key]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise KeyError(
                    f"label {key!r} appears {len(hits)} times on axis {axis!r} (at {hits}): "
                    "select by index instead"
                )
            raise KeyError(f"no label {key!r} on axis {axis!r}{did_you_mean(key, labels)}")
        raise TypeError(f"select {axis!r} by a label, an index or a list of them; got {key!r}")

    def sel(self: R, **by: Any) -> R:
        """The cells at the given entries of some axes (labels or indices; a list keeps the axis)."""
        for a in by:
            if a not in self.axes:
                raise ValueError(
                    f"no axis {a!r} in this result (its axes: {', '.join(self.axes)})"
                    + did_you_mean(a, self.axes)
                )
        index: list[Any] = [slice(None)]
        keep: list[str] = []
        labels: dict[str, list[str]] = {}
        fixed = dict(self.meta.get("fixed", {}))
        for a in self.axes:
            if a not in by:
                index.append(slice(None))
                keep.append(a)
                labels[a] = list(self.labels[a])
                continue
            i = self._index(a, by[a])
            index.append(i)
            if isinstance(i, list):
                keep.append(a)
                labels[a] = [self.labels[a][j] for j in i]
            else:
                fixed[a] = self.labels[a][i]
        values = self.values
        # One axis at a time, last first, so the earlier dimensions keep their places.
        for dim in reversed(range(1, len(index))):
            i = index[dim]
            if isinstance(i, int):
                values = values.select(dim, i)
            elif isinstance(i, list):
                values = values.index_select(dim, torch.as_tensor(i, device=values.device))
        meta = self.followed_by("sel", **by)
        if fixed:
            meta["fixed"] = fixed
        return self._with(values, tuple(keep), labels, meta)  # type: ignore[return-value]

    def _with(
        self, values: Tensor, axes: tuple[str, ...], labels: dict[str, list[str]], meta: dict
    ) -> Result:
        """The result ``sel`` returns: this one with those four fields replaced. A result whose
        ``values`` are derived from other fields (not a field of its own) overrides this, and
        returns a plain :class:`Values` instead."""
        return dataclasses.replace(  # type: ignore[type-var]
            self, values=values, axes=axes, labels=labels, meta=meta
        )

    def squeeze(self: R, *axes: str) -> R:
        """The result without its length-1 axes (or without just the named ones)."""
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
        return self.sel(**{a: 0 for a in drop}) if drop else self

    # -- views ------------------------------------------------------------------------------
    def plot(self, **kwargs: Any) -> Any:
        """This result's registered view (a Plotly figure)."""
        importlib.import_module("interp.viz")  # registers the views; viz is never imported here
        fn = _PLOTS.get(self.kind)
        if fn is None:
            raise NotImplementedError(f"no view is registered for {self.kind!r} results")
        if isinstance(fn, str):
            module, name = fn.split(":")
            fn = _PLOTS[self.kind] = getattr(importlib.import_module(module), name)
        return fn(self, **kwargs)

    # -- files ------------------------------------------------------------------------------
    @classmethod
    def format(cls) -> str:
        return f"mechscope.{cls.kind}/1"

    def save(self, directory: str | Path) -> Path:
        """Tensors as ``<field>.npy``, the other fields in ``result.json``, then ``run.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"format": self.format()}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                atomic_write_bytes(d / f"{f.name}.npy", _npy(v))
            elif v is None:
                (d / f"{f.name}.npy").unlink(missing_ok=True)
                info[f.name] = None
            else:
                info[f.name] = list(v) if isinstance(v, tuple) else v
        atomic_write_json(d / "result.json", info)
        config = {k: v for k, v in info.items() if k not in ("labels", "format", "meta")}
        config["meta"] = {k: v for k, v in self.meta.items() if k != "replay"}
        write_run_manifest(
            d,
            kind=str(info.get("method", self.kind)),
            config=config,
            extra={"replay": self.meta.get("replay")},
        )
        return d

    @classmethod
    def load(cls: type[R], directory: str | Path) -> R:
        d = Path(directory)
        info = read_json(d / "result.json")
        if info.get("format") != cls.format():
            raise ValueError(
                f"{d} does not hold a {cls.kind} result (format {info.get('format')!r}, "
                f"expected {cls.format()!r})"
            )
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            npy = d / f"{f.name}.npy"
            if npy.exists():
                kwargs[f.name] = torch.from_numpy(np.load(npy))
            elif f.name in info:
                v = info[f.name]
                kwargs[f.name] = tuple(v) if f.name == "axes" else v
        return cls(**kwargs)


@dataclasses.dataclass
class Values(Result):
    """Plain labelled per-sample values: what ``sel`` gives of a result whose values are derived
    (a scrubbing result's three losses, one measure of a steering sweep)."""

    kind: ClassVar[str] = "values"

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_layout()


def _npy(t: Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, t.detach().cpu().numpy())
    return buf.getvalue()
