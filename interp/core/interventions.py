"""Interventions as data, compiled to hooks, always removed.

An intervention says what to do to one hook's activation; :func:`compile_hooks` turns a list of
them into ``(hook name, fn)`` pairs and :func:`intervene` installs them for a ``with`` block
through :func:`interp.hooks.hooks`, so nothing is left on the model afterwards:

- :class:`Replace` — set an index of the activation to a value (patching);
- :class:`Add` — add ``scale · vector`` (steering);
- :class:`ProjectOut` — remove the component along a direction (directional ablation);
- :class:`Clamp` — set the projection on a direction to a value;
- :class:`Record` — keep the activation (caching);
- :class:`Splice` — run the activation through a dictionary and continue with its output;
- :func:`freeze_senders` — hold every sender of the component graph at given values except
  chosen ones (path patching, causal scrubbing).

``where`` (on the directional edits) maps the activation to a boolean mask ``[batch or 1, pos]``
of the positions to change, or ``None`` for everywhere.

>>> import torch
>>> fn = Add("blocks.0.hook_resid_pre", torch.ones(2), scale=3.0).hook_fn()
>>> fn(torch.zeros(1, 2, 2), None)[0, 0].tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.nodes import ComponentGraph, Node
from interp.hooks import HookFn, hooks

__all__ = [
    "Add",
    "Clamp",
    "FrozenBlock",
    "Intervention",
    "ProjectOut",
    "Record",
    "Replace",
    "Splice",
    "compile_hooks",
    "direction_edit",
    "freeze_senders",
    "intervene",
    "node_index",
]

Where = Callable[[Tensor], Tensor | None]


@dataclass(frozen=True, eq=False)
class Intervention:
    """One change to (or read of) one hook's activation."""

    hook: str

    def hook_fn(self) -> HookFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def hooks(self) -> list[tuple[str, HookFn]]:
        """The ``(hook name, fn)`` pairs that carry it out (one, except for a two-site splice)."""
        return [(self.hook, self.hook_fn())]


@dataclass(frozen=True, eq=False)
class Replace(Intervention):
    """``act[:, *index] = value`` (value broadcast over the batch when it has batch 1)."""

    value: Tensor
    index: tuple[Any, ...] = ()

    def hook_fn(self) -> HookFn:
        def fn(act: Tensor, hook: Any) -> Tensor:
            out = act.clone()
            out[(slice(None), *self.index)] = self.value.to(device=act.device, dtype=act.dtype)
            return out

        return fn


def direction_edit(x: Tensor, op: str, vector: Tensor, value: float) -> Tensor:
    """``add``: x + value·v; ``ablate``: x − (x·u)u; ``clamp``: x + (value − x·u)u (u = v/|v|)."""
    v = vector.to(device=x.device, dtype=x.dtype)
    if op == "add":
        return x + value * v
    u = v / v.norm()
    proj = (x @ u)[..., None]
    if op == "ablate":
        return x - proj * u
    if op == "clamp":
        return x + (value - proj) * u
    raise ValueError(f"unknown directional edit {op!r}: expected 'add', 'ablate' or 'clamp'")


@dataclass(frozen=True, eq=False)
class _Directional(Intervention):
    vector: Tensor
    where: Where | None = field(default=None, compare=False)
    op: str = field(default="", init=False)
    amount: float = field(default=0.0, init=False)

    def hook_fn(self) -> HookFn:
        def fn(act: Tensor, hook: Any) -> Tensor:
            new = direction_edit(act, self.op, self.vector, self.amount)
            mask = None if self.where is None else self.where(act)
            return new if mask is None else torch.where(mask[..., None], new, act)

        return fn


@dataclass(frozen=True, eq=False)
class Add(_Directional):
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", "add")
        object.__setattr__(self, "amount", float(self.scale))


@dataclass(frozen=True, eq=False)
class ProjectOut(_Directional):
    def __post_init__(self) -> None:
        object.__setattr__(self, "op", "ablate")


@dataclass(frozen=True, eq=False)
class Clamp(_Directional):
    value: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", "clamp")
        object.__setattr__(self, "amount", float(self.value))


@dataclass(frozen=True, eq=False)
class Record(Intervention):
    """Keep the activation in ``into[hook]`` (detached; cloned when ``clone``)."""

    into: dict[str, Tensor] = field(compare=False, hash=False)
    clone: bool = False

    def hook_fn(self) -> HookFn:
        def fn(act: Tensor, hook: Any) -> None:
            a = act.detach()
            self.into[self.hook] = a.clone() if self.clone else a

        return fn


@dataclass(frozen=True, eq=False)
class Splice(Intervention):
    """Replace the activation by ``dictionary.spliced(act)`` (its reconstruction plus its error
    term, through the dictionary's own hook points), over the trailing feature axis.

    A transcoder reads another site: ``input_hook`` (default: the ``hook`` its metadata records,
    e.g. ``blocks.L.ln2.hook_normalized``) is read in the same forward, and the activation at
    ``hook`` (the MLP output) is the target its error term keeps."""

    dictionary: Any = field(compare=False, hash=False)
    input_hook: str | None = None

    def _input_hook(self) -> str | None:
        cfg = getattr(self.dictionary, "cfg", None)
        if cfg is None or not getattr(cfg, "is_transcoder", False):
            if self.input_hook is not None:
                raise ValueError("input_hook is for transcoders; an SAE reads its own site")
            return None
        name = self.input_hook or cfg.metadata.get("hook")
        if not name or name == self.hook:
            raise ValueError(
                f"a transcoder splice at {self.hook!r} needs the site it reads: pass input_hook= "
                "(e.g. 'blocks.L.ln2.hook_normalized' for an MLP transcoder at 'blocks.L.hook_mlp_out')"
            )
        return str(name)

    def hook_fn(self) -> HookFn:
        return self.hooks()[-1][1]

    def hooks(self) -> list[tuple[str, HookFn]]:
        source = self._input_hook()
        seen: dict[str, Tensor] = {}

        def read(act: Tensor, hook: Any) -> None:
            seen["x"] = act

        def fn(act: Tensor, hook: Any) -> Tensor:
            lead = act.shape[:-1]
            if source is None:
                out = self.dictionary.spliced(act.reshape(-1, act.shape[-1]))
            else:
                if "x" not in seen:
                    raise RuntimeError(
                        f"the transcoder's input {source!r} did not run before {self.hook!r}"
                    )
                x = seen.pop("x")
                flat_x = x.reshape(-1, x.shape[-1])
                out = self.dictionary.spliced(flat_x, act.reshape(-1, act.shape[-1]))
            return out.reshape(*lead, out.shape[-1]).to(act.dtype)

        return [(source, read), (self.hook, fn)] if source is not None else [(self.hook, fn)]


def compile_hooks(interventions: Sequence[Intervention]) -> list[tuple[str, HookFn]]:
    """The hooks that carry out ``interventions``, in order."""
    out = []
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(
                f"expected an Intervention (Replace, Add, ...); got {type(iv).__name__}"
            )
        out.extend(iv.hooks())
    return out


@contextlib.contextmanager
def intervene(model: Any, interventions: Sequence[Intervention]) -> Iterator[Any]:
    """Apply ``interventions`` to every forward inside the ``with`` block; removed on exit."""
    adapter = adapt(model)
    for iv in interventions:
        if not isinstance(iv, Record):
            adapter.check_writable(iv.hook)
    with hooks(model, fwd=compile_hooks(interventions)):
        yield model


# -- freezing the component graph's senders ----------------------------------------------------
@dataclass
class FrozenBlock:
    """Rows of a stacked batch whose senders are held fixed.

    Every sender upstream of ``upstream_of`` (all senders when None) takes ``frozen(hook)`` on
    these rows, except the ``overrides``: (node, value of that node's slice; for an additive
    node, a dictionary feature, the change to add to its hook).
    """

    rows: slice
    frozen: Callable[[str], Tensor]
    upstream_of: int | None = None
    overrides: Sequence[tuple[Node, Callable[[], Tensor]]] = ()


def node_index(node: Node) -> tuple[Any, ...]:
    """Where a node sits in its hook's activation, batch axis excluded: (pos[, head])."""
    pos = slice(None) if node.pos is None else node.pos
    return (pos, node.head) if node.spec.per_head else (pos,)


def freeze_senders(
    graph: ComponentGraph,
    blocks: Sequence[FrozenBlock],
    *,
    before: Callable[[str, Tensor], None] | None = None,
    free: Callable[[str], bool] | None = None,
) -> list[tuple[str, HookFn]]:
    """Hooks on every sender hook that freeze each block's rows; ``before(name, act)`` sees the
    activation as computed, before it is frozen (to record a receiver MLP's output, say). A hook
    for which ``free(name)`` is true is left as computed (its overrides still apply): path
    patching in Wang et al.'s semantics recomputes the MLPs."""
    order = {s.hook: s.order for s in graph.senders}

    def make(name: str) -> HookFn:
        computed = free is not None and free(name)

        def fn(act: Tensor, hook: Any) -> Tensor:
            if before is not None:
                before(name, act)
            out = act.clone()
            for b in blocks:
                if b.upstream_of is not None and order[name] >= b.upstream_of:
                    continue
                if not computed:
                    out[b.rows] = b.frozen(name)
                for node, value in b.overrides:
                    if node.hook == name:
                        at = (b.rows, *node_index(node))
                        out[at] = out[at] + value() if node.spec.additive else value()
            return out

        return fn

    return [(name, make(name)) for name in graph.sender_hooks]
