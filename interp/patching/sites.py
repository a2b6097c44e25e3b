"""Patchable sites, the axes a sweep may index, and how one cell's patch is written.

Three activation layouts cover every per-layer TL site:

- ``bpd``:  ``[batch, pos, d]``           resid_pre / resid_mid / resid_post, attn_out, mlp_out
- ``bphd``: ``[batch, pos, head, d]``     z, q, k, v (k and v have the key/value heads under GQA)
- ``bhqk``: ``[batch, head, dest, src]``  pattern, attn_scores

Axis names: ``layer`` (always), ``pos`` (the query/destination position for patterns), ``head``,
``src_pos`` (patterns only).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from interp.hooks import TLModel
from interp.validate import did_you_mean

__all__ = ["AXES", "SITES", "Cell", "Site", "site_spec"]

AXES = ("layer", "pos", "head", "src_pos")


@dataclass(frozen=True)
class Site:
    name: str
    hook: str  # format string with {layer}
    layout: str  # "bpd" | "bphd" | "bhqk"

    @property
    def axes(self) -> tuple[str, ...]:
        return {
            "bpd": ("layer", "pos"),
            "bphd": ("layer", "pos", "head"),
            "bhqk": ("layer", "pos", "head", "src_pos"),
        }[self.layout]

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)


SITES: dict[str, Site] = {
    s.name: s
    for s in [
        Site("resid_pre", "blocks.{layer}.hook_resid_pre", "bpd"),
        Site("resid_mid", "blocks.{layer}.hook_resid_mid", "bpd"),
        Site("resid_post", "blocks.{layer}.hook_resid_post", "bpd"),
        Site("attn_out", "blocks.{layer}.hook_attn_out", "bpd"),
        Site("mlp_out", "blocks.{layer}.hook_mlp_out", "bpd"),
        Site("z", "blocks.{layer}.attn.hook_z", "bphd"),
        Site("q", "blocks.{layer}.attn.hook_q", "bphd"),
        Site("k", "blocks.{layer}.attn.hook_k", "bphd"),
        Site("v", "blocks.{layer}.attn.hook_v", "bphd"),
        Site("pattern", "blocks.{layer}.attn.hook_pattern", "bhqk"),
        Site("attn_scores", "blocks.{layer}.attn.hook_attn_scores", "bhqk"),
    ]
}


def site_spec(site: str, over: Sequence[str]) -> Site:
    """The site, after checking it exists and supports every axis in ``over``."""
    if site not in SITES:
        raise ValueError(
            f"unknown site {site!r}: expected one of {', '.join(SITES)}{did_you_mean(site, SITES)}"
        )
    spec = SITES[site]
    over = tuple(over)
    if "layer" not in over:
        raise ValueError(f"`over` must include 'layer' (got {over}); e.g. ('layer', 'pos')")
    if len(set(over)) != len(over):
        raise ValueError(f"`over` repeats an axis: {over}")
    bad = [a for a in over if a not in spec.axes]
    if bad:
        raise ValueError(
            f"site {site!r} cannot be indexed by {bad}; its axes are {spec.axes} "
            f"(activation layout {spec.layout}){did_you_mean(bad[0], spec.axes)}"
        )
    return spec


@dataclass(frozen=True)
class Cell:
    """One patch: a layer and, per indexed axis, an index (``None``: the whole axis)."""

    layer: int
    pos: int | None = None
    head: int | None = None
    src_pos: int | None = None

    @property
    def first_pos(self) -> int:
        """The earliest position the patch can change: nothing before it differs from the base."""
        return 0 if self.pos is None else self.pos

    def index(self, layout: str, p0: int) -> tuple[slice | int, ...]:
        """Index into an activation whose position axis starts at ``p0`` (batch axis excluded)."""
        full = slice(None)
        pos = full if self.pos is None else self.pos - p0
        head = full if self.head is None else self.head
        if layout == "bpd":
            return (pos,)
        if layout == "bphd":
            return (pos, head)
        src = full if self.src_pos is None else self.src_pos
        return (head, pos, src)


def axis_sizes(model: TLModel, site: Site, n_pos: int) -> dict[str, int]:
    cfg = model.cfg
    n_heads = cfg.n_heads
    if site.name in ("k", "v") and getattr(cfg, "n_key_value_heads", None):
        n_heads = cfg.n_key_value_heads
    return {"layer": cfg.n_layers, "pos": n_pos, "head": n_heads, "src_pos": n_pos}


def enumerate_cells(
    over: Sequence[str], ranges: dict[str, list[int]]
) -> tuple[list[Cell], tuple[int, ...]]:
    """Every cell of the sweep, in row-major order of ``over`` (the result's layout)."""
    cells = [
        Cell(**dict(zip(over, combo, strict=True)))
        for combo in itertools.product(*(ranges[a] for a in over))
    ]
    return cells, tuple(len(ranges[a]) for a in over)
