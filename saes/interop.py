"""Convert between mechscope SAEs and SAELens (``sae_lens`` 6.x) SAEs, in memory or on disk.

- ``topk`` ↔ ``topk`` (``TopKSAE``, exported with ``rescale_acts_by_decoder_norm=False``)
- ``batchtopk`` → ``jumprelu`` with every threshold = the BatchTopK inference threshold (how SAELens
  saves its own BatchTopK SAEs); metadata ``training_architecture="batchtopk"`` + ``k`` bring it back
- ``jumprelu`` ↔ ``jumprelu`` (``threshold = exp(log_threshold)``); ``relu`` ↔ ``standard``
- transcoders (export only): ``relu`` → ``transcoder``, ``jumprelu``/``batchtopk`` →
  ``jumprelu_transcoder`` (``skip_`` variants with a skip connection); ``topk`` is refused
  (SAELens 6 has no TopK transcoder). Importing SAELens transcoders is not supported yet.

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
SUPPORTED_SAELENS_ARCHITECTURES: tuple[str, ...] = ("topk", "batchtopk", "jumprelu", "standard")
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
    arch = {"topk": "topk", "relu": "standard"}.get(act, "jumprelu")
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
    """The SAELens inference SAE computing the same ``encode``/``decode`` as ``sae`` (in eval mode)."""
    from sae_lens import (
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
    else:  # relu (SAEConfig validates activation names)
        cfg, cls = StandardSAEConfig(**common), StandardSAE
    out = cls(cfg)
    out.cfg.device = "cpu"
    out.load_state_dict(state, assign=True)
    return out.to(device="cpu", dtype=_DTYPES[src.cfg.dtype]).eval()  # type: ignore[no-any-return]


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
    # needed, so TransformerLens 4 environments export too); transcoders through SAELens.
    converted = to_saelens(sae, metadata=metadata) if sae.cfg.is_transcoder else None
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
    """A mechscope ``SAE`` (eval mode) with the same ``encode``/``decode`` as a SAELens SAE.

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
    # BatchTopK exists in SAELens only as a training class (its inference form is JumpReLU).
    loader: Any = TrainingSAE if arch == "batchtopk" else SLSAE
    try:
        return loader.load_from_disk(path, device="cpu")  # type: ignore[no-any-return]
    except Exception as err:  # SAELens raises KeyError/TypeError/safetensors errors alike
        raise InteropError(f"SAELens could not load {path}: {type(err).__name__}: {err}") from err


def _check_architecture(arch: str) -> None:
    if arch not in SUPPORTED_SAELENS_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"SAELens architecture {arch!r} has no mechscope equivalent; supported: "
            f"{', '.join(SUPPORTED_SAELENS_ARCHITECTURES)} (mechscope activations topk, batchtopk, "
            "jumprelu, relu)"
        )


def from_saelens(sl: sae_lens.SAE[Any]) -> SAE:
    """Convert an in-memory SAELens SAE (inference or training class); see :func:`import_from_saelens`."""
    import sae_lens as slm

    known = {
        slm.TopKSAE: "topk",
        slm.TopKTrainingSAE: "topk",
        slm.BatchTopKTrainingSAE: "batchtopk",
        slm.JumpReLUSAE: "jumprelu",
        slm.JumpReLUTrainingSAE: "jumprelu",
        slm.StandardSAE: "standard",
        slm.StandardTrainingSAE: "standard",
    }
    arch_fn = getattr(getattr(sl, "cfg", None), "architecture", None)
    arch = arch_fn() if callable(arch_fn) else type(sl).__name__
    _check_architecture(arch)
    if type(sl) not in known:  # a subclass may change encode (e.g. transcoders, matryoshka)
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
        "k": getattr(cfg, "k", None),
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": getattr(cfg, "reshape_activations", "none"),
        "rescale_acts_by_decoder_norm": getattr(cfg, "rescale_acts_by_decoder_norm", False),
        "metadata": dict(md.items()) if hasattr(md, "items") else dict(md),
    }
    tensors = {
        n: getattr(sl, n).detach().to("cpu").clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    return _build(arch, fields, tensors, _threshold(sl, arch))


def read_saelens_folder(path: str | os.PathLike[str]) -> SAE:
    """A SAELens SAE folder read by format, without ``sae_lens`` (what :func:`import_from_saelens`
    does where SAELens is not installed): inference architectures standard, topk and jumprelu."""
    try:
        cfg, tensors = saelens_format.read_folder(Path(path))
    except ValueError as err:
        raise InteropError(str(err)) from err
    if cfg.get("format") == FORMAT:
        raise InteropError(f"{path} is a mechscope SAE, not a SAELens one: use saes.sae.SAE.load")
    arch = cfg["architecture"]
    _check_architecture(arch)
    if arch == "batchtopk":  # SAELens saves BatchTopK for inference as jumprelu
        raise InteropError(
            f"{path}: a 'batchtopk' folder is a SAELens training save; load it with sae_lens"
        )
    threshold = tensors["threshold"].clone() if arch == "jumprelu" else None
    if arch == "jumprelu" and threshold is None:
        raise InteropError(f"{path}: a jumprelu SAE needs a 'threshold' tensor")
    fields = {
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "k": cfg.get("k"),
        "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input", True),
        "normalize_activations": cfg.get("normalize_activations", "none"),
        "reshape_activations": cfg.get("reshape_activations", "none"),
        "rescale_acts_by_decoder_norm": cfg.get("rescale_acts_by_decoder_norm", False),
        "metadata": cfg.get("metadata") or {},
    }
    return _build(arch, fields, tensors, threshold)


def _build(
    arch: str, f: dict[str, Any], tensors: dict[str, Tensor], threshold: Tensor | None
) -> SAE:
    """Our SAE computing a SAELens SAE's encode/decode, from its config fields and tensors."""
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

    with torch.no_grad():
        w_enc, b_enc, w_dec, b_dec = (tensors[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
        if f["rescale_acts_by_decoder_norm"]:
            # SAELens ranks pre·‖W_dec_i‖ and decodes codes/‖W_dec_i‖: fold the norms in.
            norms = w_dec.norm(dim=-1)
            w_enc, b_enc, w_dec = w_enc * norms, b_enc * norms, w_dec / norms[:, None]
        if not f["apply_b_dec_to_input"]:
            # We always subtract b_dec before encoding; compensate in b_enc.
            b_enc = b_enc + b_dec @ w_enc

    activation, k = _our_activation(f, arch, threshold)
    dtype_name = _dtype_name(w_enc.dtype)
    ours_cfg = SAEConfig(
        d_in=f["d_in"],
        d_sae=f["d_sae"],
        activation=activation,  # type: ignore[arg-type]
        k=k if k is not None else 32,
        dtype=dtype_name,
        metadata=_import_metadata(f, arch, norm),
    )
    out = SAE(ours_cfg)
    out_act: Any = out.act
    with torch.no_grad():
        for name, value in {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}.items():
            getattr(out, name).copy_(value)
        if activation == "jumprelu":
            assert threshold is not None
            # Ours needs θ > 0; SAELens's relu(z)·[z > θ] with θ ≤ 0 is relu(z) ≈ z·[z > tiny].
            tiny = torch.finfo(threshold.dtype).tiny
            out_act.log_threshold.copy_(threshold.clamp_min(tiny).log())
        elif activation == "batchtopk":
            assert threshold is not None
            out_act.threshold.fill_(float(threshold.flatten()[0]))
    return out.eval()


def _threshold(sl: Any, arch: str) -> Tensor | None:
    if arch == "batchtopk":
        return torch.tensor(float(sl.topk_threshold))
    if arch != "jumprelu":
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
) -> tuple[str, int | None]:
    if arch == "standard":
        return "relu", None
    if arch in ("topk", "batchtopk"):
        if f["k"] is None or not float(f["k"]).is_integer():
            raise InteropError(f"mechscope needs an integer k; this SAELens SAE has k={f['k']}")
        return arch, int(f["k"])
    # A JumpReLU that SAELens (or we) saved from a BatchTopK SAE: one shared threshold and an
    # integer k in the metadata give back the BatchTopK SAE, whose eval mode is the same function.
    md = f["metadata"]
    details = md.get("training_architecture_details") or {}
    k = details.get("k") if isinstance(details, dict) else None
    if (
        md.get("training_architecture") == "batchtopk"
        and isinstance(k, (int, float))
        and float(k).is_integer()
        and 1 <= int(k) < f["d_sae"]
        and threshold is not None
        and threshold.numel()
        and bool((threshold == threshold.flatten()[0]).all())
        and float(threshold.flatten()[0]) >= 0
    ):
        return "batchtopk", int(k)
    return "jumprelu", None


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
