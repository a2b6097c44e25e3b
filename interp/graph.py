"""The component graph of a TransformerLens model: one vocabulary for every causal method.

Senders write into the residual stream; receivers read from it:

- senders:   ``embed``, ``pos_embed`` (absolute position embeddings only), ``L{l}H{h}`` (an
             attention head's output), ``MLP{l}``.
- receivers: ``L{l}H{h}.q`` / ``.k`` / ``.v`` (a head's query, key or value input; under
             grouped-query attention keys and values are shared, so those receivers are
             ``L{l}G{g}.k`` / ``.v`` for key/value head g), ``MLP{l}.in``, ``logits`` (the final
             residual stream).

An edge is a sender whose output reaches a receiver's input through the residual stream, that is
a sender strictly upstream of the receiver. Any node may be narrowed to one position with
``@pos`` (``L1H7@12``). Patching sweeps, path patching, attribution patching and causal scrubbing
all name components this way, so their results line up.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from interp.hooks import TLModel

__all__ = ["ComponentGraph", "Node", "UnknownNodeError"]

Kind = Literal["embed", "pos_embed", "head", "mlp", "q", "k", "v", "mlp_in", "logits"]
SENDER_KINDS = ("embed", "pos_embed", "head", "mlp")
RECEIVER_KINDS = ("q", "k", "v", "mlp_in", "logits")


class UnknownNodeError(KeyError):
    """A node name the model's component graph does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True, order=True)
class Node:
    """One component. ``order`` sorts nodes by where they sit in the forward pass."""

    order: int
    kind: Kind = field(compare=False)
    layer: int | None = field(default=None, compare=False)
    head: int | None = field(default=None, compare=False)  # query head, or key/value head for k/v
    pos: int | None = field(default=None, compare=False)
    gqa: bool = field(default=False, compare=False)

    @property
    def name(self) -> str:
        base = {
            "embed": "embed",
            "pos_embed": "pos_embed",
            "logits": "logits",
            "mlp": f"MLP{self.layer}",
            "mlp_in": f"MLP{self.layer}.in",
            "head": f"L{self.layer}H{self.head}",
        }.get(self.kind)
        if base is None:  # q, k, v
            letter = "G" if self.gqa and self.kind in ("k", "v") else "H"
            base = f"L{self.layer}{letter}{self.head}.{self.kind}"
        return base if self.pos is None else f"{base}@{self.pos}"

    @property
    def is_sender(self) -> bool:
        return self.kind in SENDER_KINDS

    @property
    def is_receiver(self) -> bool:
        return self.kind in RECEIVER_KINDS

    def at(self, pos: int | None) -> Node:
        """This node narrowed to one position (``None``: every position)."""
        return Node(self.order, self.kind, self.layer, self.head, pos, self.gqa)

    @property
    def hook(self) -> str:
        """The TL hook whose activation this node is (a head or kv-head slice of it)."""
        l_ = self.layer
        return {
            "embed": "hook_embed",
            "pos_embed": "hook_pos_embed",
            "head": f"blocks.{l_}.attn.hook_z",
            "mlp": f"blocks.{l_}.hook_mlp_out",
            "q": f"blocks.{l_}.attn.hook_q",
            "k": f"blocks.{l_}.attn.hook_k",
            "v": f"blocks.{l_}.attn.hook_v",
            # An MLP's output is a function of its input alone, so setting the output to what the
            # patched input would produce is the same as patching the input.
            "mlp_in": f"blocks.{l_}.hook_mlp_out",
            "logits": "",
        }[self.kind]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Node({self.name})"


_POS = re.compile(r"^(?P<base>.+?)@(?P<pos>-?\d+)$")


class ComponentGraph:
    """Nodes and sender → receiver edges of a TL model (``HookedTransformer`` or a bridge)."""

    def __init__(self, model: TLModel):
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.n_kv_heads: int = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self.attn_only: bool = bool(getattr(cfg, "attn_only", False))
        self.parallel: bool = bool(getattr(cfg, "parallel_attn_mlp", False))
        self.has_pos_embed: bool = getattr(cfg, "positional_embedding_type", "") == "standard"
        self.gqa = self.n_kv_heads != self.n_heads

    # Order: embeddings, then per layer the heads' inputs and outputs, then the MLP's; a sender
    # reaches a receiver iff its order is strictly smaller. With parallel attention and MLP both
    # read the same residual, so the MLP shares the heads' slot.
    def _attn_order(self, layer: int) -> int:
        return 2 * layer + 1

    def _mlp_order(self, layer: int) -> int:
        return 2 * layer + 1 if self.parallel else 2 * layer + 2

    @cached_property
    def senders(self) -> list[Node]:
        out = [Node(0, "embed")]
        if self.has_pos_embed:
            out.append(Node(0, "pos_embed"))
        for layer in range(self.n_layers):
            a = self._attn_order(layer)
            out += [Node(a, "head", layer, h) for h in range(self.n_heads)]
            if not self.attn_only:
                out.append(Node(self._mlp_order(layer), "mlp", layer))
        return out

    @cached_property
    def receivers(self) -> list[Node]:
        out: list[Node] = []
        for layer in range(self.n_layers):
            a = self._attn_order(layer)
            for kind in ("q", "k", "v"):
                n = self.n_heads if kind == "q" else self.n_kv_heads
                out += [Node(a, kind, layer, h, gqa=self.gqa) for h in range(n)]  # type: ignore[arg-type]
            if not self.attn_only:
                out.append(Node(self._mlp_order(layer), "mlp_in", layer))
        out.append(Node(2 * self.n_layers + 2, "logits"))
        return out

    @cached_property
    def sender_hooks(self) -> list[str]:
        """The TL hooks holding every sender's output, in forward order."""
        return list(dict.fromkeys(s.hook for s in self.senders))

    @cached_property
    def nodes(self) -> list[Node]:
        return self.senders + self.receivers

    @cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def edges(self) -> list[tuple[Node, Node]]:
        """Every (sender, receiver) pair with the sender strictly upstream."""
        return [(s, r) for r in self.receivers for s in self.senders if s.order < r.order]

    def upstream(self, receiver: Node | str) -> list[Node]:
        r = self.node(receiver)
        return [s for s in self.senders if s.order < r.order]

    def node(self, name: Node | str, *, n_pos: int | None = None) -> Node:
        """Look a node up by name (``"L1H7"``, ``"MLP3.in"``, ``"L0H4@5"``); close names on a miss."""
        if isinstance(name, Node):
            return name
        if not isinstance(name, str):
            raise TypeError(f"a node is named by a string like 'L1H7'; got {type(name).__name__}")
        pos: int | None = None
        m = _POS.match(name)
        base = name
        if m:
            base, pos = m["base"], int(m["pos"])
        node = self._by_name.get(base)
        if node is None:
            raise UnknownNodeError(self._unknown_message(base))
        if pos is not None and n_pos is not None and not 0 <= pos < n_pos:
            raise IndexError(f"node {name!r}: position {pos} is out of range for {n_pos} positions")
        return node.at(pos)

    def nodes_of(self, names: Any) -> list[Node]:
        """A node, a name, or a list of them, as a list of nodes."""
        if isinstance(names, (str, Node)):
            names = [names]
        return [self.node(n) for n in names]

    def _unknown_message(self, base: str) -> str:
        m = re.fullmatch(r"L(\d+)H(\d+)\.([kv])", base)
        if m and self.gqa:
            layer, head, kind = int(m[1]), int(m[2]), m[3]
            group = head // (self.n_heads // self.n_kv_heads)
            return (
                f"no node {base!r}: this model uses grouped-query attention, so keys and values "
                f"are shared by groups of {self.n_heads // self.n_kv_heads} query heads; head "
                f"{head}'s {kind} input is 'L{layer}G{group}.{kind}'"
            )
        close = difflib.get_close_matches(base, list(self._by_name), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"no node {base!r} in this model's component graph ({self.n_layers} layers, "
            f"{self.n_heads} heads{', attention-only' if self.attn_only else ''}){hint}"
        )

    def __repr__(self) -> str:
        return (
            f"ComponentGraph({len(self.senders)} senders, {len(self.receivers)} receivers, "
            f"{len(self.edges)} edges)"
        )
