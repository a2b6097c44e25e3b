"""Sparse activation functions, registered by name. Each maps pre-activations ``[batch, d_sae]`` to
latent activations of the same shape; any state (a JumpReLU threshold, a BatchTopK inference
threshold) is a declared parameter or buffer of the module."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "BatchTopK",
    "JumpReLU",
    "ReLU",
    "TopK",
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


@register_activation("topk")
class TopK(nn.Module):
    """Keep the k largest pre-activations of each row (rectified); zero the rest."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.k = cfg.k

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        values, indices = topk_mask_values(pre, self.k)
        return torch.zeros_like(pre).scatter_(-1, indices, values)


@register_activation("batchtopk")
class BatchTopK(nn.Module):
    """Training: keep the k·batch largest rectified pre-activations over the whole batch.

    Inference: a fixed threshold (an exponential moving average of the smallest kept activation
    during training), so each row's code no longer depends on the rest of its batch.
    """

    threshold: Tensor  # buffer

    def __init__(self, cfg: Any, momentum: float = 0.01):
        super().__init__()
        self.k = cfg.k
        self.momentum = momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0 until first estimated

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        if not self.training:
            if float(self.threshold) < 0:
                raise RuntimeError(
                    "BatchTopK has no inference threshold yet: train it first (or use .train())"
                )
            return pre * (pre > self.threshold)
        flat = pre.relu().flatten()
        n_keep = min(self.k * pre.shape[0], flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        acts = torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre)
        with torch.no_grad():
            positive = values[values > 0]
            if positive.numel():
                low = positive.min().to(self.threshold.dtype)
                t = self.threshold
                t.copy_(low if float(t) < 0 else (1 - self.momentum) * t + self.momentum * low)
        return acts


class _JumpReLUFn(torch.autograd.Function):
    """z·H(z − θ); gradient to z as if H were constant, to θ by a rectangle-kernel estimate."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype) / eps
        grad_threshold = -threshold * kernel * grad
        return grad_pre, grad_threshold.sum(0), None


class _StepFn(torch.autograd.Function):
    """H(z − θ) for the L0 penalty; gradient to θ only, by the same rectangle kernel."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype) / eps
        return None, (-kernel * grad).sum(0), None


@register_activation("jumprelu")
class JumpReLU(nn.Module):
    """z·H(z − θ) with a learned per-latent threshold θ = exp(log_threshold) (Rajamanoharan et al. 2024)."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.bandwidth = cfg.jumprelu_bandwidth
        self.log_threshold = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold))
        )

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return _JumpReLUFn.apply(pre, self.threshold, self.bandwidth)  # type: ignore[no-any-return]

    def l0(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, ""]:
        """Mean number of active latents per row, differentiable in the threshold."""
        return _StepFn.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()  # type: ignore[union-attr]


@register_activation("relu")
class ReLU(nn.Module):
    def __init__(self, cfg: Any):
        super().__init__()

    def forward(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        return pre.relu()
