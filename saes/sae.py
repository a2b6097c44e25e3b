"""``SAE``: one sparse-autoencoder module whose activation is swapped by name (see ``activations``).

    pre  = (x·s − b_dec) W_enc + b_enc          [batch, d_sae]   (s: fixed input scale, 1 by default)
    acts = activation(pre)                       [batch, d_sae]
    x̂    = (acts W_dec + b_dec) / s              [batch, d_in]

Saved as ``cfg.json`` + ``sae.safetensors`` (+ ``run.json``). At save time the input scale is
folded into the weights, so a saved SAE reads and writes raw activations with s = 1.

A *transcoder* (``saes.transcoder.Transcoder``, ``SAEConfig.d_out`` set) is the same module with
a decoder to another site: ``forward(x, y=None)`` takes the target y (the input x, for an SAE).

Hook points (TransformerLens ``HookPoint``s, named as SAELens's; created on first use, so importing
and training need no TransformerLens)::

    hook_sae_input -> pre_acts -> hook_sae_acts_pre -> activation -> hook_sae_acts_post
      -> decode -> hook_sae_recons                                  (forward)
    spliced: hook_sae_output(recons + hook_sae_error(target − clean recons))

``spliced`` is what a model should see at the site: with no hook attached it is the target (up to
float rounding); a hook on the latents changes it while the error term stays fixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from interp._io import atomic_write_json, fsync_dir, read_json
from interp.manifest import set_source
from saes.activations import ACTIVATIONS, Activation, architecture, make_activation
from saes.checksums import CHECKSUMS, SAELoadError, verify_checkpoint, write_checksums
from saes.config import SAEConfig, config_from_dict

__all__ = ["HOOK_NAMES", "NODE_HOOKS", "SAE", "SAEOutput", "SAELoadError", "geometric_median"]

HOOK_NAMES: tuple[str, ...] = (
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_recons",
    "hook_sae_error",
    "hook_sae_output",
)
_UPSTREAM_HOOKS = HOOK_NAMES[:4]  # a hook here changes the reconstruction
_HOOK_SET = frozenset(HOOK_NAMES)  # checked on every parameter lookup (nn.Module.__getattr__)
NODE_HOOKS: dict[str, str] = {
    "input": "hook_sae_input",
    "latent": "hook_sae_acts_post",
    "error": "hook_sae_error",
    "output": "hook_sae_output",
}
"""A dictionary's nodes for a site registry: node kind -> the hook point that carries it."""
# cfg.json keys left out at these values, so the saved format of the earlier kinds is unchanged;
# a key missing from a file means its value here (the meaning before the field existed: JumpReLU
# thresholds were log θ, though the config's default is now direct θ).
_TRANSCODER_DEFAULTS: dict[str, Any] = {"d_out": None, "skip_connection": False}
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "matryoshka_widths": None,
    "jumprelu_threshold_param": "log",
    "encoder_init_norm": None,
}

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae.safetensors"
FORMAT = "mechscope-sae"

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class SAEOutput(NamedTuple):
    recon: Float[Tensor, "batch d_out"]
    acts: Float[Tensor, "batch d_sae"]
    pre: Float[Tensor, "batch d_sae"]
    error: Float[Tensor, "batch d_out"] | None = None
    """target − recon from ``forward`` (the target: y, or x for an SAE); None for a transcoder
    called without y."""


_KINDS: dict[str, type[SAE]] = {}


class SAE(nn.Module):
    input_scale: Tensor  # buffer: fixed input normalisation factor s (1 when off or folded)
    kind: ClassVar[str] = "sae"
    """The dictionary's kind, for node registries: ``sae`` or ``transcoder``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each kind registers itself, so loading a folder finds its class with no import cycle.
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls

    def __init__(self, cfg: SAEConfig, *, seed: int | None = None):
        super().__init__()
        if cfg.is_transcoder != (self.kind == "transcoder"):
            want = "saes.Transcoder" if cfg.is_transcoder else "saes.SAE"
            raise ValueError(
                f"this config (d_out={cfg.d_out}) describes a "
                f"{'transcoder' if cfg.is_transcoder else 'SAE'}: build it with {want}(cfg) "
                "(or saes.sae.dictionary_from_config(cfg))"
            )
        self.cfg = cfg
        dtype = _DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self._init_parameters(gen, dtype)
        self.act = make_activation(cfg).to(dtype)
        self.register_buffer("input_scale", torch.tensor(1.0, dtype=torch.float32))
        if "transformer_lens.hook_points" in sys.modules:  # already imported: no cost to build
            self._make_hook_points()

    def _init_parameters(self, gen: torch.Generator | None, dtype: torch.dtype) -> None:
        cfg = self.cfg
        # Decoder rows: random unit directions; the encoder starts as the decoder's transpose,
        # scaled small (a unit-norm encoder starts with large codes that Adam's ~lr steps on
        # O(1/sqrt(d_in)) weights are slow to undo: MCC 0.50 vs 0.60 on the synthetic bench).
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=torch.float32)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(dtype))  # [d_sae, d_in]
        w_enc = w_dec.T * _encoder_init_norm(cfg)
        self.W_enc = nn.Parameter(w_enc.contiguous().to(dtype))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))

    @property
    def unit_norm_decoder(self) -> bool:
        # ReLU SAEs weight their L1 penalty by decoder norms instead of fixing them.
        return architecture(self.act).unit_norm_decoder

    @property
    def sparse_kernel(self) -> str | None:
        """The ``kernels`` sparse step that can train this dictionary (None: dense only)."""
        return architecture(self.act).sparse_kernel

    @property
    def out_scale(self) -> Tensor:
        """The fixed scale of the output space (the loss is measured in it): s for an SAE."""
        return self.input_scale

    @property
    def d_out(self) -> int:
        """Width of the output: ``d_in`` for an SAE."""
        return self.cfg.out_width

    # ---- the forward computation ---------------------------------------------------------------
    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        self._check_width(x)
        x = x.to(self.W_enc.dtype) * self.input_scale.to(self.W_enc.dtype)
        if (
            x.dim() == 2
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type)
        ):
            return _Encode.apply(x, self.W_enc, self.b_enc, self.b_dec)  # type: ignore[no-any-return]
        return F.linear(x - self.b_dec, self.W_enc.T, self.b_enc)  # bias added in the GEMM

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return self._activate(self.pre_acts(x))

    def _activate(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        # An architecture may read the dictionary's parameters too (gated: b_enc is its gate bias).
        act = self.act
        return act.activate(self, pre) if isinstance(act, Activation) else act(pre)

    def decode(self, acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        return F.linear(acts, self.W_dec.T, self.b_dec) / self.input_scale.to(self.W_dec.dtype)

    def _reconstruct(
        self, acts: Float[Tensor, "batch d_sae"], x: Float[Tensor, "batch d_in"]
    ) -> Float[Tensor, "batch d_out"]:
        """What the dictionary writes, from its latents (and, for a skip transcoder, its input)."""
        return self.decode(acts)

    def _run(self, x: Float[Tensor, "batch d_in"], *, hooked: bool) -> SAEOutput:
        """x -> (recon, acts, pre), through the hook points when ``hooked`` (and they exist)."""
        hook = self._hook if hooked else _no_hook
        x = hook("hook_sae_input", x)
        pre = hook("hook_sae_acts_pre", self.pre_acts(x))
        if pre.dim() == 2:
            acts = self._activate(pre)
        else:  # [batch, pos, d_sae]: the activations (and BatchTopK's batch) work on rows
            acts = self._activate(pre.reshape(-1, pre.shape[-1])).reshape(pre.shape)
        acts = hook("hook_sae_acts_post", acts)
        recon = hook("hook_sae_recons", self._reconstruct(acts, x))
        return SAEOutput(recon, acts, pre)

    def forward(
        self, x: Float[Tensor, "batch d_in"], y: Float[Tensor, "batch d_out"] | None = None
    ) -> SAEOutput:
        """The dictionary on ``x`` through its hook points (identities with no hook attached).

        ``y`` is the target: what an SAE reconstructs (x when omitted) or what a transcoder
        predicts. ``error`` is target − recon (None for a transcoder without ``y``). Training
        computes the same numbers without the hook points (``saes.losses``).
        """
        out = self._run(x, hooked=True)
        target = self.target(x, y, required=False)
        if target is None:
            return out
        return out._replace(error=target.to(out.recon.dtype) - out.recon)

    def spliced(
        self,
        x: Float[Tensor, "batch d_in"],
        y: Float[Tensor, "batch d_out"] | None = None,
        *,
        with_error: bool = True,
    ) -> Float[Tensor, "batch d_out"]:
        """What a model should see at the output site: recons + error, through ``hook_sae_output``.

        The error, target − the reconstruction with no hook attached, is computed without
        gradient and passed through ``hook_sae_error``: with no hook the result is the target (up
        to float rounding); a hook on the latents (``hook_sae_acts_post``) changes the output by
        exactly its change to the reconstruction, the error held fixed. Gradients reach ``x``
        through the latents only. ``with_error=False``: the reconstruction alone (the replacement).
        Meant for eval mode (in training mode a BatchTopK threshold would be updated twice).
        """
        target = self.target(x, y, required=with_error)
        recon = self._run(x, hooked=True).recon
        if with_error:
            assert target is not None
            if self._upstream_hooked():
                with torch.no_grad():
                    clean = self._run(x, hooked=False).recon
            else:  # nothing can have changed the reconstruction: it is the clean one
                clean = recon
            error = (target.to(recon.dtype) - clean).detach()
            recon = recon + self._hook("hook_sae_error", error)
        return self._hook("hook_sae_output", recon)

    def unhooked(self, x: Float[Tensor, "batch d_in"]) -> SAEOutput:
        """``forward`` without the hook points (what training computes): (recon, acts, pre)."""
        return self._run(x, hooked=False)

    def target(self, x: Tensor, y: Tensor | None = None, *, required: bool = True) -> Tensor | None:
        """The target: ``y`` checked against the output width, or ``x`` for an SAE. A transcoder
        without ``y`` raises (``required``) or gives None."""
        if y is None:
            if required and self.cfg.is_transcoder:
                raise ValueError(
                    "a transcoder's target is another site's activation: pass y "
                    f"(width d_out={self.d_out}) as well as x"
                )
            return None if self.cfg.is_transcoder else x
        if y.shape[-1] != self.d_out or y.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"the target y must have x's leading shape {tuple(x.shape[:-1])} and width "
                f"d_out={self.d_out}; got shape {tuple(y.shape)}"
            )
        return y

    def _check_width(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"the SAE reads vectors of width d_in={self.cfg.d_in}; got shape {tuple(x.shape)}"
            )

    # ---- hook points and nodes -----------------------------------------------------------------
    def _hook(self, name: str, t: Tensor) -> Tensor:
        hp = self._modules.get(name)
        return t if hp is None else hp(t)  # type: ignore[no-any-return]

    def _upstream_hooked(self) -> bool:
        for name in _UPSTREAM_HOOKS:
            hp = self._modules.get(name)
            if hp is not None and (hp._forward_hooks or hp._forward_pre_hooks):
                return True
        return False

    def _make_hook_points(self) -> None:
        if all(name in self._modules for name in HOOK_NAMES):
            return
        try:
            from transformer_lens.hook_points import HookPoint
        except ImportError as err:
            raise ImportError(
                "a dictionary's hook points are TransformerLens HookPoints: install "
                "transformer-lens to attach hooks (forward and spliced run without them)"
            ) from err
        for name in HOOK_NAMES:
            if name not in self._modules:
                hp = HookPoint()
                hp.name = name
                self._modules[name] = hp  # add_module's hasattr check would recurse here

    def __getattr__(self, name: str) -> Any:
        if name in _HOOK_SET:  # created on first use (importing TransformerLens takes seconds)
            self._make_hook_points()
            return self._modules[name]
        return super().__getattr__(name)

    @property
    def hook_dict(self) -> dict[str, nn.Module]:
        """Hook name -> ``HookPoint``, as TransformerLens models have (so ``interp.hooks`` works)."""
        self._make_hook_points()
        return {name: self._modules[name] for name in HOOK_NAMES}  # type: ignore[misc]

    @staticmethod
    def hook_names() -> tuple[str, ...]:
        """The dictionary's hook names, in forward order (creates nothing)."""
        return HOOK_NAMES

    @staticmethod
    def node_hooks() -> dict[str, str]:
        """Node kind (``input``, ``latent``, ``error``, ``output``) -> the hook that carries it."""
        return dict(NODE_HOOKS)

    def node_widths(self) -> dict[str, int]:
        """Node kind -> the width of its tensor's last axis (``latent``: d_sae)."""
        return {
            "input": self.cfg.d_in,
            "latent": self.cfg.d_sae,
            "error": self.d_out,
            "output": self.d_out,
        }

    @contextlib.contextmanager
    def hooks(self, fwd: Sequence[tuple[str, Callable[..., Any]]]) -> Iterator[SAE]:
        """Attach forward hooks ``fn(tensor, hook) -> tensor | None`` for a ``with`` block.

        Names are checked first (a bad one attaches nothing); on exit exactly these are removed.
        """
        points = self.hook_dict
        for name, fn in fwd:
            if name not in points:
                close = difflib.get_close_matches(name, HOOK_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"no hook {name!r}{hint}; the hooks are {list(HOOK_NAMES)}")
            if not callable(fn):
                raise TypeError(f"the hook for {name!r} is not callable: {fn!r}")
        added: list[tuple[Any, Any]] = []
        try:
            for name, fn in fwd:
                hp: Any = points[name]
                hp.add_hook(fn)
                added.append((hp, hp.fwd_hooks[-1]))
            yield self
        finally:
            for hp, handle in reversed(added):
                handle.hook.remove()
                if handle in hp.fwd_hooks:
                    hp.fwd_hooks.remove(handle)

    # ---- constraints and initialisation --------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Project decoder rows back to unit norm (after an optimizer step)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the gradient component along each decoder row (it only changes the row's norm)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g -= (g * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def init_from_data_(
        self,
        x: Float[Tensor, "n d_in"],
        b_dec_init: str = "geometric_median",
        y: Float[Tensor, "n d_out"] | None = None,
    ) -> None:
        """Set the input scale (when normalising) and b_dec from a sample of the training data
        (b_dec from the target ``y``, which defaults to ``x`` for an SAE)."""
        self._check_width(x)
        target = self.target(x, y)
        assert target is not None
        x = target.float()
        if self.cfg.normalize_activations == "expected_norm":  # SAEs only: x is the input
            self.input_scale.fill_(float(self.cfg.d_in**0.5 / x.norm(dim=-1).mean()))
        x = x * self.out_scale
        if b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(x))
        elif b_dec_init == "mean":
            self.b_dec.copy_(x.mean(0))
        else:
            self.b_dec.zero_()

    # ---- saving and loading --------------------------------------------------------------------
    def folded(self) -> SAE:
        """A copy with the input scale folded into the weights (s = 1): same function, raw inputs."""
        s = float(self.input_scale)
        cfg = dataclasses.replace(self.cfg, normalize_activations="none")
        out = type(self)(cfg)
        with torch.no_grad():
            out.load_state_dict(self.state_dict())
            out._fold_input_scale_(s)
            out.input_scale.fill_(1.0)
        return out.train(self.training)

    @torch.no_grad()
    def _fold_input_scale_(self, s: float) -> None:
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        fold: bool = True,
        run_manifest: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``cfg.json`` and ``sae.safetensors`` (each atomically).

        ``fold=False`` keeps the input scale as a separate buffer: training checkpoints use it so a
        resumed run continues from exactly the same numbers.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sae = self.folded() if fold and float(self.input_scale) != 1.0 else self
        tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        atomic_write_json(directory / CFG_NAME, {"format": FORMAT, **_cfg_json(sae.cfg)})
        os.replace(tmp, directory / WEIGHTS_NAME)
        fsync_dir(directory)
        if run_manifest is not None:
            atomic_write_json(directory / "run.json", run_manifest)
        if (directory / CHECKSUMS).exists():  # a checkpoint's record would be stale now
            write_checksums(directory)
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> SAE:
        directory = Path(directory)
        cfg_path, w_path = directory / CFG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.exists() or not w_path.exists():
            raise SAELoadError(
                f"{directory} is not a saved mechscope SAE: it needs {CFG_NAME} and {WEIGHTS_NAME}"
            )
        try:
            raw = read_json(cfg_path)
        except ValueError as err:
            raise SAELoadError(f"{cfg_path} is not valid JSON: {err}") from err
        if raw.pop("format", None) != FORMAT:
            raise SAELoadError(
                f"{cfg_path} is not a mechscope SAE config (for SAELens SAEs use saes.interop)"
            )
        cfg = config_from_dict(SAEConfig, {**_OPTIONAL_DEFAULTS, **raw})
        kind = dictionary_class(cfg)
        if not issubclass(kind, cls):
            raise SAELoadError(
                f"{directory} holds a mechscope {kind.kind}, not a {cls.kind}: load it with "
                f"{kind.__name__}.load (or SAE.load, which loads either)"
            )
        sae = kind(cfg)
        if (directory / CHECKSUMS).exists():  # written by save() and by the trainer
            verify_checkpoint(directory)
        try:
            state = load_file(str(w_path))
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise SAELoadError(
                f"{w_path} cannot be read ({err}); the file is corrupted or incomplete"
            ) from err
        missing, unexpected = set(sae.state_dict()) - set(state), set(state) - set(sae.state_dict())
        if missing or unexpected:
            raise SAELoadError(
                f"{w_path} does not fit the config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        sae.load_state_dict(state)
        # A recipe records the SAE as this call (and checks its weights by fingerprint on replay).
        set_source(sae, SAE.load, str(directory))
        return sae.to(device) if device is not None else sae


class _Encode(torch.autograd.Function):
    """(x − b_dec) W_enc + b_enc, the same GEMM as ``F.linear``; its backward gives b_dec's
    gradient as −W_enc Σ_rows ∂pre (a matrix-vector product) and computes ∂x, a GEMM as large
    as the encoder's, only when x needs it (training data does not: 0.4 ms of a 8 ms step)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
        xc = x - b_dec
        ctx.save_for_backward(xc, W_enc)
        return torch.addmm(b_enc, xc, W_enc)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        xc, W_enc = ctx.saved_tensors
        d_b_enc = grad.sum(0)
        d_x = grad @ W_enc.T if ctx.needs_input_grad[0] else None
        return d_x, xc.T @ grad, d_b_enc, -(W_enc @ d_b_enc)


def _encoder_init_norm(cfg: SAEConfig) -> float:
    if cfg.encoder_init_norm is not None:
        return cfg.encoder_init_norm
    act = ACTIVATIONS[cfg.activation]
    default = getattr(act, "default_encoder_init_norm", None)
    if default is not None:
        return float(default)
    return 0.01 if getattr(act, "unit_norm_decoder", True) else 1.0


def _no_hook(name: str, t: Tensor) -> Tensor:
    return t


def _cfg_json(cfg: SAEConfig) -> dict[str, Any]:
    """The config as saved: an SAE's leaves out the transcoder fields (its format is unchanged)."""
    raw = dataclasses.asdict(cfg)
    for key, default in _TRANSCODER_DEFAULTS.items():
        if raw.get(key, default) == default and not cfg.is_transcoder:
            raw.pop(key, None)
    for key, default in _OPTIONAL_DEFAULTS.items():
        if raw.get(key, default) == default:
            raw.pop(key, None)
    return raw


def dictionary_class(cfg: SAEConfig) -> type[SAE]:
    """``SAE``, or ``Transcoder`` for a config with ``d_out``."""
    kind = "transcoder" if cfg.is_transcoder else "sae"
    if kind not in _KINDS:  # saes/__init__ imports every kind; this is a direct import
        import importlib

        importlib.import_module(f"saes.{kind}")
    return _KINDS[kind]


_KINDS["sae"] = SAE


def dictionary_from_config(cfg: SAEConfig, *, seed: int | None = None) -> SAE:
    """A new ``SAE`` or ``Transcoder``, as ``cfg`` describes."""
    return dictionary_class(cfg)(cfg, seed=seed)


@torch.no_grad()
def geometric_median(
    x: Float[Tensor, "n d"], iters: int = 100, tol: float = 1e-6
) -> Float[Tensor, " d"]:
    """The point minimising the sum of Euclidean distances to the rows of x (Weiszfeld's algorithm)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - y).norm(dim=-1).clamp_min(1e-8)
        y_next = (w[:, None] * x).sum(0) / w.sum()
        if (y_next - y).norm() <= tol * y.norm().clamp_min(1e-8):
            return y_next
        y = y_next
    return y
