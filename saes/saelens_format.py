"""SAELens's on-disk SAE format, written and read without the ``sae_lens`` package.

A SAELens SAE folder is ``cfg.json`` (the config, with a ``metadata`` object) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``, and ``threshold`` for JumpReLU; a gated SAE has ``b_gate``, ``b_mag`` and ``r_mag``
instead of ``b_enc``). SAELens cannot be installed beside TransformerLens 4,
so mechscope writes and reads the files itself; ``tests/test_saelens_format.py`` checks, where
SAELens is installed, that the files equal what SAELens's own ``save_model`` writes and that
SAELens loads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from interp._io import fsync_dir, read_json

__all__ = [
    "CFG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "read_folder",
    "sae_config",
    "write_folder",
]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# The SAELens release whose save_model output this writer reproduces (recorded in the metadata
# as sae_lens_version where SAELens is not installed to say its own).
FORMAT_VERSION = "6.54.12"
_REQUIRED = ("d_in", "d_sae", "architecture")


def _sae_lens_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sae-lens")
    except PackageNotFoundError:
        return FORMAT_VERSION


def sae_config(
    *, d_in: int, d_sae: int, dtype: str, architecture: str, metadata: dict[str, Any],
    k: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``cfg.json`` for an inference SAE of ``architecture`` (standard, topk, jumprelu, gated), keys in
    SAELens's order; inputs are never normalised (mechscope folds its input scale first)."""
    v = _sae_lens_version()
    cfg: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": v, "sae_lens_training_version": v, **metadata},
    }
    if architecture == "topk":
        cfg |= {"k": k, "rescale_acts_by_decoder_norm": False}
    cfg["architecture"] = architecture
    return cfg


def write_folder(directory: Path, cfg: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Both files into ``directory`` (which exists), flushed to disk."""
    with open(directory / CFG_FILE, "w") as f:
        json.dump(cfg, f)
        f.flush()
        os.fsync(f.fileno())
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
              directory / WEIGHTS_FILE)  # fmt: skip
    with open(directory / WEIGHTS_FILE, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(directory)


def read_folder(
    directory: Path, required: tuple[str, ...] = ("W_enc", "b_enc", "W_dec", "b_dec")
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config and tensors of a SAELens SAE folder; a clear ``ValueError`` when it is not one
    (or lacks a ``required`` tensor: a gated SAE has ``b_gate``, ``b_mag``, ``r_mag``, no ``b_enc``)."""
    cfg_path, w_path = directory / CFG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.exists() or not w_path.exists():
        raise ValueError(
            f"{directory} is not a SAELens SAE folder: it needs {CFG_FILE} and {WEIGHTS_FILE}"
        )
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object")
    if missing := [k for k in _REQUIRED if k not in cfg]:
        raise ValueError(
            f"{cfg_path} lacks {missing}; without sae_lens installed, mechscope reads only "
            "complete configs (SAELens's own loader fills defaults for older files)"
        )
    tensors = load_file(w_path, device="cpu")
    if missing := [k for k in required if k not in tensors]:
        raise ValueError(f"{w_path} lacks the tensors {missing}")
    return cfg, tensors
