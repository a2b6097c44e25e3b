"""sha256 of every file in a saved SAE, a checkpoint or ``final/``, written beside them and checked
before they are loaded (the activation store does the same per shard)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from interp._io import atomic_write_json, read_json, sha256_file

__all__ = [
    "CHECKSUMS",
    "CorruptCheckpointError",
    "SAELoadError",
    "verify_checkpoint",
    "write_checksums",
]

CHECKSUMS = "checksums.json"


class SAELoadError(RuntimeError):
    """A checkpoint that is missing, corrupted or not a mechscope SAE."""


class CorruptCheckpointError(SAELoadError):
    """A checkpoint file that is missing or does not match the sha256 recorded when it was written."""


def write_checksums(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Record the sha256 of every file in ``directory`` in its ``checksums.json``."""
    directory = Path(directory)
    files = sorted(
        p.name
        for p in directory.iterdir()
        if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")
    )
    digests = {name: sha256_file(directory / name) for name in files}
    atomic_write_json(directory / CHECKSUMS, {"sha256": digests})
    return digests


def verify_checkpoint(directory: str | os.PathLike[str], *, remedy: str | None = None) -> None:
    """Check each file of a checkpoint (or ``final/``) against ``checksums.json``; a directory
    written before checksums were recorded is accepted with a warning."""
    directory = Path(directory)
    if not (directory / CHECKSUMS).exists():
        warnings.warn(
            f"{directory} has no checksums ({CHECKSUMS}; written by an older mechscope): "
            "loading it unverified",
            stacklevel=2,
        )
        return
    try:
        recorded: dict[str, str] = read_json(directory / CHECKSUMS)["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptCheckpointError(f"{directory / CHECKSUMS} is unreadable ({err!r})") from err
    remedy = remedy or f"Delete {directory} (or restore it from a copy)."
    for name, expected in recorded.items():
        path = directory / name
        if not path.exists():
            raise CorruptCheckpointError(f"{path} is missing from the checkpoint. {remedy}")
        actual = sha256_file(path)
        if actual != expected:
            raise CorruptCheckpointError(
                f"{path} is corrupted: its sha256 is {actual} but {expected} was recorded when it "
                f"was written. {remedy}"
            )
