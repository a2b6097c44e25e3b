"""Configuration: one frozen dataclass per concern. ``SAEConfig`` is the architecture (saved with the
weights); ``TrainConfig`` is the training loop (saved with the run). Every field is documented and
checked in ``__post_init__``."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ACTIVATION_NAMES", "DataConfig", "SAEConfig", "TrainConfig", "config_from_dict"]

ActivationName = Literal["topk", "batchtopk", "jumprelu", "relu", "matryoshka_batchtopk", "gated"]
ACTIVATION_NAMES: tuple[str, ...] = (
    "topk",
    "batchtopk",
    "jumprelu",
    "relu",
    "matryoshka_batchtopk",
    "gated",
)


_K_RULES = ("topk", "batchtopk", "matryoshka_batchtopk")  # activations that keep k per row


class ConfigError(ValueError):
    """A configuration value that is out of range or unknown."""


@dataclass(frozen=True)
class SAEConfig:
    """The architecture of a sparse dictionary: an SAE, or a transcoder when ``d_out`` is set."""

    d_in: int
    """Width of the activations it reads (``d_model`` for a residual stream)."""
    d_sae: int
    """Number of latents."""
    activation: ActivationName = "topk"
    """``topk`` (k per row), ``batchtopk`` (k·batch over the batch; a threshold at inference),
    ``jumprelu`` (learned per-latent threshold), ``relu`` (with an L1 penalty in training),
    ``matryoshka_batchtopk`` (BatchTopK whose nested latent prefixes each reconstruct the input),
    ``gated`` (a gate path picks the active latents, a magnitude path sets their values)."""
    k: int = 32
    """Active latents per row for ``topk``, ``batchtopk`` and ``matryoshka_batchtopk``."""
    jumprelu_init_threshold: float = 0.001
    """Initial threshold of every JumpReLU latent."""
    jumprelu_bandwidth: float = 0.001
    """Width of the rectangle kernel of the straight-through estimator for JumpReLU thresholds."""
    jumprelu_threshold_param: Literal["log", "direct"] = "direct"
    """How Adam sees a JumpReLU threshold θ: ``direct`` trains θ itself, projected to θ ≥ 0
    (SAELens 6's, its issue #494), ``log`` trains log θ (DeepMind's; Adam's ~lr steps move θ by
    a factor, so a short run barely moves a small θ). A saved ``cfg.json`` without the field
    (written before 2026-12-07, when ``log`` was the default) loads as ``log``."""
    encoder_init_norm: float | None = None
    """Norm of each encoder column at initialisation (the encoder starts as this times the
    decoder's transpose; decoder rows have norm 1). None: the architecture's default, 0.01 where
    decoder rows are kept at unit norm (SAELens's default initial function: decoder rows of norm
    0.1, encoder = decoder transpose; Anthropic's April 2024 update), 0.1 for jumprelu (better
    feature recovery on synthetic data), 1 for relu and gated, whose penalties read the free
    decoder norms."""
    normalize_activations: Literal["none", "expected_norm"] = "none"
    """``expected_norm``: scale inputs by a fixed factor so their mean norm is sqrt(d_in); the
    factor is estimated before training and folded into the weights at save time."""
    dtype: str = "float32"
    """Dtype of the parameters."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance: model name, hook name, store path, context size."""
    d_out: int | None = None
    """None: an SAE, which reconstructs its input. A width: a *transcoder*, which reads one site
    (``d_in``) and predicts another (``d_out``, e.g. MLP input -> MLP output; equal widths allowed):
    same encoder and activation, decoder to ``d_out``, and the input is not shifted by ``b_dec``."""
    skip_connection: bool = False
    """Transcoders only: add a linear skip term ``x W_skipᵀ`` (``W_skip`` [d_out, d_in], zero at
    initialisation) to the output, as in circuit-tracer's and SAELens's skip transcoders."""
    matryoshka_widths: tuple[int, ...] | None = None
    """``matryoshka_batchtopk`` only: the nested prefix widths m₁ < m₂ < … < d_sae (the last is
    d_sae); latents [0, mᵢ) with b_dec must reconstruct the input on their own (SAELens's
    ``matryoshka_widths``)."""

    def __post_init__(self) -> None:
        if isinstance(self.matryoshka_widths, list):  # from JSON
            object.__setattr__(self, "matryoshka_widths", tuple(self.matryoshka_widths))
        if self.activation not in ACTIVATION_NAMES:
            close = difflib.get_close_matches(str(self.activation), ACTIVATION_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown activation {self.activation!r}: choose one of {ACTIVATION_NAMES}{hint}"
            )
        if self.d_in < 1 or self.d_sae < 1:
            raise ConfigError(f"d_in and d_sae must be positive, got {self.d_in} and {self.d_sae}")
        if self.activation in _K_RULES and not 1 <= self.k < self.d_sae:
            raise ConfigError(f"k must satisfy 1 <= k < d_sae={self.d_sae}, got k={self.k}")
        if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold <= 0:
            raise ConfigError("jumprelu_bandwidth and jumprelu_init_threshold must be positive")
        if self.jumprelu_threshold_param not in ("log", "direct"):
            raise ConfigError(
                "jumprelu_threshold_param must be 'log' or 'direct', got "
                f"{self.jumprelu_threshold_param!r}"
            )
        if self.encoder_init_norm is not None and not self.encoder_init_norm > 0:
            raise ConfigError(f"encoder_init_norm must be positive, got {self.encoder_init_norm}")
        if self.normalize_activations not in ("none", "expected_norm"):
            raise ConfigError(
                f"normalize_activations must be 'none' or 'expected_norm', got {self.normalize_activations!r}"
            )
        if self.d_out is not None and self.d_out < 1:
            raise ConfigError(f"d_out must be positive (or None for an SAE), got {self.d_out}")
        if self.skip_connection and self.d_out is None:
            raise ConfigError(
                "skip_connection is for transcoders: set d_out (the output site's width) too"
            )
        if self.d_out is not None and self.normalize_activations != "none":
            raise ConfigError(
                "normalize_activations='expected_norm' is for SAEs; a transcoder's input and "
                "output live at different sites, so it reads and writes raw activations "
                "(normalize_activations='none')"
            )
        if self.activation == "gated" and self.d_out is not None:
            raise ConfigError(
                "activation='gated' is for SAEs: SAELens has no gated transcoder to match, so "
                "mechscope builds none (drop d_out, or use relu or jumprelu)"
            )
        self._check_matryoshka()

    def _check_matryoshka(self) -> None:
        widths = self.matryoshka_widths
        if self.activation != "matryoshka_batchtopk":
            if widths is not None:
                raise ConfigError(
                    f"matryoshka_widths is for activation='matryoshka_batchtopk'; this config "
                    f"has activation={self.activation!r}: drop the field or change the activation"
                )
            return
        if self.d_out is not None:
            raise ConfigError(
                "matryoshka_batchtopk is for SAEs: SAELens has no Matryoshka transcoder to "
                "match, so mechscope builds none (drop d_out, or use batchtopk)"
            )
        if not widths:
            raise ConfigError(
                "matryoshka_batchtopk needs matryoshka_widths, the nested prefix widths ending at "
                f"d_sae, e.g. ({self.d_sae // 4}, {self.d_sae})"
            )
        if any(not isinstance(w, int) or isinstance(w, bool) for w in widths):
            raise ConfigError(f"matryoshka_widths must be integers, got {widths}")
        if any(b <= a for a, b in zip(widths, widths[1:], strict=False)) or widths[0] < 1:
            raise ConfigError(
                f"matryoshka_widths must be positive and strictly increasing, got {widths}"
            )
        if widths[-1] != self.d_sae:
            raise ConfigError(
                f"the last matryoshka width is the whole dictionary: it must equal "
                f"d_sae={self.d_sae}, got {widths} (append {self.d_sae})"
            )
        if self.k >= widths[0]:
            raise ConfigError(
                f"k={self.k} must be below the smallest matryoshka width {widths[0]}: a prefix "
                "no wider than k could be wholly active on an average row"
            )

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary predicts another site (``d_out`` set)."""
        return self.d_out is not None

    @property
    def out_width(self) -> int:
        """Width of what the dictionary writes: ``d_out``, or ``d_in`` for an SAE."""
        return self.d_in if self.d_out is None else self.d_out


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    total_steps: int = 1000
    """Optimizer steps to take."""
    batch_size: int = 4096
    """Activation vectors per step (global, across all data-parallel processes)."""
    lr: float = 2e-4
    """Peak learning rate of Adam."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""
    lr_warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr``."""
    lr_decay_steps: int = 0
    """Linear decay to 0 over the last this many steps."""
    sparsity_coefficient: float = 0.0
    """L1 coefficient (relu) or L0 coefficient (jumprelu); unused by topk and batchtopk."""
    sparsity_warmup_steps: int = 0
    """Linear warm-up of the sparsity coefficient from 0."""
    aux_k: int | None = None
    """Latents the aux-k loss may use to model the residual error (default d_in // 2); 0 turns it off."""
    aux_coefficient: float = 1 / 32
    """Weight of the aux-k loss."""
    dead_after_tokens: int = 10_000_000
    """A latent is dead once it has not fired for this many training tokens."""
    grad_clip_norm: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping)."""
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """How to initialise the decoder bias from the first batches of data."""
    init_batches: int = 4
    """Batches read for the b_dec and normalisation estimates."""
    calibration_batches: int = 4
    """After the last step, an architecture with inference state set from data (BatchTopK's
    threshold) sets it from the final weights on the last this many training batches (0: keep
    the running estimate)."""
    sparse_path: Literal["auto", "on", "off"] = "auto"
    """TopK only: compute the step sparsely through ``kernels`` (Triton on CUDA, the eager
    reference on CPU). ``auto`` turns it on for TopK SAEs; the dense path is the reference."""
    mixed_precision: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU, where training stays fp32 and bit-reproducible)."""
    seed: int = 0
    """Seeds the SAE initialisation and the data order."""
    checkpoint_every: int = 0
    """Write an atomic checkpoint every this many steps (0: only at the end)."""
    log_every: int = 10
    """Append metrics to metrics.jsonl every this many steps."""
    wandb_project: str | None = None
    """Also log to this Weights & Biases project."""

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.batch_size < 1:
            raise ConfigError("total_steps and batch_size must be positive")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.lr_warmup_steps + self.lr_decay_steps > self.total_steps:
            raise ConfigError("lr_warmup_steps + lr_decay_steps must not exceed total_steps")
        if self.calibration_batches < 0:
            raise ConfigError(
                f"calibration_batches must be 0 or more, got {self.calibration_batches}"
            )
        if self.sparse_path not in ("auto", "on", "off"):
            raise ConfigError(f"sparse_path must be auto, on or off, got {self.sparse_path!r}")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ConfigError(
                f"b_dec_init must be geometric_median, mean or zeros, got {self.b_dec_init!r}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where training activations come from: a store on disk, or a model run on the fly."""

    store: str | None = None
    """Path of an ActivationStore; takes precedence over ``model``."""
    model: str | None = None
    """A name for ``interp.models.load_model``, streamed with ``stop_at_layer``."""
    hook: str | None = None
    """The hook to read (required with ``model``; with a store, needed only if it holds several)."""
    corpus: Literal["shakespeare"] = "shakespeare"
    """Text the model reads when streaming."""
    context_size: int = 128
    """Tokens per context when streaming."""
    max_tokens: int | None = None
    """Stop streaming after this many tokens (None: the whole corpus, then stop)."""

    def __post_init__(self) -> None:
        if self.store is None and self.model is None:
            raise ConfigError("data needs either 'store' (a path) or 'model' (plus 'hook')")
        if self.store is None and self.hook is None:
            raise ConfigError(
                "streaming from a model needs 'hook', e.g. 'blocks.15.hook_resid_post'"
            )


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build ``cls`` from a dict, naming unknown keys and their closest valid names."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, names, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown {cls.__name__} fields: {', '.join(hints)}; valid fields: {names}"
        )
    kwargs = dict(data)
    for name in ("betas", "matryoshka_widths"):
        if isinstance(kwargs.get(name), list):
            kwargs[name] = tuple(kwargs[name])
    return cls(**kwargs)


def config_to_json(cfg: Any) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2)
