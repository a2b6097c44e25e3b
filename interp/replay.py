"""Replay a saved artifact from its recipe and compare the numbers: ``python -m interp replay DIR``.

The recipe in ``DIR/run.json`` (:mod:`interp.recipe`) names the call, every argument, the model
(how it was loaded and its weight fingerprint) and the steps taken on the result afterwards
(``normalized()``, ``sel(...)``). :func:`replay` loads the model, checks the fingerprint, makes
the call again, repeats the steps, reads the saved artifact back and compares every number in it
with the new one: tensors cell by cell, scalars as they are. Metadata (timings, run manifests,
the recipe itself) is not compared.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from interp._io import read_json, remove_tree
from interp.manifest import RUN_MANIFEST_NAME, read_run_manifest
from interp.recipe import RECIPE_FORMAT, NotReplayableError, _resolve, decode

__all__ = ["Comparison", "ReplayReport", "numbers", "recipe_of", "replay"]


class Comparison(NamedTuple):
    """One number (or tensor) of the artifact: saved vs replayed."""

    name: str
    shape: tuple[int, ...]
    old_mean: float
    new_mean: float
    max_abs_diff: float
    ok: bool


@dataclasses.dataclass
class ReplayReport:
    """What :func:`replay` found: one :class:`Comparison` per number; ``ok`` if all agree."""

    directory: str
    call: str
    rows: list[Comparison]
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def table(self) -> str:
        head = f"{'number':<28} {'shape':<14} {'saved':>12} {'replayed':>12} {'max |diff|':>11}  ok"
        lines = [f"replay of {self.directory}: {self.call}", head]
        for r in self.rows:
            shape = "x".join(map(str, r.shape)) or "scalar"
            lines.append(
                f"{r.name:<28} {shape:<14} {r.old_mean:>12.6g} {r.new_mean:>12.6g} "
                f"{r.max_abs_diff:>11.3g}  {'yes' if r.ok else 'NO'}"
            )
        verdict = "identical within" if self.ok else "DIFFERENT beyond"
        lines.append(f"{verdict} atol {self.atol:g} + rtol {self.rtol:g}·|saved|")
        return "\n".join(lines)


def recipe_of(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The recipe saved in ``path/run.json`` (or in the JSON file ``path``, as an SAE's
    ``eval.json``), or an error saying why there is none."""
    p = Path(path)
    if p.suffix == ".safetensors" and p.is_file():  # steering vectors: the manifest in its header
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            doc = json.loads((f.metadata() or {}).get("manifest", "{}"))
    elif p.is_file():
        doc = read_json(p)
    elif (p / RUN_MANIFEST_NAME).is_file():
        doc, p = read_run_manifest(p), p / RUN_MANIFEST_NAME
    else:
        raise FileNotFoundError(
            f"{p} is neither a folder with {RUN_MANIFEST_NAME} nor a JSON file: not a saved "
            "mechscope artifact"
        )
    rec = doc.get("replay") if isinstance(doc, dict) else None
    if not isinstance(rec, dict) or rec.get("format") != RECIPE_FORMAT:
        raise NotReplayableError(
            f"{p} holds no recipe: written before replay existed, or by an artifact kind that "
            f"does not record one ({doc.get('kind') if isinstance(doc, dict) else None!r})"
        )
    if rec.get("unreplayable"):
        raise NotReplayableError(f"{path} cannot be replayed: " + "; ".join(rec["unreplayable"]))
    return rec


def numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, Tensor | float]]:
    """Every tensor and number in ``obj`` (dataclasses, named tuples, dicts, lists), by path;
    metadata (``meta``, manifests) left out."""
    if isinstance(obj, Tensor):
        yield prefix or "value", obj.detach().cpu()
    elif hasattr(obj, "shard_activations") and hasattr(obj, "hooks"):  # an activation store
        for hook in obj.hooks:
            for i in range(len(obj.shards)):
                yield f"{hook}[shard {i}]", obj.shard_activations(i, hook).float()
    elif isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    elif isinstance(obj, (int, float)):
        yield prefix or "value", float(obj)
    elif isinstance(obj, nn.Module):
        for k, v in obj.state_dict().items():
            yield f"{prefix}.{k}" if prefix else k, v.detach().cpu()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name not in ("meta", "manifest", "metadata"):
                yield from numbers(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for k in obj._fields:
            yield from numbers(getattr(obj, k), f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("meta", "manifest", "replay"):
                yield from numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{prefix}[{i}]")


def _compare(
    name: str, old: Tensor | float, new: Tensor | float, atol: float, rtol: float
) -> Comparison:
    o = torch.as_tensor(old, dtype=torch.float64)
    n = torch.as_tensor(new, dtype=torch.float64)
    if o.shape != n.shape:
        return Comparison(name, tuple(o.shape), _mean(o), _mean(n), math.inf, False)
    both_nan = o.isnan() & n.isnan()
    diff = torch.where(both_nan, 0.0, (o - n).abs())
    worst = float(diff.max()) if diff.numel() else 0.0
    ok = bool((diff <= atol + rtol * o.abs().nan_to_num(0.0)).all()) and not diff.isnan().any()
    return Comparison(name, tuple(o.shape), _mean(o), _mean(n), worst, ok)


def _mean(t: Tensor) -> float:
    return float(t.float().nanmean()) if t.numel() else math.nan


def replay(
    directory: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> ReplayReport:
    """Make the artifact in ``directory`` again and compare it with what was saved.

    ``model``: the model to use when the artifact's model was built in code rather than loaded
    by a recorded call; its weight fingerprint must equal the recorded one.
    """
    from interp.models import model_fingerprint

    rec = recipe_of(directory)
    loader = rec.get("load")
    if not loader:
        raise NotReplayableError(f"{directory}: the recipe does not say how to read it back")
    modules: dict[str, nn.Module] = {}
    recorded_model = rec["args"].get("model")
    if model is not None:
        want = (
            recorded_model["__module__"]["fingerprint"]
            if isinstance(recorded_model, dict)
            else None
        )
        have = model_fingerprint(model)
        if want is not None and have != want:
            raise NotReplayableError(
                f"the model given has weight fingerprint {have[:16]}…; {directory} was made with "
                f"{want[:16]}…: not the same model (weights, dtype or configuration differ)"
            )
        modules[have] = model
    fn, load = _resolve(rec["call"]), _resolve(loader)
    kwargs = {name: decode(v, modules=modules) for name, v in rec["args"].items()}
    old = load(directory)
    scratch = None
    if (out := rec.get("output")) is not None:  # the call writes a folder: write a fresh one
        scratch = Path(tempfile.mkdtemp(prefix="mechscope-replay-"))
        kwargs[out] = scratch / "artifact"
    try:
        new = fn(**kwargs)
        for step in rec.get("then", []):
            new = getattr(new, step["op"])(**step["kwargs"])
        if out is not None:
            new = load(new)
        old_numbers, new_numbers = dict(numbers(old)), dict(numbers(new))
    finally:
        if scratch is not None:
            remove_tree(scratch)
    rows = [
        _compare(name, value, new_numbers[name], atol, rtol)
        if name in new_numbers
        else Comparison(
            name, tuple(torch.as_tensor(value).shape), math.nan, math.nan, math.inf, False
        )
        for name, value in old_numbers.items()
    ]
    # Numbers only the rerun has are not compared: the saved artifact may keep a part (a vector
    # file some of the layers extracted); what it keeps must all be there and equal.
    return ReplayReport(str(directory), rec["call"], rows, atol, rtol)
