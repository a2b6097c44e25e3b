"""Sparse activation functions, registered by name. Each maps pre-activations ``[batch, d_sae]`` to
latent activations of the same shape; any state (a JumpReLU threshold, a BatchTopK inference
threshold) is a declared parameter or buffer of the module.

Each activation is also its dictionary's *architecture*: it owns the training terms it adds to the
reconstruction loss (``sparsity_loss``, ``aux_loss``, ``extra_loss``), whether decoder rows are
kept at unit norm, and which ``kernels`` sparse step (if any) trains it. ``saes.losses`` composes
these; nothing branches on the activation's name.

    topk, batchtopk : aux-k on dead latents          relu     : L1 weighted by decoder norms
    jumprelu        : L0 (straight-through in θ)     (subclass :class:`Activation` for new ones)
    matryoshka_batchtopk, gated: ``saes.matryoshka``, ``saes.gated``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "BatchTopK",
    "JumpReLU",
    "ReLU",
    "TopK",
    "architecture",
    "aux_k_term",
    "make_activation",
    "register_activation",
]

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {}


def register_activation(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        ACTIVATIONS[name] = cls
        return cls

    return wrap


def make_activation(cfg: Any) -> nn.Module:
    return ACTIVATIONS[cfg.activation](cfg)


def topk_mask_values(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest pre-activations per row, rectified, with their latent indices."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return values.relu(), indices


class Activation(nn.Module):
    """Base of the registered activations: the architecture's training terms, none by default.

    ``saes.losses.sae_loss`` adds ``sparsity_loss`` and ``aux_loss`` to the reconstruction error;
    a term returned as ``None`` is absent (reported as 0). ``sae`` is the dictionary (an
    ``saes.SAE`` or ``saes.Transcoder``), ``out`` its ``SAEOutput`` on the batch and ``target``
    what it should reconstruct (the input for an SAE), in raw activation space.
    """

    unit_norm_decoder: ClassVar[bool] = True
    """Decoder rows are projected back to unit norm after each step (False: the penalty uses them)."""
    sparse_kernel: ClassVar[str | None] = None
    """The ``activation`` of ``kernels.autograd.sparse_sae_loss`` that trains this SAE sparsely
    (None: only the dense path)."""
    default_encoder_init_norm: ClassVar[float | None] = None
    """The encoder's initial column norm when the config leaves it unset (None: 0.01 with unit
    decoder rows, SAELens's initial function; 1 with free decoder norms)."""
    nonnegative: ClassVar[bool] = False
    """Every latent is ≥ 0 (the built-ins): a latent has fired where its column maximum is
    positive, and the trainer skips the column minimum (a full pass over the codes)."""

    def activate(self, sae: Any, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        """The latents from the pre-activations; an architecture that also reads the
        dictionary's parameters (gated) overrides this rather than ``forward``."""
        return self(pre)  # type: ignore[no-any-return]

    def sparsity_loss(self, sae: Any, out: Any, coefficient: float) -> Float[Tensor, ""] | None:
        return None

    def extra_loss(
        self, sae: Any, target: Float[Tensor, "batch d_out"], out: Any
    ) -> Float[Tensor, ""] | None:
        """Further reconstruction terms, always weighted 1 (Matryoshka's inner prefixes, a gated
        SAE's gate-path reconstruction); ``None`` for most architectures."""
        return None

    def aux_loss(
        self,
        sae: Any,
        target: Float[Tensor, "batch d_out"],
        out: Any,
        dead: Bool[Tensor, " d_sae"],
        k_aux: int,
        coefficient: float,
    ) -> Float[Tensor, ""] | None:
        return None

    def calibrate_(self, pre: Float[Tensor, "rows d_sae"]) -> None:
        """After training: set inference state (a BatchTopK threshold) from the final weights'
        pre-activations on recent training rows. Nothing to set by default."""


_DEFAULT_ARCHITECTURE = Activation()


def architecture(act: nn.Module) -> Activation:
    """``act`` itself, or the term-free default for a registered module that is no ``Activation``."""
    return act if isinstance(act, Activation) else _DEFAULT_ARCHITECTURE


def aux_k_term(
    sae: Any,
    target: Float[Tensor, "batch d_out"],
    out: Any,
    dead: Bool[Tensor, " d_sae"],
    k_aux: int,
) -> Float[Tensor, ""]:
    """min(n_dead / k_aux, 1) · ‖ê − e‖² / ‖e − mean(e)‖², with e = target − recon (detached, in
    the dictionary's normalised space) and ê the k_aux largest dead pre-activations (rectified)
    decoded without bias. The auxiliary loss is Gao et al.'s (2024, §A.2; α-free here); the
    min(n_dead / k_aux, 1) down-weighting is EleutherAI sparsify's and SAELens's, not theirs
    (docs/methods.md)."""
    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux <= 0:
        return out.pre.new_zeros(())  # type: ignore[no-any-return]
    # The scale uses the requested k_aux, not the clipped count: with fewer dead latents than
    # k_aux the term is down-weighted by n_dead / k_aux.
    scale = min(n_dead / k_aux, 1.0)
    k = min(k_aux, n_dead)
    s = sae.out_scale
    t_in = target.to(out.pre.dtype) * s.to(out.pre.dtype)
    err = (t_in - out.recon * s.to(out.recon.dtype)).detach()  # [batch, d_out]
    masked = out.pre.masked_fill(~dead, float("-inf"))
    values, indices = topk_mask_values(masked, k)
    err_hat = torch.zeros_like(out.pre).scatter_(-1, indices, values) @ sae.W_dec
    variance = (err - err.mean(0)).pow(2).sum().clamp_min(1e-8)
    return scale * (err_hat - err).pow(2).sum() / variance  # type: ignore[no-any-return]


class _AuxK(Activation):
    """TopK-style architectures: no sparsity penalty (the rule fixes L0); aux-k on dead latents."""

    nonnegative = True

    def aux_loss(
        self,
        sae: Any,
        target: Float[Tensor, "batch d_out"],
        out: Any,
        dead: Bool[Tensor, " d_sae"],
        k_aux: int,
        coefficient: float,
    ) -> Float[Tensor, ""] | None:
        if not coefficient:
            return None
        return coefficient * aux_k_term(sae, target, out, dead, k_aux)


@register_activation("topk")
class TopK(_AuxK):
    """Keep the k largest pre-activations of each row (rectified); zero the rest."""

    sparse_kernel = "topk"

    def __init__(self, cfg: Any):
        super().__init__()
        self.k = cfg.k

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        values, indices = topk_mask_values(pre, self.k)
        return torch.zeros_like(pre).scatter_(-1, indices, values)


class _KeptCodes(torch.autograd.Function):
    """Codes from BatchTopK's kept entries (flat ``indices``, rectified ``values``, no grad):
    zeros elsewhere. The gradient to ``pre`` is the code's gradient at kept positive entries,
    what autograd gives through relu, top-k and scatter, without their full-size passes."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, values: Tensor, indices: Tensor) -> Tensor:
        ctx.save_for_backward(indices, (values > 0).to(values.dtype))
        return torch.zeros_like(pre).view(-1).scatter_(0, indices, values).view_as(pre)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        indices, positive = ctx.saved_tensors
        kept = grad.reshape(-1).gather(0, indices) * positive
        return torch.zeros_like(grad).view(-1).scatter_(0, indices, kept).view_as(grad), None, None


@register_activation("batchtopk")
class BatchTopK(_AuxK):
    """Training: keep the k·batch largest rectified pre-activations over the whole batch.

    Inference: one fixed threshold, so each row's code no longer depends on the rest of its
    batch. During training it is a moving average (``momentum``) of the smallest kept value;
    ``calibrate_`` (the trainer calls it after the last step) replaces it by the smallest value
    BatchTopK keeps on recent rows under the final weights, so inference L0 is k on those rows.
    The moving average alone lags: started at the first batch's value (large codes of the
    initial weights) it gave L0 6.2 at k 8 after 200 steps; SAELens's, started at 0, 13.
    """

    threshold: Tensor  # buffer

    def __init__(self, cfg: Any, momentum: float = 0.01):
        super().__init__()
        self.k = cfg.k
        self.momentum = momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0 until first estimated
        self._last_low = 0.0  # a search bound only (not state): any value gives the same result

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        if not self.training:
            if float(self.threshold) < 0:
                raise RuntimeError(
                    "BatchTopK has no inference threshold yet: train it first (or use .train())"
                )
            return pre * (pre > self.threshold)
        with torch.no_grad():
            values, indices = self._kept(pre)
        acts = _KeptCodes.apply(pre, values, indices)
        with torch.no_grad():
            positive = values[values > 0]
            if positive.numel():
                low = positive.min().to(self.threshold.dtype)
                t = self.threshold
                t.copy_(low if float(t) < 0 else (1 - self.momentum) * t + self.momentum * low)
        return acts

    def _kept(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """The k·rows largest rectified values of ``pre`` and their flat indices."""
        flat = pre.flatten()
        n = min(self.k * pre.shape[0], flat.numel())
        bound = (
            0.8 * self._last_low
        )  # the previous batch's smallest kept value: weights move little
        if bound > 0:
            # When at least n values exceed a bound, the n largest all do: select among those
            # only (all positive: no rectifying pass). Exact, and about twice as fast as a top-k
            # over every value on CPU.
            idx = (flat > bound).nonzero().squeeze(1)
            if idx.numel() >= n:
                values, i = flat[idx].topk(n, sorted=False)
                self._last_low = float(values.detach().min())
                return values, idx[i]
        values, indices = flat.relu().topk(n, sorted=False)
        self._last_low = float(values.detach().min())
        return values, indices

    @torch.no_grad()
    def calibrate_(self, pre: Float[Tensor, "rows d_sae"]) -> None:
        """Threshold = the smallest positive value BatchTopK keeps on these rows as one batch."""
        values, _ = self._kept(pre)
        positive = values[values > 0]
        if positive.numel():
            self.threshold.copy_(positive.min().to(self.threshold.dtype))


def _step(d: Tensor) -> Tensor:
    """H(d) as floats, 1 where d > 0 (sign then clamp: 2.5x faster on CPU than ``(d > 0).to``)."""
    return d.sign().clamp_min_(0)


def _masks(pre: Tensor, threshold: Tensor, bandwidth: float) -> tuple[Tensor, Tensor]:
    """H(z − θ) and minus the rectangle kernel's support, −[|z − θ| < ε/2], as floats. Exact: the
    sign of a float difference is that of the comparison. The window is built in place in the
    difference's buffer and kept negated (one pass fewer); the backward folds the sign in."""
    d = pre - threshold
    above = _step(d)
    return above, d.abs_().sub_(bandwidth / 2).sign_().clamp_max_(0)


class _JumpReLUFn(torch.autograd.Function):
    """(z·H(z − θ), per row Σᵢ H(zᵢ − θᵢ)): the codes and their L0 from one pair of masks.
    Gradient to z as if H were constant; to θ by the rectangle kernel, for both outputs:
    ∂/∂θᵢ = −(θᵢ/ε) Σ_rows g_acts·[|z − θᵢ| < ε/2] − (1/ε) Σ_rows g_l0·[|z − θᵢ| < ε/2].
    Saves H and the negated window as floats (multiplying by them is the cheapest backward on CPU)."""

    @staticmethod
    def forward(
        ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float
    ) -> tuple[Tensor, Tensor]:
        above, neg_window = _masks(pre, threshold, bandwidth)
        ctx.save_for_backward(above, neg_window, threshold)
        ctx.bandwidth = bandwidth
        return pre * above, above.sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, grad_l0: Tensor | None) -> tuple[Any, ...]:
        above, neg_window, threshold = ctx.saved_tensors
        d_pre = None if grad is None else grad * above
        d_theta = torch.zeros_like(threshold)
        if grad is not None:
            d_theta = (threshold / ctx.bandwidth) * (grad * neg_window).sum(0)
        if grad_l0 is not None:
            d_theta = d_theta + (grad_l0 @ neg_window) / ctx.bandwidth
        return d_pre, d_theta, None


@register_activation("jumprelu")
class JumpReLU(Activation):
    """z·H(z − θ) with a learned per-latent threshold θ (Rajamanoharan et al. 2024).

    ``jumprelu_threshold_param`` picks what Adam trains: ``threshold_param`` (θ itself, projected
    to θ ≥ 0 before each training forward, as SAELens 6; the default) or ``log_threshold``
    (θ = exp of it).
    """

    nonnegative = True  # θ ≥ 0 (projected in training, or exp of log θ): z > θ means z > 0
    # Chosen on the synthetic development world (not the benchmark's) at d 64 and d 256: MCC 0.580
    # vs 0.565 (0.01) and 0.474 (1); 0.305 vs 0.250 (0.01) and 0.272 (1). docs/saes.md.
    default_encoder_init_norm = 0.1

    def __init__(self, cfg: Any):
        super().__init__()
        self.bandwidth = cfg.jumprelu_bandwidth
        self.direct = cfg.jumprelu_threshold_param == "direct"
        self._l0_of: tuple[Tensor, Tensor] | None = None  # (pre, per-row L0) of the last forward
        init = torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold))
        if self.direct:
            self.threshold_param = nn.Parameter(init)
        else:
            self.log_threshold = nn.Parameter(init.log())

    @property
    def threshold(self) -> Tensor:
        return self.threshold_param if self.direct else self.log_threshold.exp()

    @torch.no_grad()
    def set_threshold_(self, theta: Float[Tensor, " d_sae"]) -> None:
        """Set θ, whichever parameter Adam trains. θ ≤ 0 becomes the smallest θ that parameter
        holds (0 direct, the smallest positive float as log θ): z·[z > θ] is then a ReLU, as
        SAELens's relu(z)·[z > θ] is for any θ ≤ 0."""
        if self.direct:
            self.threshold_param.copy_(theta.clamp_min(0.0))
        else:
            tiny = torch.finfo(theta.dtype).tiny
            self.log_threshold.copy_(theta.clamp_min(tiny).log())

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        if self.direct and self.training:
            with torch.no_grad():  # a projection, not a clamp in the graph (θ keeps its gradient)
                self.threshold_param.clamp_(min=0.0)
        acts, l0 = _JumpReLUFn.apply(pre, self.threshold, self.bandwidth)
        # The training step's L0 penalty reads the same masks: kept for one l0(pre) call.
        self._l0_of = (pre, l0) if self.training and torch.is_grad_enabled() else None
        return acts  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_l0_of": None}  # copies and pickles leave the graph behind

    def l0(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, ""]:
        """Mean number of active latents per row, differentiable in the threshold."""
        kept, self._l0_of = self._l0_of, None
        if kept is not None and kept[0] is pre:
            return kept[1].mean()  # type: ignore[no-any-return]
        return _JumpReLUFn.apply(pre, self.threshold, self.bandwidth)[1].mean()  # type: ignore[no-any-return]

    def sparsity_loss(self, sae: Any, out: Any, coefficient: float) -> Float[Tensor, ""] | None:
        """λ · mean over rows of Σᵢ H(zᵢ − θᵢ) (L0, straight-through in θ)."""
        return coefficient * self.l0(out.pre) if coefficient else None


@register_activation("relu")
class ReLU(Activation):
    """max(z, 0), trained with an L1 penalty weighted by decoder norms (which are left free)."""

    unit_norm_decoder = False
    nonnegative = True

    def __init__(self, cfg: Any):
        super().__init__()

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return pre.relu()

    def sparsity_loss(self, sae: Any, out: Any, coefficient: float) -> Float[Tensor, ""] | None:
        """λ · mean over rows of Σᵢ aᵢ ‖W_dec[i]‖."""
        if not coefficient:
            return None
        return coefficient * (out.acts * sae.W_dec.norm(dim=-1)).sum(-1).mean()  # type: ignore[no-any-return]
