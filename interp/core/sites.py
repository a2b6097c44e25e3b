"""Sites: the one table of where activations live in a TransformerLens model.

A site is a per-layer hook with a known activation layout:

- ``bpd``:  ``[batch, pos, d]``           resid_pre / resid_mid / resid_post, attn_out, mlp_out,
  mlp_in, and the per-head inputs under split q/k/v (``bphd``: q_input, k_input, v_input);
- ``bphd``: ``[batch, pos, head, d]``     z, q, k, v (k and v have the key/value heads under GQA);
- ``bhqk``: ``[batch, head, dest, src]``  pattern, attn_scores.

Patching indexes sites by ``layer``, ``pos``, ``head`` and ``src_pos``; steering adds vectors at
the residual-width sites (:func:`residual_sites`). New sites (a dictionary's latents, say) are
added with :func:`register_site`; every method that takes ``site=`` sees them.

>>> SITES["z"].hook_name(3)
'blocks.3.attn.hook_z'
>>> residual_sites()
('resid_pre', 'resid_mid', 'resid_post', 'attn_out', 'mlp_out')
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interp.core.adapter import adapt
from interp.validate import did_you_mean

__all__ = [
    "AXES",
    "SITES",
    "Cell",
    "Site",
    "axis_sizes",
    "enumerate_cells",
    "register_site",
    "residual_sites",
    "site_hook",
    "site_spec",
]

AXES = ("layer", "pos", "head", "src_pos")
_LAYOUT_AXES = {
    "bpd": ("layer", "pos"),
    "bphd": ("layer", "pos", "head"),
    "bhqk": ("layer", "pos", "head", "src_pos"),
}


@dataclass(frozen=True)
class Site:
    """One per-layer hook: its short name, its hook template and its activation layout."""

    name: str
    hook: str  # format string with {layer}
    layout: str  # "bpd" | "bphd" | "bhqk"
    residual: bool = False  # width d_model at every position: a steering vector can be added
    kv: bool = False  # indexed by key/value heads under grouped-query attention
    needs_split_inputs: bool = False  # exists only with split q/k/v inputs or hook_mlp_in on

    @property
    def axes(self) -> tuple[str, ...]:
        return _LAYOUT_AXES[self.layout]

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)


SITES: dict[str, Site] = {}


def register_site(site: Site) -> Site:
    """Add a site to the table (an error if the name is taken by a different site)."""
    if site.layout not in _LAYOUT_AXES:
        raise ValueError(f"site {site.name!r}: layout must be one of {sorted(_LAYOUT_AXES)}")
    old = SITES.get(site.name)
    if old is not None and old != site:
        raise ValueError(f"site {site.name!r} is already registered as {old}")
    SITES[site.name] = site
    return site


for _s in (
    Site("resid_pre", "blocks.{layer}.hook_resid_pre", "bpd", residual=True),
    Site("resid_mid", "blocks.{layer}.hook_resid_mid", "bpd", residual=True),
    Site("resid_post", "blocks.{layer}.hook_resid_post", "bpd", residual=True),
    Site("attn_out", "blocks.{layer}.hook_attn_out", "bpd", residual=True),
    Site("mlp_out", "blocks.{layer}.hook_mlp_out", "bpd", residual=True),
    Site("z", "blocks.{layer}.attn.hook_z", "bphd"),
    Site("q", "blocks.{layer}.attn.hook_q", "bphd"),
    Site("k", "blocks.{layer}.attn.hook_k", "bphd", kv=True),
    Site("v", "blocks.{layer}.attn.hook_v", "bphd", kv=True),
    Site("pattern", "blocks.{layer}.attn.hook_pattern", "bhqk"),
    Site("attn_scores", "blocks.{layer}.attn.hook_attn_scores", "bhqk"),
    Site("q_input", "blocks.{layer}.hook_q_input", "bphd", needs_split_inputs=True),
    Site("k_input", "blocks.{layer}.hook_k_input", "bphd", kv=True, needs_split_inputs=True),
    Site("v_input", "blocks.{layer}.hook_v_input", "bphd", kv=True, needs_split_inputs=True),
    Site("mlp_in", "blocks.{layer}.hook_mlp_in", "bpd", needs_split_inputs=True),
):
    register_site(_s)


def residual_sites() -> tuple[str, ...]:
    """The sites whose activation is ``[batch, pos, d_model]`` (where steering vectors go)."""
    return tuple(name for name, s in SITES.items() if s.residual)


def _unknown(site: str, names: Sequence[str], what: str) -> ValueError:
    return ValueError(
        f"unknown {what} {site!r}: expected one of {', '.join(names)}{did_you_mean(site, names)}"
    )


def site_hook(site: str, layer: int, *, residual: bool = False) -> str:
    """The hook name of ``site`` at ``layer`` (``residual=True``: only residual-width sites)."""
    names = residual_sites() if residual else tuple(SITES)
    if site not in names:
        what = "steering site" if residual else "site"
        err = _unknown(site, names, what)
        if residual:
            err = ValueError(f"{err} (hooks whose activation is [batch, pos, d_model])")
        raise err
    return SITES[site].hook_name(layer)


def site_spec(site: str, over: Sequence[str]) -> Site:
    """The site, after checking it exists and supports every axis in ``over``."""
    if site not in SITES:
        raise _unknown(site, list(SITES), "site")
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

    def source_index(self, layout: str, p0: int) -> tuple[slice | int, ...]:
        """Index into a whole-sequence source activation (batch axis excluded) giving what goes
        where :meth:`index` points in an activation whose position axis starts at ``p0``."""
        at = list(self.index(layout, 0))
        if self.pos is None:  # a patch over every position: the source from p0 on
            at[1 if layout == "bhqk" else 0] = slice(p0, None)
        return tuple(at)


def axis_sizes(model: Any, site: Site, n_pos: int) -> dict[str, int]:
    """How many layers, positions, heads (key/value heads for k/v) and source positions."""
    spec = adapt(model).spec
    n_heads = spec.n_kv_heads if site.kv else spec.n_heads
    return {"layer": spec.n_layers, "pos": n_pos, "head": n_heads, "src_pos": n_pos}


def enumerate_cells(
    over: Sequence[str], ranges: dict[str, list[int]]
) -> tuple[list[Cell], tuple[int, ...]]:
    """Every cell of the sweep, in row-major order of ``over`` (the result's layout)."""
    cells = [
        Cell(**dict(zip(over, combo, strict=True)))
        for combo in itertools.product(*(ranges[a] for a in over))
    ]
    return cells, tuple(len(ranges[a]) for a in over)


del _s
