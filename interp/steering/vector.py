"""The steering vector: a direction at one hook, with what made it, and the checks on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.sites import site_hook
from interp.hooks import TLModel
from interp.validate import check_layer as _check_layer

__all__ = ["SteeringVector", "check_layer", "check_width", "hook_name_for"]


@dataclass(frozen=True)
class SteeringVector:
    """A direction in one hook's ``d_model`` space.

    ``vector`` is in activation units: adding it with α = 1 moves activations by the separation of
    the two classes along the direction (the difference of means for CAA). ``threshold`` is the
    projection on the unit direction that separates the classes (for reading and probes).
    """

    vector: Float[Tensor, " d_model"]
    layer: int
    site: str = "resid_pre"
    method: str = "diff_mean"
    threshold: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)  # fingerprint, data hash, position, ...

    @property
    def hook_name(self) -> str:
        return hook_name_for(self.site, self.layer)

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        norm = self.vector.norm()
        if norm == 0:
            raise ValueError("the steering vector is zero: it has no direction")
        return self.vector / norm

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[-1])

    def at(self, layer: int) -> SteeringVector:
        """The same vector, to be applied at another layer (same site)."""
        return replace(self, layer=layer)

    def __repr__(self) -> str:
        return (
            f"SteeringVector({self.method}, {self.hook_name}, d_model={self.d_model}, "
            f"norm={float(self.vector.norm()):.3g})"
        )


def hook_name_for(site: str, layer: int) -> str:
    """The hook of a residual-width site (see :func:`interp.core.sites.residual_sites`)."""
    return site_hook(site, layer, residual=True)


def check_layer(model: TLModel, layer: int) -> None:
    """A block index of ``model``, counted from 0 (no negative layers for steering)."""
    _check_layer(layer, adapt(model).spec.n_layers)


def check_width(model: TLModel, vector: Tensor, where: str) -> None:
    d = adapt(model).spec.d_model
    if vector.ndim != 1 or vector.shape[0] != d:
        raise ValueError(
            f"the vector for {where} has shape {tuple(vector.shape)}, but this model's d_model is "
            f"{d}: expected shape ({d},). Was it extracted from another model?"
        )
    if not torch.isfinite(vector).all():
        raise ValueError(f"the vector for {where} has non-finite entries")
