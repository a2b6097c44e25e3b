"""Argument checks shared by both backends, so a bad call fails the same way on either.

The Triton interpreter does not bounds-check and a GPU gather with a bad index reads garbage, so
the launchers check everything here before any kernel runs. The index-range check needs the
values: on CPU it is always done; on CUDA it costs a device sync, so it runs only when
``MECHSCOPE_CHECK_BOUNDS=1`` (indices made by this package's own top-k are in range by
construction).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = [
    "FLOAT_DTYPES",
    "bounds_check_enabled",
    "check_float",
    "check_indices",
    "check_rows_contiguous",
    "check_same_device",
    "check_shape",
]

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def bounds_check_enabled(device: torch.device) -> bool:
    """Index-range checks: always on CPU, on CUDA only with ``MECHSCOPE_CHECK_BOUNDS=1``."""
    if device.type == "cuda":
        return os.environ.get("MECHSCOPE_CHECK_BOUNDS", "0") == "1"
    return device.type == "cpu"


def check_float(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32, bfloat16 or float16; got {t.dtype} (shape {tuple(t.shape)})"
        )


def check_shape(t: Tensor, name: str, expected: tuple[int | None, ...], what: str) -> None:
    """``expected`` holds a size per dimension, or None where any size is fine."""
    ok = t.dim() == len(expected) and all(
        e is None or e == s for e, s in zip(expected, t.shape, strict=False)
    )
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{name} must have shape {want} ({what}); got {list(t.shape)}")


def check_indices(indices: Tensor, n_rows: int, name: str = "indices") -> None:
    """int64 latent ids, 2-D; their range is checked where that is cheap (see module doc)."""
    if not isinstance(indices, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(indices).__name__}")
    if indices.dtype != torch.int64:
        raise TypeError(
            f"{name} must be int64 (as torch.topk returns); got {indices.dtype}. "
            f"Convert with {name}.long()"
        )
    if indices.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, k]; got {list(indices.shape)}")
    if indices.numel() and bounds_check_enabled(indices.device):
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_rows:
            raise ValueError(
                f"{name} must lie in [0, {n_rows}) (the number of latents); "
                f"got values from {lo} to {hi}"
            )


def check_rows_contiguous(t: Tensor, name: str) -> None:
    """Weight matrices are read row by row: their last dimension must be contiguous.

    They are not copied silently, since a copy of a d_sae × d_in matrix per call would hide a
    large cost; a row-strided view (stride(1) == 1) is fine.
    """
    if t.stride(-1) != 1:
        raise ValueError(
            f"{name} must have contiguous rows (stride(-1) == 1); got strides {t.stride()}. "
            f"Pass {name}.contiguous()"
        )


def check_same_device(**tensors: Tensor | None) -> torch.device:
    devices = {k: v.device for k, v in tensors.items() if v is not None}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listing = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"all tensors must be on one device; got {listing}")
    return first
