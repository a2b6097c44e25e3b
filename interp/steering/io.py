"""Save and load steering vectors: one safetensors file, metadata and run manifest inside, atomic.

Each vector is stored as tensor ``"{site}.{layer}"``; the file's metadata holds, per vector, its
layer, hook name, site, method, threshold and extraction metadata (model fingerprint, data hash,
position, ...), plus the run manifest (package versions, git commit).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save as st_save

from interp._io import atomic_write_bytes
from interp.hooks import TLModel
from interp.manifest import run_manifest
from interp.steering.extraction import fingerprint
from interp.steering.vector import SteeringVector, check_width

__all__ = ["FORMAT", "ModelMismatchError", "load_vectors", "save_vectors"]

FORMAT = "mechscope.steering/1"

Vectors = SteeringVector | Sequence[SteeringVector] | Mapping[Any, SteeringVector]


class ModelMismatchError(ValueError):
    """The vectors were extracted from a model other than the one given."""


def _as_list(vectors: Vectors) -> list[SteeringVector]:
    if isinstance(vectors, SteeringVector):
        return [vectors]
    items = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    if not items or not all(isinstance(v, SteeringVector) for v in items):
        raise ValueError("save_vectors needs one or more SteeringVectors")
    return items


def save_vectors(
    path: str | os.PathLike[str], vectors: Vectors, *, config: dict[str, Any] | None = None
) -> Path:
    """Write ``vectors`` to ``path`` (a ``.safetensors`` file) atomically."""
    items = _as_list(vectors)
    keys = [f"{v.site}.{v.layer}" for v in items]
    layers = [v.layer for v in items]
    if len(set(layers)) != len(layers):  # load_vectors returns {layer: vector}
        raise ValueError(
            f"two vectors share a layer ({', '.join(keys)}): a file holds one vector per layer, "
            "so save them to separate files"
        )
    entries: list[dict[str, Any]] = [
        {
            "key": k,
            "layer": v.layer,
            "site": v.site,
            "hook_name": v.hook_name,
            "method": v.method,
            "threshold": v.threshold,
            "metadata": {k: x for k, x in v.metadata.items() if k != "replay"},
        }
        for k, v in zip(keys, items, strict=True)
    ]
    data = {
        e["metadata"].get("data_sha256"): {"what": "contrastive prompts"}
        for e in entries
        if e["metadata"].get("data_sha256")
    }
    recipes = [v.metadata.get("replay") for v in items]  # from one extract() call: replayable
    first: dict[str, Any] = recipes[0] if isinstance(recipes[0], dict) else {}
    same = bool(first) and all(r == first for r in recipes)
    manifest = run_manifest(
        kind="steering_vectors",
        config=config or {},
        data=data,
        extra={"replay": first | {"load": "interp.steering.io:load_vectors"} if same else None},
    )
    meta = {
        "format": FORMAT,
        "vectors": json.dumps(entries, default=str),
        "manifest": json.dumps(manifest, default=str),
    }
    tensors = {
        k: v.vector.detach().float().cpu().contiguous() for k, v in zip(keys, items, strict=True)
    }
    path = Path(path)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    return path


def load_vectors(
    path: str | os.PathLike[str], *, model: TLModel | None = None
) -> dict[int, SteeringVector]:
    """Vectors by layer. With ``model``, refuse vectors made on another model (by fingerprint)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a mechscope steering-vector file (format {meta.get('format')!r})"
            )
        entries = json.loads(meta["vectors"])
        tensors = {e["key"]: f.get_tensor(e["key"]) for e in entries}
    out: dict[int, SteeringVector] = {}
    for e in entries:
        vec = SteeringVector(
            tensors[e["key"]], e["layer"], e["site"], e["method"], e["threshold"], e["metadata"]
        )
        if e["layer"] in out:
            raise ValueError(
                f"{path} holds several vectors for layer {e['layer']}; load_vectors returns one "
                "per layer"
            )
        out[e["layer"]] = vec
    if model is not None:
        _check_model(model, out, path)
    return out


def _check_model(model: TLModel, vectors: dict[int, SteeringVector], path: Any) -> None:
    fp = fingerprint(model)
    for v in vectors.values():
        check_width(model, v.vector, v.hook_name)
        want = v.metadata.get("model_fingerprint")
        if want and want != fp:
            raise ModelMismatchError(
                f"{path}: the vector at {v.hook_name} was extracted from model {want[:12]}…, but "
                f"the model given has fingerprint {fp[:12]}…; pass model=None to load anyway"
            )
