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
"""

from __future__ import annotations

from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from saes.sae import SAE

__all__ = ["Transcoder"]


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
