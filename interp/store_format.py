"""The on-disk format of an :class:`~interp.store.ActivationStore`: names, version and errors.

What the reader (:mod:`interp.store`) and the writer (:mod:`interp.store_writer`) share, so that
neither imports the other at module level.
"""

from __future__ import annotations

import torch

__all__ = [
    "DTYPES", "FORMAT", "MANIFEST", "META_FILES", "VERSION", "CorruptShardError", "StoreError",
    "StoreMismatchError", "dtype_name", "hook_filename", "shard_dirname",
]  # fmt: skip

FORMAT = "mechscope-activation-store"
VERSION = 1
MANIFEST = "manifest.json"
META_FILES = ("token_ids.npy", "seq_ids.npy", "positions.npy", "contexts.npy")

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


class StoreError(RuntimeError):
    """A store that cannot be read or written as asked."""


class CorruptShardError(StoreError):
    """A shard whose files are missing or do not match their recorded sha256."""

    def __init__(self, message: str, shards: list[int]):
        super().__init__(message)
        self.shards = shards


class StoreMismatchError(StoreError):
    """Writing into an existing store with a different model, hook, dtype or data."""


def dtype_name(dtype: torch.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"unsupported store dtype {dtype}; choose one of {sorted(DTYPES)}")


def shard_dirname(index: int) -> str:
    return f"shard_{index:05d}"


def hook_filename(hook: str) -> str:
    return f"{hook}.npy"
