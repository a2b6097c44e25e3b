"""``Transcoder``: a sparse dictionary that reads one site and predicts another (e.g. an MLP's input
-> its output), built from an ``SAEConfig`` with ``d_out`` set::

    pre  = x W_enc + b_enc                   [batch, d_sae]   (x is not shifted: b_dec is d_out wide)
    acts = activation(pre)                   [batch, d_sae]
    ŷ    = acts W_dec + b_dec (+ x W_skipᵀ)   [batch, d_out]   (W_skip with ``skip_connection``)

Everything else is the SAE's: the activations and their training terms, unit-norm decoder rows,
the hook points (``hook_sae_recons`` carries ŷ, ``hook_sae_error`` the target y − ŷ), ``save`` /
``load`` (``SAE.load`` returns a ``Transcoder`` for a transcoder's folder), and the trainer, which
takes batches ``(x, y)``. Transcoders train on the dense path (the ``kernels`` sparse step
reconstructs its input) and read raw activations (no input normalisation).

An *MLP transcoder* reads ``blocks.L.ln2.hook_normalized`` and predicts ``blocks.L.hook_mlp_out``
(:func:`mlp_hooks`); its ``metadata`` records ``layer``, ``hook``, ``hook_out`` and the model's
fingerprint. A *set* is a folder with one saved transcoder per layer (``layer_LL/``), read back by
:func:`load_transcoders`, which checks each against the model before any forward pass.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp._io import fsync_dir, remove_tree
from saes.checksums import write_checksums
from saes.sae import SAE, SAELoadError

__all__ = [
    "TranscoderModelError",
    "TranscoderSiteError",
    "Transcoder",
    "check_fits",
    "layer_dirname",
    "load_transcoders",
    "mlp_hooks",
    "mlp_layer",
    "mlp_metadata",
    "save_to_set",
]

_MLP_IN = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized")
_MLP_OUT = re.compile(r"blocks\.(\d+)\.hook_mlp_out")
_LAYER_DIR = re.compile(r"layer_(\d+)")


class TranscoderSiteError(ValueError):
    """A hook pair that is not one MLP's input and output."""


class TranscoderModelError(ValueError):
    """A transcoder that does not fit the model it is spliced into (widths, layer, fingerprint)."""


class Transcoder(SAE):
    kind: ClassVar[str] = "transcoder"

    def _init_parameters(self, gen: torch.Generator | None, dtype: torch.dtype) -> None:
        cfg = self.cfg
        d_out = cfg.out_width
        # Decoder rows and encoder columns: independent random unit directions (the map is not
        # the identity, so the encoder does not start as the decoder's transpose).
        w_dec = torch.randn(cfg.d_sae, d_out, generator=gen, dtype=torch.float32)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        w_enc = torch.randn(cfg.d_in, cfg.d_sae, generator=gen, dtype=torch.float32)
        w_enc /= w_enc.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(dtype))  # [d_sae, d_out]
        self.W_enc = nn.Parameter(w_enc.to(dtype))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=dtype))
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(d_out, cfg.d_in, dtype=dtype))  # [d_out, d_in]

    @property
    def sparse_kernel(self) -> str | None:
        return None  # the kernels' sparse step subtracts b_dec from x and reconstructs x

    @property
    def out_scale(self) -> Tensor:
        return self.input_scale.new_ones(())  # the output is another site's raw activation

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        self._check_width(x)
        x = x.to(self.W_enc.dtype) * self.input_scale.to(self.W_enc.dtype)
        return x @ self.W_enc + self.b_enc

    def decode(self, acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_out"]:
        """The latents' part of the output (without the skip term, which needs the input)."""
        return acts @ self.W_dec + self.b_dec

    def skip(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"] | None:
        """x W_skipᵀ, or None without a skip connection."""
        if not self.cfg.skip_connection:
            return None
        return x.to(self.W_skip.dtype) @ self.W_skip.T

    def _reconstruct(
        self, acts: Float[Tensor, "batch d_sae"], x: Float[Tensor, "batch d_in"]
    ) -> Float[Tensor, "batch d_out"]:
        out = self.decode(acts)
        skip = self.skip(x)
        return out if skip is None else out + skip

    @torch.no_grad()
    def _fold_input_scale_(self, s: float) -> None:
        self.W_enc.mul_(s)  # the output (and the skip term, which reads raw x) stay as they are


# ---- MLP transcoders: sites, checks, sets ------------------------------------------------------
def mlp_hooks(layer: int) -> tuple[str, str]:
    """The (input, output) hooks of MLP ``layer``.

    >>> mlp_hooks(3)
    ('blocks.3.ln2.hook_normalized', 'blocks.3.hook_mlp_out')
    """
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def mlp_layer(hook_in: str, hook_out: str) -> int:
    """The layer whose MLP reads ``hook_in`` and writes ``hook_out``; anything else raises
    :class:`TranscoderSiteError` naming the pair expected.

    >>> mlp_layer("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out")
    3
    """
    m_in, m_out = _MLP_IN.fullmatch(hook_in), _MLP_OUT.fullmatch(hook_out)
    if m_in and m_out and m_in.group(1) == m_out.group(1):
        return int(m_in.group(1))
    layers = dict.fromkeys(int(m.group(1)) for m in (m_in, m_out) if m)
    pairs = [" -> ".join(mlp_hooks(layer)) for layer in layers]
    want = " or ".join(pairs) or "blocks.L.ln2.hook_normalized -> blocks.L.hook_mlp_out"
    raise TranscoderSiteError(
        f"a transcoder maps an MLP's input to its output in the same layer; got {hook_in!r} -> "
        f"{hook_out!r}. Expected {want}"
    )


def mlp_metadata(
    layer: int, *, model: str | None, fingerprint: str | None, model_class: str | None = None
) -> dict[str, Any]:
    """What an MLP transcoder's ``cfg.metadata`` records: its layer and hooks, and the model it
    was trained on (name, fingerprint, class), which :func:`load_transcoders` checks."""
    ins, out = mlp_hooks(layer)
    return {
        "layer": layer, "hook": ins, "hook_out": out, "model": model,
        "model_fingerprint": fingerprint, "model_class": model_class,
    }  # fmt: skip


def check_fits(model: Any, transcoder: SAE, layer: int) -> None:
    """Raise :class:`TranscoderModelError` unless ``transcoder`` can replace MLP ``layer`` of
    ``model`` (a layer of the model; d_in and d_out equal to d_model). Reads only the config."""
    n_layers, d_model = int(model.cfg.n_layers), int(model.cfg.d_model)
    if not 0 <= layer < n_layers:
        raise TranscoderModelError(
            f"layer {layer} is not in the model: it has layers 0-{n_layers - 1}"
        )
    if not transcoder.cfg.is_transcoder:
        raise TranscoderModelError(f"the dictionary for layer {layer} is an SAE, not a transcoder")
    ins, out = mlp_hooks(layer)
    for what, width, hook in (("d_in", transcoder.cfg.d_in, ins), ("d_out", transcoder.d_out, out)):
        if width != d_model:
            raise TranscoderModelError(
                f"the transcoder for layer {layer} has {what}={width}, but the model's {hook} "
                f"has width d_model={d_model}: it was trained for another model"
            )


def layer_dirname(layer: int) -> str:
    """The folder of ``layer``'s transcoder in a set: ``layer_07``."""
    return f"layer_{layer:02d}"


def save_to_set(transcoder: SAE, folder: str | os.PathLike[str], layer: int) -> Path:
    """Save ``transcoder`` as ``folder/layer_LL`` (written beside, then renamed into place, so a
    killed run leaves no half-written layer). Its metadata must name MLP ``layer``'s hooks."""
    hooks = (transcoder.cfg.metadata.get("hook"), transcoder.cfg.metadata.get("hook_out"))
    if not transcoder.cfg.is_transcoder or hooks != mlp_hooks(layer):
        raise ValueError(
            f"a set holds MLP transcoders with metadata hook/hook_out {mlp_hooks(layer)} for "
            f"layer {layer}; this dictionary's are {hooks}"
        )
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / layer_dirname(layer), root / f".tmp-{layer_dirname(layer)}-{os.getpid()}"
    remove_tree(tmp)
    transcoder.save(tmp)
    write_checksums(tmp)
    if final.exists():
        remove_tree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    return final


def load_transcoders(
    model: Any,
    folder: str | os.PathLike[str],
    *,
    layers: list[int] | None = None,
    check_fingerprint: bool = True,
    device: str | torch.device | None = None,
) -> dict[int, Transcoder]:
    """{layer: Transcoder} from a set folder (``layer_LL/`` per layer), each checked against
    ``model`` before any forward pass: its hooks are MLP ``LL``'s, its widths are ``d_model``, and
    (``check_fingerprint``) the model it was trained on has ``model``'s weight fingerprint.
    ``layers``: only these (each must be in the folder); None: every layer there."""
    root = Path(folder)
    found = {
        int(m.group(1)): p
        for p in (sorted(root.iterdir()) if root.is_dir() else [])
        if p.is_dir() and (m := _LAYER_DIR.fullmatch(p.name))
    }
    if not found:
        raise SAELoadError(f"{root} holds no transcoder set: no layer_LL/ folders in it")
    wanted = sorted(found) if layers is None else list(layers)
    missing = [layer for layer in wanted if layer not in found]
    if missing:
        raise SAELoadError(
            f"{root} has no transcoders for layers {missing}; it has {sorted(found)}"
        )
    fingerprint = None
    out: dict[int, Transcoder] = {}
    for layer in wanted:
        tc = cast(Transcoder, Transcoder.load(found[layer], device=device))  # it checks the kind
        meta = tc.cfg.metadata
        hooks = (meta.get("hook"), meta.get("hook_out"))
        if hooks != mlp_hooks(layer):
            raise SAELoadError(
                f"{found[layer]} holds a transcoder for {hooks[0]} -> {hooks[1]}, not MLP {layer}"
            )
        check_fits(model, tc, layer)
        want = meta.get("model_fingerprint")
        if check_fingerprint and want:
            if fingerprint is None:
                from interp.models import model_fingerprint

                fingerprint = model_fingerprint(model)
            if want != fingerprint:
                raise TranscoderModelError(
                    f"{found[layer]} was trained on {meta.get('model')!r} ({meta.get('model_class')}, "
                    f"fingerprint {want[:12]}…), but the model given ({type(model).__name__}) has "
                    f"fingerprint {fingerprint[:12]}…: other weights, or another backend of the "
                    "same weights (a HookedTransformer and a TransformerBridge fingerprint "
                    "differently). Pass check_fingerprint=False to load anyway"
                )
        out[layer] = tc
    return out
