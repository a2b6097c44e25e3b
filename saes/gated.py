"""Gated SAE (Rajamanoharan et al. 2024; SAELens's ``gated``).

A gate path decides which latents fire, a magnitude path (sharing W_enc up to a per-latent scale)
sets their values. With x̃ = x·s − b_dec and the SAE's ``b_enc`` as the gate bias b_gate::

    π_gate = x̃ W_enc + b_gate                        (the SAE's pre-activations)
    π_mag  = exp(r_mag) ⊙ (x̃ W_enc) + b_mag            (= x̃ (W_enc ⊙ exp r_mag) + b_mag)
    acts   = [π_gate > 0] ⊙ relu(π_mag)
    loss   = ‖x̂ − x‖² + λ Σᵢ relu(π_gate)ᵢ ‖W_dec[i]‖ + ‖relu(π_gate) W_dec + b_dec − x‖²

(means over rows; λ is ``TrainConfig.sparsity_coefficient``; the last term, weight 1, trains the
gate path, which the Heaviside cuts off from the first). This is SAELens 6's ``GatedTrainingSAE``
loss term for term. Decoder rows are left free (the L1 term reads their norms). One difference:
``hook_sae_acts_pre`` carries π_gate here (SAELens's carries π_mag). SAEs only: SAELens has no
gated transcoder.

    >>> import torch
    >>> from saes import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=4, d_sae=8, activation="gated"), seed=0)
    >>> x = torch.randn(3, 4)
    >>> bool((sae.encode(x) > 0).le(sae.pre_acts(x) > 0).all())   # only open gates fire
    True
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saes.activations import Activation, register_activation

__all__ = ["Gated"]


@register_activation("gated")
class Gated(Activation):
    """The gated encoder's second half: r_mag and b_mag (per latent); b_gate is the SAE's b_enc."""

    unit_norm_decoder = False
    nonnegative = True  # H(gate) · ReLU(magnitude)

    def __init__(self, cfg: Any):
        super().__init__()
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        raise TypeError(
            "the gated activation reads its SAE's gate bias (b_enc): call sae.encode(x) or "
            "sae(x), not sae.act(pre)"
        )

    def magnitudes(
        self, sae: Any, pre: Float[Tensor, "batch d_sae"]
    ) -> Float[Tensor, "batch d_sae"]:
        """π_mag from π_gate (x̃ W_enc = π_gate − b_gate)."""
        return self.r_mag.exp() * (pre - sae.b_enc) + self.b_mag  # type: ignore[no-any-return]

    def activate(self, sae: Any, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return (pre > 0).to(pre.dtype) * self.magnitudes(sae, pre).relu()

    def sparsity_loss(self, sae: Any, out: Any, coefficient: float) -> Float[Tensor, ""] | None:
        """λ · mean over rows of Σᵢ relu(π_gate)ᵢ ‖W_dec[i]‖."""
        if not coefficient:
            return None
        return coefficient * (out.pre.relu() * sae.W_dec.norm(dim=-1)).sum(-1).mean()  # type: ignore[no-any-return]

    def extra_loss(
        self, sae: Any, target: Float[Tensor, "batch d_out"], out: Any
    ) -> Float[Tensor, ""] | None:
        """mean over rows of ‖relu(π_gate) W_dec + b_dec − x‖² (normalised space)."""
        s = sae.out_scale.to(out.pre.dtype)
        via_gate = out.pre.relu() @ sae.W_dec + sae.b_dec
        return (via_gate - target.to(out.pre.dtype) * s).pow(2).sum(-1).mean()  # type: ignore[no-any-return]
