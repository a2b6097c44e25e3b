"""Which implementation of the ops runs: Triton kernels or the eager reference.

Default: Triton for CUDA tensors when Triton imports; the reference otherwise. CPU tensors go to
Triton only when the kernels were defined under ``TRITON_INTERPRET=1`` (set before Triton is
imported; that is how the tests run the kernels). ``MECHSCOPE_KERNELS=reference|triton``
overrides the choice. The choice and its reason are logged once per (backend, reason) so a
trainer can copy ``backend_choice()`` into its run manifest.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from kernels import reference

__all__ = ["BACKENDS", "Backend", "backend_choice", "get_backend"]

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("reference", "triton")
_ENV = "MECHSCOPE_KERNELS"
_logged: set[tuple[str, str]] = set()
_triton_ops: ModuleType | None = None
_triton_error: str | None = None


@dataclasses.dataclass(frozen=True)
class Backend:
    """The ops of one implementation (signatures as in ``kernels.reference``)."""

    name: str
    decode: Callable[..., Any]
    decode_values_grad: Callable[..., Any]
    sparse_t_dense: Callable[..., Any]
    sparse_t_dense_and_sums: Callable[..., Any]
    topk_with_aux: Callable[..., Any]


def _from_module(name: str, module: ModuleType) -> Backend:
    fields = [f.name for f in dataclasses.fields(Backend) if f.name != "name"]
    return Backend(name, **{f: getattr(module, f) for f in fields})


REFERENCE = _from_module("reference", reference)
_triton_backend: Backend | None = None


def _load_triton() -> ModuleType | None:
    """Import the Triton launchers once; remember why it failed if it did."""
    global _triton_ops, _triton_error
    if _triton_ops is None and _triton_error is None:
        try:
            _triton_ops = importlib.import_module("kernels.triton_ops")
        except Exception as err:  # ImportError, or Triton failing to initialise
            _triton_error = f"{type(err).__name__}: {err}"
    return _triton_ops


def _requested() -> str | None:
    value = os.environ.get(_ENV, "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f"{_ENV}={value!r} is not a kernel backend; valid values: {BACKENDS}")
    return value


def backend_choice(device: torch.device | str | None = None) -> tuple[str, str]:
    """(backend name, one-line reason) for tensors on ``device`` (default: CUDA if present)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    requested = _requested()
    if requested == "reference":
        return "reference", f"{_ENV}=reference"
    if device.type not in ("cpu", "cuda"):
        if requested == "triton":
            raise RuntimeError(f"{_ENV}=triton but Triton has no path for {device.type} tensors")
        return "reference", f"no Triton path for {device.type} tensors"
    interp_env = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type == "cpu" and not requested and _triton_ops is None and not interp_env:
        # Decided without importing Triton: CPU tensors need the interpreter.
        return "reference", "CPU tensors (Triton runs them only under TRITON_INTERPRET=1)"
    ops = _load_triton()
    if ops is None:
        if requested == "triton":
            raise RuntimeError(f"{_ENV}=triton but Triton cannot be imported ({_triton_error})")
        return "reference", f"Triton not importable ({_triton_error})"
    interpreted = bool(ops.INTERPRETED)
    if device.type == "cuda" and not interpreted:
        why = f"{_ENV}=triton" if requested else "CUDA tensors and Triton importable"
        return "triton", why
    if device.type == "cpu" and interpreted:
        why = f"{_ENV}=triton" if requested else "CPU tensors"
        return "triton", f"{why}, Triton interpreter (TRITON_INTERPRET=1)"
    if requested == "triton":
        raise RuntimeError(
            f"{_ENV}=triton but Triton cannot run on {device.type} tensors here "
            f"(interpreter {'on' if interpreted else 'off'}); CPU tensors need TRITON_INTERPRET=1 "
            "set before Triton is imported, CUDA tensors need it unset"
        )
    return "reference", f"{device.type} tensors and Triton " + (
        "interpreted" if interpreted else "compiled for CUDA only"
    )


def get_backend(device: torch.device | str | None = None) -> Backend:
    """The ops to use for tensors on ``device``; logs the choice the first time it is made."""
    name, reason = backend_choice(device)
    if (name, reason) not in _logged:
        _logged.add((name, reason))
        log.info("mechscope kernels: %s backend (%s)", name, reason)
    if name == "reference":
        return REFERENCE
    global _triton_backend
    if _triton_backend is None:
        ops = _load_triton()
        assert ops is not None
        backend = _from_module("triton", ops)
        if _weight_grad_choice(bool(ops.INTERPRETED)) == "gemm":
            backend = dataclasses.replace(
                backend,
                sparse_t_dense=reference.sparse_t_dense_gemm,
                sparse_t_dense_and_sums=reference.sparse_t_dense_and_sums_gemm,
            )
        _triton_backend = backend
    return _triton_backend


_DW_ENV = "MECHSCOPE_DW"


def _weight_grad_choice(interpreted: bool) -> str:
    """How the Triton backend computes dW: the by-latent kernel, or scatter + a cuBLAS GEMM (bf16 under autocast).

    On CUDA the GEMM is the default: on an H200 at (768, 24576, k 32, batch 4096) it took 0.19 ms
    per weight gradient against 0.80 ms for the kernel, and the whole step went from 1.06x to
    1.38x the dense path (docs/benchmarks.md). Under the interpreter the kernel is the default, so
    the tests exercise it. ``MECHSCOPE_DW=kernel|gemm`` overrides.
    """
    value = os.environ.get(_DW_ENV, "").strip().lower()
    if value and value not in ("kernel", "gemm"):
        raise ValueError(f"{_DW_ENV}={value!r} is not valid; choose 'kernel' or 'gemm'")
    return value or ("kernel" if interpreted else "gemm")
