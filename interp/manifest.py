"""Run manifests: what made an artifact, so another researcher can replay it exactly.

Every artifact the project writes (an activation store, a trained checkpoint, an SAE, a sweep)
gets a ``run.json`` beside it with the config, the seed, package versions, the git commit of
mechscope and the hashes of the data it read.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from interp._io import atomic_write_json, read_json

__all__ = [
    "RUN_MANIFEST_NAME",
    "git_commit",
    "package_versions",
    "read_run_manifest",
    "run_manifest",
    "set_source",
    "source_of",
    "sourced",
    "write_run_manifest",
]

RUN_MANIFEST_NAME = "run.json"
_SOURCE_ATTR = "mechscope_source"

_PACKAGES = (
    "mechscope",
    "torch",
    "transformer-lens",
    "sae-lens",
    "transformers",
    "numpy",
    "safetensors",
    "triton",
    "einops",
    "plotly",
    "jaxtyping",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any]:
    """The commit of the mechscope checkout this code runs from, and whether it had local edits."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def run_manifest(
    *,
    kind: str,
    config: dict[str, Any],
    seed: int | None = None,
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a manifest. ``data`` maps each input (corpus, tokens, store) to its hash and description."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "seed": seed,
        "data": data or {},
        "packages": package_versions(),
        "git": git_commit(),
        "platform": {"system": platform.platform(), "machine": platform.machine()},
        "argv": list(sys.argv),
        "env": {
            k: os.environ[k]
            for k in ("MECHSCOPE_KERNELS", "CUDA_VISIBLE_DEVICES")
            if k in os.environ
        },
        **(extra or {}),
    }


def write_run_manifest(directory: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Build a manifest with :func:`run_manifest` and write it atomically as ``directory/run.json``."""
    manifest = run_manifest(**kwargs)
    atomic_write_json(Path(directory) / RUN_MANIFEST_NAME, manifest)
    return manifest


def read_run_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(Path(directory) / RUN_MANIFEST_NAME)


def set_source(obj: Any, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Record on ``obj`` (a model, a dictionary) that it is what ``call(*args, **kwargs)``
    returns, so a recipe can name how to make it again (:mod:`interp.recipe`); returns ``obj``."""
    object.__setattr__(obj, _SOURCE_ATTR, {"call": call, "args": args, "kwargs": kwargs})
    return obj


def source_of(obj: Any) -> dict[str, Any] | None:
    """What :func:`set_source` recorded on ``obj``, or None."""
    return getattr(obj, _SOURCE_ATTR, None)


def sourced(factory: Any) -> Any:
    """Decorate a factory (of metrics, features, models) so what it returns remembers the call
    that made it (:func:`set_source`): a recipe then records the call, not the closure."""

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return set_source(factory(*args, **kwargs), wrapper, *args, **kwargs)

    return wrapper
