"""The component graph of a TransformerLens model: one vocabulary for every causal method.

Senders write into the residual stream; receivers read from it:

- senders:   ``embed``, ``pos_embed`` (absolute position embeddings only), ``L{l}H{h}`` (an
             attention head's output), ``MLP{l}``.
- receivers: ``L{l}H{h}.q`` / ``.k`` / ``.v`` (a head's query, key or value input; under
             grouped-query attention keys and values are shared, so those receivers are
             ``L{l}G{g}.k`` / ``.v`` for key/value head g), ``MLP{l}.in``, ``logits`` (the final
             residual stream).

Transcoder features (``F{l}.{i}``, kind ``feature``) are senders too, named by attribution graphs
(``interp.circuits.validate.feature_nodes``): patching cells (``interp.circuits.cells``) and
scrubbing claims (``Hypothesis.from_features``). A feature is a share of its MLP's output, so a
value set for it is added to that output (``NodeKind.additive``).

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

from interp.core.adapter import adapt

__all__ = [
    "NODE_KINDS",
    "ComponentGraph",
    "Node",
    "NodeKind",
    "UnknownNodeError",
    "register_node_kind",
]


@dataclass(frozen=True)
class NodeKind:
    """What a kind of node is: sender or receiver, where its activation lives, how it is named.

    ``hook`` is the activation a patch writes (a head's slice of ``hook_z``, a receiver's
    ``hook_q``); ``input_hook`` is a receiver's residual-width input (``hook_q_input``), where a
    gradient with respect to the residual stream is read. Templates take ``{layer}``; ``label``
    also takes ``{head}`` and ``{letter}`` (``G`` for a key/value group under GQA, else ``H``).
    Dictionaries register their own kinds (latents, error terms) with :func:`register_node_kind`.
    """

    name: str
    role: Literal["sender", "receiver"]
    hook: str
    label: str
    input_hook: str = ""
    per_head: bool = False  # the node is one head (or key/value group) of its hook
    kv: bool = False  # indexed by key/value heads under GQA
    # A share of its hook's activation (a dictionary feature's decoder term): a value set for
    # it is added to what the hook holds, not written over the hook's slice.
    additive: bool = False


NODE_KINDS: dict[str, NodeKind] = {}


def register_node_kind(kind: NodeKind) -> NodeKind:
    old = NODE_KINDS.get(kind.name)
    if old is not None and old != kind:
        raise ValueError(f"node kind {kind.name!r} is already registered as {old}")
    NODE_KINDS[kind.name] = kind
    return kind


for _k in (
    NodeKind("embed", "sender", "hook_embed", "embed"),
    NodeKind("pos_embed", "sender", "hook_pos_embed", "pos_embed"),
    NodeKind("head", "sender", "blocks.{layer}.attn.hook_z", "L{layer}H{head}", per_head=True),
    NodeKind("mlp", "sender", "blocks.{layer}.hook_mlp_out", "MLP{layer}"),
    NodeKind(
        "q",
        "receiver",
        "blocks.{layer}.attn.hook_q",
        "L{layer}H{head}.q",
        "blocks.{layer}.hook_q_input",
        per_head=True,
    ),  # fmt: skip
    NodeKind(
        "k",
        "receiver",
        "blocks.{layer}.attn.hook_k",
        "L{layer}{letter}{head}.k",
        "blocks.{layer}.hook_k_input",
        per_head=True,
        kv=True,
    ),  # fmt: skip
    NodeKind(
        "v",
        "receiver",
        "blocks.{layer}.attn.hook_v",
        "L{layer}{letter}{head}.v",
        "blocks.{layer}.hook_v_input",
        per_head=True,
        kv=True,
    ),  # fmt: skip
    # An MLP's output is a function of its input alone, so setting the output to what the
    # patched input would produce is the same as patching the input.
    NodeKind(
        "mlp_in",
        "receiver",
        "blocks.{layer}.hook_mlp_out",
        "MLP{layer}.in",
        "blocks.{layer}.hook_mlp_in",
    ),  # fmt: skip
    NodeKind("logits", "receiver", "", "logits"),
    # A transcoder feature at an MLP's output (``head`` holds the feature index). Not among a
    # ComponentGraph's senders: an attribution graph's feature nodes come from interp.circuits.
    NodeKind("feature", "sender", "blocks.{layer}.hook_mlp_out", "F{layer}.{head}", additive=True),
):
    register_node_kind(_k)
del _k


class UnknownNodeError(KeyError):
    """A node name the model's component graph does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True, order=True)
class Node:
    """One component. ``order`` sorts nodes by where they sit in the forward pass."""

    order: int
    kind: str = field(compare=False)
    layer: int | None = field(default=None, compare=False)
    head: int | None = field(default=None, compare=False)  # query head, or key/value head for k/v
    pos: int | None = field(default=None, compare=False)
    gqa: bool = field(default=False, compare=False)

    @property
    def spec(self) -> NodeKind:
        return NODE_KINDS[self.kind]

    @property
    def name(self) -> str:
        letter = "G" if self.gqa and self.spec.kv else "H"
        base = self.spec.label.format(layer=self.layer, head=self.head, letter=letter)
        return base if self.pos is None else f"{base}@{self.pos}"

    @property
    def is_sender(self) -> bool:
        return self.spec.role == "sender"

    @property
    def is_receiver(self) -> bool:
        return self.spec.role == "receiver"

    def at(self, pos: int | None) -> Node:
        """This node narrowed to one position (``None``: every position)."""
        return Node(self.order, self.kind, self.layer, self.head, pos, self.gqa)

    @property
    def hook(self) -> str:
        """The TL hook whose activation this node is (a head or kv-head slice of it)."""
        return self.spec.hook.format(layer=self.layer)

    @property
    def input_hook(self) -> str:
        """A receiver's residual-width input hook (split q/k/v inputs, ``hook_mlp_in``); the
        final residual for ``logits``."""
        if self.kind == "logits":
            raise ValueError("logits has no input hook of its own: use the final residual hook")
        return self.spec.input_hook.format(layer=self.layer)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Node({self.name})"


_POS = re.compile(r"^(?P<base>.+?)@(?P<pos>-?\d+)$")
_FEATURE = re.compile(r"^F(?P<layer>\d+)\.(?P<feature>\d+)$")


class ComponentGraph:
    """Nodes and sender → receiver edges of a TL model (``HookedTransformer`` or a bridge)."""

    def __init__(self, model: Any):
        spec = self.spec = adapt(model).spec
        self.n_layers: int = spec.n_layers
        self.n_heads: int = spec.n_heads
        self.n_kv_heads: int = spec.n_kv_heads
        self.attn_only: bool = spec.attn_only
        self.parallel: bool = spec.parallel
        self.has_pos_embed: bool = spec.positional == "standard"
        self.gqa = spec.gqa

    # Order: embeddings, then per layer the heads' inputs and outputs, then the MLP's; a sender
    # reaches a receiver iff its order is strictly smaller. With parallel attention and MLP both
    # read the same residual, so the MLP shares the heads' slot.
    def attn_order(self, layer: int) -> int:
        return 2 * layer + 1

    def mlp_order(self, layer: int) -> int:
        return 2 * layer + 1 if self.parallel else 2 * layer + 2

    @cached_property
    def senders(self) -> list[Node]:
        out = [Node(0, "embed")]
        if self.has_pos_embed:
            out.append(Node(0, "pos_embed"))
        for layer in range(self.n_layers):
            a = self.attn_order(layer)
            out += [Node(a, "head", layer, h) for h in range(self.n_heads)]
            if not self.attn_only:
                out.append(Node(self.mlp_order(layer), "mlp", layer))
        return out

    @cached_property
    def receivers(self) -> list[Node]:
        out: list[Node] = []
        for layer in range(self.n_layers):
            a = self.attn_order(layer)
            for kind in ("q", "k", "v"):
                n = self.n_heads if kind == "q" else self.n_kv_heads
                out += [Node(a, kind, layer, h, gqa=self.gqa) for h in range(n)]  # type: ignore[arg-type]
            if not self.attn_only:
                out.append(Node(self.mlp_order(layer), "mlp_in", layer))
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

    def input_of(self, head: Node | str, kind: str) -> Node:
        """A head's q, k or v receiver (its key/value group's, under grouped-query attention)."""
        h = self.node(head)
        if h.kind != "head" or kind not in ("q", "k", "v"):
            raise ValueError(f"input_of takes a head node and 'q', 'k' or 'v'; got {h}, {kind!r}")
        assert h.head is not None
        index = h.head if kind == "q" else self.spec.kv_group(h.head)
        return Node(self.attn_order(h.layer or 0), kind, h.layer, index, h.pos, self.gqa)

    def upstream(self, receiver: Node | str) -> list[Node]:
        r = self.node(receiver)
        return [s for s in self.senders if s.order < r.order]

    def node(self, name: Node | str, *, n_pos: int | None = None) -> Node:
        """Look a node up by name (``"L1H7"``, ``"MLP3.in"``, ``"L0H4@5"``, a feature ``"F3.12@5"``);
        close names on a miss."""
        if isinstance(name, Node):
            return name
        if not isinstance(name, str):
            raise TypeError(f"a node is named by a string like 'L1H7'; got {type(name).__name__}")
        pos: int | None = None
        m = _POS.match(name)
        base = name
        if m:
            base, pos = m["base"], int(m["pos"])
        node = self._by_name.get(base) or self._feature(base)
        if node is None:
            raise UnknownNodeError(self._unknown_message(base))
        if pos is not None and n_pos is not None and not 0 <= pos < n_pos:
            raise IndexError(f"node {name!r}: position {pos} is out of range for {n_pos} positions")
        return node.at(pos)

    def _feature(self, base: str) -> Node | None:
        """``F{layer}.{feature}``: a dictionary feature written at that layer's MLP output (an
        attribution graph's feature node; which features exist is the dictionary's business)."""
        m = _FEATURE.match(base)
        if m is None or self.attn_only:
            return None
        layer = int(m["layer"])
        if not 0 <= layer < self.n_layers:
            raise UnknownNodeError(
                f"no node {base!r}: feature nodes sit at MLP layers 0-{self.n_layers - 1}"
            )
        return Node(self.mlp_order(layer), "feature", layer, int(m["feature"]))

    def nodes_of(self, names: Any) -> list[Node]:
        """A node, a name, or a list of them, as a list of nodes."""
        if isinstance(names, (str, Node)):
            names = [names]
        return [self.node(n) for n in names]

    def _unknown_message(self, base: str) -> str:
        m = re.fullmatch(r"L(\d+)H(\d+)\.([kv])", base)
        if m and self.gqa:
            layer, head, kind = int(m[1]), int(m[2]), m[3]
            group = self.spec.kv_group(head)
            return (
                f"no node {base!r}: this model uses grouped-query attention, so keys and values "
                f"are shared by groups of {self.spec.group_size} query heads; head "
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
