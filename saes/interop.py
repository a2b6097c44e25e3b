"""Convert between mechscope SAEs and SAELens (``sae_lens`` 6.x) SAEs, in memory or on disk.

- ``topk`` ↔ ``topk`` (``TopKSAE``, exported with ``rescale_acts_by_decoder_norm=False``)
- ``batchtopk`` → ``jumprelu`` with every threshold = the BatchTopK inference threshold (how SAELens
  saves its own BatchTopK SAEs); metadata ``training_architecture="batchtopk"`` + ``k`` bring it back
- ``jumprelu`` ↔ ``jumprelu`` (θ copied as it is; imports train θ directly, the default, and a
  ``log`` SAE exports ``exp(log_threshold)``); ``relu`` ↔ ``standard``
- ``matryoshka_batchtopk`` ↔ ``matryoshka_batchtopk`` (SAELens's training class
  ``MatryoshkaBatchTopKTrainingSAE``, the only one that carries the prefix widths; exported through
  sae_lens, so not under TransformerLens 4); SAELens's inference save of one (``jumprelu`` with
  ``training_architecture="matryoshka_batchtopk"`` and the widths in the metadata) imports back too
- ``gated`` ↔ ``gated`` (``b_gate`` is our ``b_enc``; ``r_mag``, ``b_mag`` as they are)
- transcoders: ``relu`` ↔ ``transcoder``, ``jumprelu``/``batchtopk`` ↔ ``jumprelu_transcoder``
  (``skip_`` variants with a skip connection; a JumpReLU with one threshold and ``k`` in the
  metadata comes back as BatchTopK); ``topk`` is refused (SAELens 6 has no TopK transcoder)

Exports always use the folded SAE (input scale in the weights), ``apply_b_dec_to_input=True`` and
``normalize_activations="none"``, so ``encode``/``decode`` agree with ours on raw activations.
``sae_lens`` is imported lazily: it pulls in TransformerLens and takes seconds to import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from interp._io import fsync_dir, read_json
from saes import saelens_format
from saes.config import SAEConfig
from saes.sae import _DTYPES, FORMAT, SAE

if TYPE_CHECKING:
    import sae_lens

__all__ = [
    "SUPPORTED_SAELENS_ARCHITECTURES",
    "InteropError",
    "UnsupportedArchitectureError",
    "export_to_saelens",
    "from_saelens",
    "import_from_saelens",
    "read_saelens_folder",
    "to_saelens",
]

log = logging.getLogger(__name__)

# SAELens architecture names we can represent exactly ("batchtopk" is its training-only class).
TRANSCODER_ARCHITECTURES: tuple[str, ...] = (
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
)
SUPPORTED_SAELENS_ARCHITECTURES: tuple[str, ...] = (
    "topk",
    "batchtopk",
    "jumprelu",
    "standard",
    "matryoshka_batchtopk",
    "gated",
    *TRANSCODER_ARCHITECTURES,
)
_TRAINING_ONLY = ("batchtopk", "matryoshka_batchtopk")  # SAELens keeps these as training classes
_SAELENS_CFG = "cfg.json"
_SAELENS_WEIGHTS = "sae_weights.safetensors"
_SAELENS_NAME = {"relu": "standard"}  # the other activations keep their names
# Normalisations SAELens's encode/decode ignore at inference (the trainer applies and folds them).
_INERT_NORMS = ("expected_average_only_in", "covariance_whitening")


class InteropError(ValueError):
    """An SAE that cannot be converted, or a path that does not hold one."""


class UnsupportedArchitectureError(InteropError):
    """A SAELens architecture mechscope has no equivalent for."""


# ---- mechscope -> SAELens --------------------------------------------------------------------------
def _export_metadata(sae: SAE, extra: dict[str, Any] | None) -> dict[str, Any]:
    md = {k: v for k, v in sae.cfg.metadata.items() if _jsonable(v)}
    # SAELens reads hook_name/model_name; mechscope metadata is free-form, so accept short aliases.
    for ours, theirs in (("hook", "hook_name"), ("model", "model_name")):
        if theirs not in md and isinstance(md.get(ours), str):
            md[theirs] = md[ours]
    md["training_architecture"] = _SAELENS_NAME.get(sae.cfg.activation, sae.cfg.activation)
    if sae.cfg.activation in ("topk", "batchtopk"):
        md["training_architecture_details"] = {"k": sae.cfg.k}
    if sae.cfg.matryoshka_widths is not None:
        md["training_architecture_details"] = {
            "k": sae.cfg.k,
            "matryoshka_widths": list(sae.cfg.matryoshka_widths),
        }
    md["exported_from"] = "mechscope"
    md["mechscope_activation"] = sae.cfg.activation
    md.update(extra or {})
    bad = [k for k, v in md.items() if not _jsonable(v)]
    if bad:
        raise InteropError(f"metadata values must be JSON-serialisable; these are not: {bad}")
    return md


def _saelens_files(
    sae: SAE, metadata: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``cfg.json`` and the tensors of the SAELens inference SAE equal to ``sae`` (eval mode), as
    :func:`to_saelens` builds it, without sae_lens."""
    src = sae.folded() if float(sae.input_scale) != 1.0 else sae
    act, dtype = src.cfg.activation, _DTYPES[src.cfg.dtype]
    state = {
        n: getattr(src, n).detach().to("cpu", dtype).clone().contiguous()
        for n in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    arch = {"topk": "topk", "relu": "standard", "gated": "gated"}.get(act, "jumprelu")
    if arch == "gated":
        _gated_state(src, state)
    if arch == "jumprelu":
        act_mod: Any = src.act
        state["threshold"] = (
            _batchtopk_threshold(act_mod, src.cfg.d_sae, dtype) if act == "batchtopk"
            else act_mod.threshold.detach().to("cpu", dtype).clone()
        ).contiguous()  # fmt: skip
    cfg = saelens_format.sae_config(
        d_in=src.cfg.d_in, d_sae=src.cfg.d_sae, dtype=src.cfg.dtype, architecture=arch,
        metadata=_export_metadata(sae, metadata), k=src.cfg.k if arch == "topk" else None,
    )  # fmt: skip
    return cfg, state


def to_saelens(sae: SAE, *, metadata: dict[str, Any] | None = None) -> sae_lens.SAE[Any]:
    """The SAELens inference SAE computing the same ``encode``/``decode`` as ``sae`` (in eval mode);
    for a Matryoshka SAE, SAELens's training class (the one class that keeps its widths), whose
    ``encode`` is batch top-k like ours in training mode."""
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    if sae.cfg.is_transcoder:
        return _transcoder_to_saelens(sae, metadata)
    if sae.cfg.activation == "matryoshka_batchtopk":
        return _matryoshka_to_saelens(sae, metadata)
    src = sae.folded() if float(sae.input_scale) != 1.0 else sae
    act = src.cfg.activation
    common: dict[str, Any] = {
        "d_in": src.cfg.d_in,
        "d_sae": src.cfg.d_sae,
        "dtype": src.cfg.dtype,
        "device": "meta",  # as SAELens's own loader: skip the random init, weights are assigned
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": SAEMetadata(**_export_metadata(sae, metadata)),
    }
    state = {
        name: getattr(src, name).detach().to("cpu").clone().contiguous()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    cls: Any
    if act == "topk":
        # Our TopK ranks raw pre-activations; SAELens's rescaling would rank pre·‖W_dec‖ and
        # divide codes by ‖W_dec‖ (≠ 1 once an input scale is folded), so it must be off.
        cfg: Any = TopKSAEConfig(k=src.cfg.k, rescale_acts_by_decoder_norm=False, **common)
        cls = TopKSAE
    elif act in ("batchtopk", "jumprelu"):
        act_mod: Any = src.act
        if act == "batchtopk":
            t = float(act_mod.threshold)
            if t < 0:
                raise InteropError(
                    "this BatchTopK SAE has no inference threshold yet (it was never trained); "
                    "SAELens runs BatchTopK SAEs as JumpReLU with that threshold"
                )
            threshold = torch.full((src.cfg.d_sae,), t, dtype=state["b_enc"].dtype)
        else:
            threshold = act_mod.threshold.detach().to("cpu", state["b_enc"].dtype).clone()
        state["threshold"] = threshold.contiguous()
        cfg, cls = JumpReLUSAEConfig(**common), JumpReLUSAE
    elif act == "gated":
        _gated_state(src, state)
        cfg, cls = GatedSAEConfig(**common), GatedSAE
    else:  # relu (SAEConfig validates activation names)
        cfg, cls = StandardSAEConfig(**common), StandardSAE
    out = cls(cfg)
    out.cfg.device = "cpu"
    out.load_state_dict(state, assign=True)
    return out.to(device="cpu", dtype=_DTYPES[src.cfg.dtype]).eval()  # type: ignore[no-any-return]


def _gated_state(src: SAE, state: dict[str, Tensor]) -> None:
    """SAELens's gated tensors: b_gate is our b_enc; r_mag and b_mag live in the activation."""
    gate: Any = src.act
    state["b_gate"] = state.pop("b_enc")
    dtype = state["b_gate"].dtype
    state |= {n: getattr(gate, n).detach().to("cpu", dtype).clone() for n in ("r_mag", "b_mag")}


def _matryoshka_to_saelens(sae: SAE, metadata: dict[str, Any] | None) -> sae_lens.SAE[Any]:
    """SAELens's ``MatryoshkaBatchTopKTrainingSAE`` with our weights, widths, k and threshold
    (no decoder-norm rescaling: ours keeps unit-norm rows and ranks raw pre-activations)."""
    import sae_lens as slm
    from sae_lens.saes.sae import SAEMetadata

    src = sae.folded() if float(sae.input_scale) != 1.0 else sae
    act_mod: Any = src.act
    t = float(act_mod.threshold)
    if t < 0:
        raise InteropError(
            "this Matryoshka SAE has no inference threshold yet (it was never trained); SAELens "
            "runs it at inference as JumpReLU with that threshold"
        )
    assert src.cfg.matryoshka_widths is not None
    cfg = slm.MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=src.cfg.d_in,
        d_sae=src.cfg.d_sae,
        k=src.cfg.k,
        matryoshka_widths=list(src.cfg.matryoshka_widths),
        rescale_acts_by_decoder_norm=False,
        topk_threshold_lr=act_mod.momentum,
        dtype=src.cfg.dtype,
        device="meta",
        apply_b_dec_to_input=True,
        normalize_activations="none",
        metadata=SAEMetadata(**_export_metadata(sae, metadata)),
    )
    out = slm.MatryoshkaBatchTopKTrainingSAE(cfg)
    out.cfg.device = "cpu"
    state = {
        n: getattr(src, n).detach().to("cpu").clone().contiguous()
        for n in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    state["topk_threshold"] = torch.tensor(t, dtype=torch.double)  # SAELens keeps it in float64
    out.load_state_dict(state, assign=True)
    return out  # type: ignore[no-any-return]


def _batchtopk_threshold(act_mod: Any, d_sae: int, dtype: torch.dtype) -> Tensor:
    t = float(act_mod.threshold)
    if t < 0:
        raise InteropError(
            "this BatchTopK SAE has no inference threshold yet (it was never trained); "
            "SAELens runs BatchTopK SAEs as JumpReLU with that threshold"
        )
    return torch.full((d_sae,), t, dtype=dtype)


def _transcoder_to_saelens(tc: SAE, metadata: dict[str, Any] | None) -> sae_lens.SAE[Any]:
    """relu -> ``Transcoder``, jumprelu and batchtopk -> ``JumpReLUTranscoder`` (with ``Skip``
    variants for a skip connection); SAELens has no TopK transcoder."""
    import sae_lens as slm
    from sae_lens.saes.sae import SAEMetadata

    act, skip = tc.cfg.activation, tc.cfg.skip_connection
    if act == "topk":
        raise InteropError(
            "SAELens (this version) has no TopK transcoder: its transcoders are relu "
            "('transcoder', 'skip_transcoder') and JumpReLU ('jumprelu_transcoder', "
            "'jumprelu_skip_transcoder'); export a relu, jumprelu or batchtopk transcoder"
        )
    src = tc.folded() if float(tc.input_scale) != 1.0 else tc
    names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["W_skip"] if skip else [])
    state = {n: getattr(src, n).detach().to("cpu").clone().contiguous() for n in names}
    if act == "relu":
        cfg_cls, cls = (
            (slm.SkipTranscoderConfig, slm.SkipTranscoder)
            if skip
            else (slm.TranscoderConfig, slm.Transcoder)
        )
    else:  # jumprelu, batchtopk (SAEConfig validates activation names)
        cfg_cls, cls = (
            (slm.JumpReLUSkipTranscoderConfig, slm.JumpReLUSkipTranscoder)
            if skip
            else (slm.JumpReLUTranscoderConfig, slm.JumpReLUTranscoder)
        )
        act_mod: Any = src.act
        dtype = state["b_enc"].dtype
        if act == "batchtopk":
            threshold = _batchtopk_threshold(act_mod, src.cfg.d_sae, dtype)
        else:
            threshold = act_mod.threshold.detach().to("cpu", dtype).clone()
        state["threshold"] = threshold.contiguous()
    md = _export_metadata(tc, metadata)
    md["mechscope_kind"] = "transcoder"
    cfg = cfg_cls(
        d_in=src.cfg.d_in,
        d_sae=src.cfg.d_sae,
        d_out=src.cfg.out_width,
        dtype=src.cfg.dtype,
        device="meta",
        apply_b_dec_to_input=False,  # a transcoder's b_dec is in the output space
        normalize_activations="none",
        metadata=SAEMetadata(**md),
    )
    out = cls(cfg)
    out.cfg.device = "cpu"
    out.load_state_dict(state, assign=True)
    return out.to(device="cpu", dtype=_DTYPES[src.cfg.dtype]).eval()  # type: ignore[no-any-return]


def export_to_saelens(
    sae: SAE,
    directory: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``sae`` as a folder that ``sae_lens.SAE.load_from_disk`` loads.

    The folder is written under a temporary name next to ``directory`` and renamed into place, so
    ``directory`` is either absent/unchanged or complete. An existing non-empty ``directory`` is
    replaced only with ``overwrite=True``. ``metadata`` adds or overrides SAELens metadata keys.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a folder")
    if directory.exists() and not overwrite and not _is_empty_dir(directory):
        raise FileExistsError(f"{directory} exists and is not empty (pass overwrite=True)")
    # Conversion errors surface before any write. SAEs are written by format (no sae_lens
    # needed, so TransformerLens 4 environments export too); transcoders and Matryoshka SAEs
    # (a training-class folder) through SAELens.
    via_saelens = sae.cfg.is_transcoder or sae.cfg.activation == "matryoshka_batchtopk"
    if via_saelens and importlib.util.find_spec("sae_lens") is None:
        raise InteropError(
            f"exporting a {sae.cfg.activation} {sae.kind} goes through sae_lens (its class "
            "defines the format), which is not installed here (it needs transformer-lens<4)"
        )
    converted = to_saelens(sae, metadata=metadata) if via_saelens else None
    files = None if converted is not None else _saelens_files(sae, metadata)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if files is not None:
            saelens_format.write_folder(tmp, *files)
        else:
            assert converted is not None
            converted.save_model(tmp)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(tmp)
        _move_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(directory.parent)
    log.info("exported %s SAE to %s (SAELens format)", sae.cfg.activation, directory)
    return directory


def _move_into_place(tmp: Path, directory: Path) -> None:
    if not directory.exists():
        os.rename(tmp, directory)
        return
    if _is_empty_dir(directory):
        directory.rmdir()
        os.rename(tmp, directory)
        return
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(directory, old)
    try:
        os.rename(tmp, directory)
    except BaseException:
        os.rename(old, directory)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---- SAELens -> mechscope --------------------------------------------------------------------------
def import_from_saelens(
    source: sae_lens.SAE[Any] | str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
) -> SAE:
    """A mechscope ``SAE`` or ``Transcoder`` (eval mode) with the same ``encode``/``decode`` as a
    SAELens SAE or transcoder (and, for a skip transcoder, the same skip term).

    ``source`` is a SAELens ``SAE`` object or a folder saved by SAELens (``cfg.json`` +
    ``sae_weights.safetensors``). Architectures without a mechscope equivalent are refused.
    """
    if isinstance(source, (str, os.PathLike)):
        if importlib.util.find_spec("sae_lens") is None:  # TransformerLens 4: by format
            out = read_saelens_folder(source)
            return out.to(device) if device is not None else out
        source = _load_saelens_folder(Path(source))
    out = from_saelens(source)
    return out.to(device) if device is not None else out


def _load_saelens_folder(path: Path) -> sae_lens.SAE[Any]:
    if not path.is_dir():
        raise InteropError(f"{path} is not a folder holding a SAELens SAE")
    cfg_path, w_path = path / _SAELENS_CFG, path / _SAELENS_WEIGHTS
    raw: Any = None
    if cfg_path.exists():
        try:
            raw = read_json(cfg_path)
        except ValueError as err:
            raise InteropError(f"{cfg_path} is not valid JSON: {err}") from err
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        raise InteropError(f"{path} is a mechscope SAE, not a SAELens one: use saes.sae.SAE.load")
    if not isinstance(raw, dict) or not w_path.exists():
        raise InteropError(
            f"{path} is not a SAELens SAE folder: it needs {_SAELENS_CFG} (a JSON object) "
            f"and {_SAELENS_WEIGHTS}"
        )
    from sae_lens import SAE as SLSAE
    from sae_lens import TrainingSAE
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    arch = handle_config_defaulting(dict(raw)).get("architecture", "standard")
    _check_architecture(arch)
    # BatchTopK and Matryoshka exist in SAELens only as training classes (inference: JumpReLU).
    loader: Any = TrainingSAE if arch in _TRAINING_ONLY else SLSAE
    try:
        return loader.load_from_disk(path, device="cpu")  # type: ignore[no-any-return]
    except Exception as err:  # SAELens raises KeyError/TypeError/safetensors errors alike
        raise InteropError(f"SAELens could not load {path}: {type(err).__name__}: {err}") from err


def _check_architecture(arch: str) -> None:
    if arch not in SUPPORTED_SAELENS_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"SAELens architecture {arch!r} has no mechscope equivalent; supported: "
            f"{', '.join(SUPPORTED_SAELENS_ARCHITECTURES)} (mechscope activations topk, batchtopk, "
            "jumprelu, relu, matryoshka_batchtopk, gated; transcoders)"
        )


def _saelens_classes() -> dict[type, str]:
    """SAELens class -> the architecture we import it as (exact classes: a subclass may change
    encode)."""
    import sae_lens as slm

    return {
        slm.TopKSAE: "topk",
        slm.TopKTrainingSAE: "topk",
        slm.BatchTopKTrainingSAE: "batchtopk",
        slm.MatryoshkaBatchTopKTrainingSAE: "matryoshka_batchtopk",
        slm.JumpReLUSAE: "jumprelu",
        slm.JumpReLUTrainingSAE: "jumprelu",
        slm.StandardSAE: "standard",
        slm.StandardTrainingSAE: "standard",
        slm.GatedSAE: "gated",
        slm.GatedTrainingSAE: "gated",
        slm.Transcoder: "transcoder",
        slm.SkipTranscoder: "skip_transcoder",
        slm.JumpReLUTranscoder: "jumprelu_transcoder",
        slm.JumpReLUSkipTranscoder: "jumprelu_skip_transcoder",
    }


def from_saelens(sl: sae_lens.SAE[Any]) -> SAE:
    """Convert an in-memory SAELens SAE or transcoder (inference or training class); see
    :func:`import_from_saelens`."""
    known = _saelens_classes()
    arch_fn = getattr(getattr(sl, "cfg", None), "architecture", None)
    arch = arch_fn() if callable(arch_fn) else type(sl).__name__
    _check_architecture(arch)
    if type(sl) not in known:
        raise UnsupportedArchitectureError(
            f"{type(sl).__name__} is not supported; supported classes: "
            f"{', '.join(sorted(c.__name__ for c in known))}"
        )
    arch = known[type(sl)]
    cfg = sl.cfg
    md = cfg.metadata
    fields = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "d_out": getattr(cfg, "d_out", None),
        "k": getattr(cfg, "k", None),
        "matryoshka_widths": getattr(cfg, "matryoshka_widths", None),
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": getattr(cfg, "reshape_activations", "none"),
        "rescale_acts_by_decoder_norm": getattr(cfg, "rescale_acts_by_decoder_norm", False),
        "metadata": dict(md.items()) if hasattr(md, "items") else dict(md),
    }
    names = [*_tensor_names(arch), *(["W_skip"] if "skip" in arch else [])]
    tensors = {n: getattr(sl, n).detach().to("cpu").clone() for n in names}
    return _build(arch, fields, tensors, _threshold(sl, arch))


def _tensor_names(arch: str) -> tuple[str, ...]:
    if arch == "gated":
        return ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec")
    return ("W_enc", "b_enc", "W_dec", "b_dec")


def read_saelens_folder(path: str | os.PathLike[str]) -> SAE:
    """A SAELens SAE folder read by format, without ``sae_lens`` (what :func:`import_from_saelens`
    does where SAELens is not installed): inference architectures standard, topk, jumprelu and
    gated (transcoders and training saves need sae_lens)."""
    try:
        cfg, tensors = saelens_format.read_folder(Path(path), _tensor_names(_cfg_arch(path)))
    except ValueError as err:
        raise InteropError(str(err)) from err
    if cfg.get("format") == FORMAT:
        raise InteropError(f"{path} is a mechscope SAE, not a SAELens one: use saes.sae.SAE.load")
    arch = cfg["architecture"]
    _check_architecture(arch)
    if arch in _TRAINING_ONLY or arch in TRANSCODER_ARCHITECTURES:
        raise InteropError(
            f"{path}: a {arch!r} folder is read through sae_lens (a training save or a "
            "transcoder), which is not installed here"
        )
    threshold = tensors["threshold"].clone() if "threshold" in tensors else None
    if arch == "jumprelu" and threshold is None:
        raise InteropError(f"{path}: a jumprelu SAE needs a 'threshold' tensor")
    fields = {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "d_out": None,
        "k": cfg.get("k"),
        "matryoshka_widths": None,
        "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input", True),
        "normalize_activations": cfg.get("normalize_activations", "none"),
        "reshape_activations": cfg.get("reshape_activations", "none"),
        "rescale_acts_by_decoder_norm": cfg.get("rescale_acts_by_decoder_norm", False),
        "metadata": cfg.get("metadata") or {},
    }
    return _build(arch, fields, tensors, threshold)


def _cfg_arch(path: str | os.PathLike[str]) -> str:
    """The ``architecture`` a SAELens folder's ``cfg.json`` names ('' when it cannot be read)."""
    try:
        raw = read_json(Path(path) / _SAELENS_CFG)
    except (OSError, ValueError):
        return ""
    return str(raw.get("architecture", "")) if isinstance(raw, dict) else ""


def _build(
    arch: str, f: dict[str, Any], tensors: dict[str, Tensor], threshold: Tensor | None
) -> SAE:
    """Our dictionary computing a SAELens SAE's (or transcoder's) encode/decode, from its config
    fields and tensors."""
    norm = f["normalize_activations"]
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise InteropError(
            f"normalize_activations={norm!r} rescales each input at run time; mechscope SAEs "
            "only have a fixed input scale"
        )
    if norm in _INERT_NORMS:
        log.warning(
            "SAELens SAE has normalize_activations=%r that was never folded into its weights; "
            "its encode/decode (and so the imported SAE) expect already-normalised inputs",
            norm,
        )
    if f["reshape_activations"] != "none":
        log.warning(
            "SAELens SAE reshapes %s inputs; the imported SAE reads the flattened vectors",
            f["reshape_activations"],
        )
    if arch in TRANSCODER_ARCHITECTURES:
        return _build_transcoder(arch, f, tensors, threshold)

    with torch.no_grad():
        w_enc, w_dec, b_dec = (tensors[n] for n in ("W_enc", "W_dec", "b_dec"))
        b_enc = tensors["b_gate" if arch == "gated" else "b_enc"]
        extra = {n: tensors[n].clone() for n in ("r_mag", "b_mag") if arch == "gated"}
        if f["rescale_acts_by_decoder_norm"]:
            # SAELens ranks pre·‖W_dec_i‖ and decodes codes/‖W_dec_i‖: fold the norms in.
            norms = w_dec.norm(dim=-1)
            w_enc, b_enc, w_dec = w_enc * norms, b_enc * norms, w_dec / norms[:, None]
        if not f["apply_b_dec_to_input"]:
            # We always subtract b_dec before encoding; compensate in b_enc (gated: both paths).
            shift = b_dec @ w_enc
            b_enc = b_enc + shift
            if arch == "gated":
                extra["b_mag"] = extra["b_mag"] + extra["r_mag"].exp() * shift

    activation, k, widths = _our_activation(f, arch, threshold)
    try:
        ours_cfg = SAEConfig(
            d_in=f["d_in"],
            d_sae=f["d_sae"],
            activation=activation,  # type: ignore[arg-type]
            k=k if k is not None else 32,
            dtype=_dtype_name(w_enc.dtype),
            metadata=_import_metadata(f, arch, norm),
            matryoshka_widths=widths,
        )
    except ValueError as err:
        raise InteropError(f"this SAELens {arch} SAE has no mechscope equivalent: {err}") from err
    out = SAE(ours_cfg)
    with torch.no_grad():
        for name, value in {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}.items():
            getattr(out, name).copy_(value)
        for name, value in extra.items():
            getattr(out.act, name).copy_(value)
    _set_threshold(out, threshold)
    return out.eval()


def _build_transcoder(
    arch: str, f: dict[str, Any], tensors: dict[str, Tensor], threshold: Tensor | None
) -> SAE:
    """Our ``Transcoder``: SAELens's computes ``relu(x W_enc + b_enc)`` (times ``[pre > θ]`` for
    JumpReLU) ``W_dec + b_dec`` (+ ``x W_skipᵀ``), as ours does."""
    from saes.transcoder import Transcoder

    skip = "skip" in arch
    activation, k, _ = (
        _our_activation(f, "jumprelu", threshold) if arch.startswith("jumprelu") else ("relu", None, None)
    )  # fmt: skip
    cfg = SAEConfig(
        d_in=f["d_in"],
        d_sae=f["d_sae"],
        d_out=f["d_out"],
        skip_connection=skip,
        activation=activation,  # type: ignore[arg-type]
        k=k if k is not None else 32,
        dtype=_dtype_name(tensors["W_enc"].dtype),
        metadata=_import_metadata(f, arch, f["normalize_activations"]),
    )
    out = Transcoder(cfg)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", *(["W_skip"] if skip else [])):
            getattr(out, name).copy_(tensors[name])
    _set_threshold(out, threshold)
    return out.eval()


@torch.no_grad()
def _set_threshold(out: SAE, threshold: Tensor | None) -> None:
    act: Any = out.act
    if out.cfg.activation == "jumprelu":
        assert threshold is not None
        act.set_threshold_(threshold)  # θ ≤ 0 (SAELens's relu(z)·[z > θ] = relu(z)) becomes 0
    elif out.cfg.activation in ("batchtopk", "matryoshka_batchtopk"):
        assert threshold is not None
        act.threshold.fill_(float(threshold.flatten()[0]))


def _threshold(sl: Any, arch: str) -> Tensor | None:
    if arch in _TRAINING_ONLY:
        return torch.tensor(float(sl.topk_threshold))
    if not arch.startswith("jumprelu"):
        return None
    t = sl.threshold.detach().to("cpu", sl.W_enc.dtype).clone()
    if type(sl).__name__ == "JumpReLUTrainingSAE" and bool((t < 0).any()):
        # The training class gates z·[z > θ] without a ReLU: negative θ lets negative codes through.
        raise InteropError(
            "this JumpReLUTrainingSAE has negative thresholds (SAELens clamps them at each "
            "training step); mechscope's JumpReLU needs positive thresholds"
        )
    return t


def _our_activation(
    f: dict[str, Any], arch: str, threshold: Tensor | None
) -> tuple[str, int | None, tuple[int, ...] | None]:
    """(activation, k, matryoshka widths) for a SAELens architecture."""
    if arch == "standard":
        return "relu", None, None
    if arch == "gated":
        return "gated", None, None
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        if f["k"] is None or not float(f["k"]).is_integer():
            raise InteropError(f"mechscope needs an integer k; this SAELens SAE has k={f['k']}")
        widths = f["matryoshka_widths"] if arch == "matryoshka_batchtopk" else None
        return arch, int(f["k"]), None if widths is None else tuple(widths)
    # A JumpReLU that SAELens (or we) saved from a BatchTopK or Matryoshka SAE: one shared
    # threshold and an integer k in the metadata give back that SAE (its eval mode is the same
    # function); Matryoshka's widths come from the metadata too.
    md = f["metadata"]
    details = md.get("training_architecture_details") or {}
    details = details if isinstance(details, dict) else {}
    k = details.get("k")
    trained_as = md.get("training_architecture")
    if (
        trained_as in _TRAINING_ONLY
        and isinstance(k, (int, float))
        and float(k).is_integer()
        and 1 <= int(k) < f["d_sae"]
        and threshold is not None
        and threshold.numel()
        and bool((threshold == threshold.flatten()[0]).all())
        and float(threshold.flatten()[0]) >= 0
    ):
        widths = details.get("matryoshka_widths")
        if trained_as == "matryoshka_batchtopk" and _valid_widths(widths, int(k), f["d_sae"]):
            return "matryoshka_batchtopk", int(k), tuple(widths)  # type: ignore[arg-type]
        return "batchtopk", int(k), None
    return "jumprelu", None, None


def _valid_widths(widths: Any, k: int, d_sae: int) -> bool:
    try:
        SAEConfig(d_in=1, d_sae=d_sae, activation="matryoshka_batchtopk", k=k,
                  matryoshka_widths=tuple(widths))  # fmt: skip
    except (TypeError, ValueError):
        return False
    return True


def _dtype_name(dtype: torch.dtype) -> str:
    if names := [name for name, dt in _DTYPES.items() if dt == dtype]:
        return names[0]
    raise InteropError(f"unsupported parameter dtype {dtype}; supported: {list(_DTYPES)}")


def _import_metadata(f: dict[str, Any], arch: str, norm: str) -> dict[str, Any]:
    md = {k: v for k, v in f["metadata"].items() if _jsonable(v)}
    md["imported_from"] = "sae_lens"
    md["saelens_architecture"] = arch
    if norm != "none":
        md["saelens_normalize_activations"] = norm
    if f["reshape_activations"] != "none":
        md["saelens_reshape_activations"] = f["reshape_activations"]
    return md


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):  # allow_nan=False also refuses NaN/inf (invalid JSON)
        return False
    return True


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())
