"""Hypotheses as data: a tree of claims over component-graph nodes, each with a feature of the input.

A :class:`Claim` names one node of :class:`interp.core.nodes.ComponentGraph` (``"logits"``, ``"L1H7"``,
``"L1H7.k"``, ``"L0H4"``, ``"embed"``, ``"MLP0"``, ``"MLP0.in"``) and carries a *feature*: a
function of one input (token ids ``[pos]``) whose value defines equivalence classes (two inputs
agree on the feature iff the values are equal). Its children are the upstream nodes the
hypothesis says matter for it. The root is always ``logits``.

Allowed parent → child links (anything else is an error before any model run):

- a receiver (``logits``, ``L{l}H{h}.q|k|v``, ``MLP{l}.in``) → senders strictly upstream of it;
- a head ``L{l}H{h}`` → its own receivers (``L{l}H{h}.q`` ...), or, as shorthand, upstream
  senders, which then feed all three of its inputs (q, k and v);
- an MLP ``MLP{l}`` → its receiver ``MLP{l}.in``, or upstream senders (shorthand for the same);
- ``embed`` and ``pos_embed`` are leaves;
- a transcoder feature ``F{l}.{f}`` (kind ``feature``: an attribution graph's node without its
  position) is a leaf sender: the feature's share of MLP l's output (its activation times its
  decoder row) comes from the claimed input, the rest of that output is resampled like any
  unclaimed sender. Scrubbing one needs ``transcoders=`` (:func:`interp.scrubbing.scrub`), and
  :meth:`Hypothesis.from_features` builds the usual one from a graph's feature nodes.

:meth:`Hypothesis.from_graph` builds the tree from a parent → children mapping (a DAG is
treeified: a node reached by two paths gets one copy per path) and rejects cycles and nodes not
connected to ``logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.core.nodes import ComponentGraph, Node

__all__ = [
    "Claim",
    "Feature",
    "FeatureError",
    "Hypothesis",
    "HypothesisError",
    "claim",
    "feature_values",
]

Feature = Callable[[Tensor], Hashable]


class HypothesisError(ValueError):
    """A hypothesis that is not a valid tree over the model's component graph."""


class FeatureError(ValueError):
    """A feature function that raised or returned a value that cannot define classes."""


@dataclass(frozen=True)
class Claim:
    """One node of a hypothesis: ``node`` computes ``feature``, through ``children``.

    ``feature=None`` means the node's input is its parent's input itself (the finest classes);
    ``label`` names the interpretation node in plots (default: the feature's ``__name__``).
    """

    node: str
    feature: Feature | None = None
    children: tuple[Claim, ...] = ()
    label: str | None = None

    @property
    def feature_name(self) -> str:
        if self.label:
            return self.label
        if self.feature is None:
            return "same input"
        return getattr(self.feature, "__name__", type(self.feature).__name__)

    def walk(self) -> Iterable[tuple[Claim, Claim | None, tuple[str, ...]]]:
        """(claim, parent, path of node names from the root) for every claim, depth first."""
        stack: list[tuple[Claim, Claim | None, tuple[str, ...]]] = [(self, None, (self.node,))]
        while stack:
            c, parent, path = stack.pop()
            yield c, parent, path
            for ch in reversed(c.children):
                stack.append((ch, c, (*path, ch.node)))


def claim(
    node: str, feature: Feature | None = None, *children: Claim, label: str | None = None
) -> Claim:
    """``claim("L1H7", next_token, claim("L1H7.k", ...), ...)``: a :class:`Claim`, tersely."""
    for ch in children:
        if not isinstance(ch, Claim):
            raise TypeError(f"children of {node!r} must be Claims; got {type(ch).__name__}")
    return Claim(node, feature, tuple(children), label)


@dataclass(frozen=True)
class Hypothesis:
    """A named claim tree rooted at ``logits``."""

    name: str
    root: Claim
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.root, Claim):
            raise TypeError(f"root must be a Claim; got {type(self.root).__name__}")
        if self.root.node != "logits":
            raise HypothesisError(
                f"hypothesis {self.name!r}: the root must be 'logits' (the output the metric "
                f"reads); got {self.root.node!r}"
            )

    @classmethod
    def from_graph(
        cls,
        name: str,
        children: Mapping[str, Sequence[str]],
        features: Mapping[str, Feature | None] | None = None,
        *,
        root: str = "logits",
    ) -> Hypothesis:
        """A hypothesis from a parent → children mapping of node names (a DAG; treeified).

        ``features`` maps node names to features (missing: ``None``, the parent's input).
        Cycles and nodes not reachable from ``root`` are errors.
        """
        features = dict(features or {})
        kids = {k: list(v) for k, v in children.items()}
        if root not in kids and kids:
            raise HypothesisError(f"hypothesis {name!r}: no children given for the root {root!r}")
        named = set(kids) | {c for v in kids.values() for c in v}
        _check_acyclic(name, kids, root)
        reach = _reachable(kids, root)
        stray = sorted((named | set(features)) - reach)
        if stray:
            raise HypothesisError(
                f"hypothesis {name!r} is disconnected: {stray} are not reachable from {root!r}; "
                "every claimed node must lie on a path to the output"
            )

        def build(node: str) -> Claim:
            return Claim(node, features.get(node), tuple(build(c) for c in kids.get(node, [])))

        return cls(name, build(root))

    @classmethod
    def from_edges(
        cls,
        name: str,
        edges: Sequence[str | tuple[str, str]],
        features: Mapping[str, Feature | None] | None = None,
    ) -> Hypothesis:
        """From ``"CHILD->PARENT"`` edges in the component-graph vocabulary (``"L0H4->L1H7.k"``,
        ``"L1H7->logits"``); a head's receiver links to the head itself (``L1H7.k`` → ``L1H7``)
        when that head is claimed."""
        kids: dict[str, list[str]] = {}
        nodes: set[str] = set()
        for e in edges:
            if isinstance(e, str):
                if "->" not in e:
                    raise HypothesisError(f"an edge is written 'CHILD->PARENT'; got {e!r}")
                a, b = (s.strip() for s in e.split("->", 1))
            else:
                a, b = e
            kids.setdefault(b, [])
            if a not in kids[b]:
                kids[b].append(a)
            nodes |= {a, b}
        for n in sorted(nodes):
            owner = n.rsplit(".", 1)[0] if "." in n else None
            if owner in nodes and n not in kids.get(owner, []):
                kids.setdefault(owner, []).append(n)
        return cls.from_graph(name, kids, features)

    @classmethod
    def from_features(
        cls,
        name: str,
        nodes: Sequence[Node | str],
        *,
        also: Sequence[str] = (),
        feature: Feature | None = None,
    ) -> Hypothesis:
        """The claim that the logits read the input only through these features (and ``also``):
        each feature node (positions dropped: a claim covers every position) and each node of
        ``also`` a leaf under ``logits``, with ``feature`` (default: the same input).

        >>> from interp.core.nodes import Node
        >>> h = Hypothesis.from_features("graph", ["F1.7@3", "F1.7@4", Node(4, "feature", 1, 2)])
        >>> [c.node for c in h.root.children]
        ['F1.7', 'F1.2']
        """
        names = [(n.at(None).name if isinstance(n, Node) else n.split("@", 1)[0]) for n in nodes]
        if not names:
            raise HypothesisError(f"hypothesis {name!r}: no feature nodes given")
        kids = list(dict.fromkeys([*names, *also]))
        return cls.from_graph(name, {"logits": kids}, dict.fromkeys(kids, feature))

    def feature_nodes(self, graph: ComponentGraph) -> list[Node]:
        """The transcoder features the hypothesis claims."""
        nodes = [graph.node(c.node) for c, _, _ in self.root.walk()]
        return [n for n in nodes if n.kind == "feature"]

    def claims(self) -> list[tuple[Claim, Claim | None, tuple[str, ...]]]:
        return list(self.root.walk())

    def features(self) -> list[Feature]:
        """Distinct feature functions (by identity), in tree order."""
        out: list[Feature] = []
        for c, _, _ in self.root.walk():
            if c.feature is not None and all(c.feature is not f for f in out):
                out.append(c.feature)
        return out

    def validate(self, graph: ComponentGraph) -> None:
        """Every node exists (close names suggested) and every link follows the rules above."""
        for c, parent, path in self.root.walk():
            node = graph.node(c.node)
            if node.pos is not None:
                raise HypothesisError(
                    f"hypothesis {self.name!r}: {c.node!r} narrows to one position; scrubbing "
                    "claims whole activations (put the position into the feature instead)"
                )
            if node.kind == "feature" and c.children:
                raise HypothesisError(
                    f"hypothesis {self.name!r}: the feature {c.node!r} has children (at "
                    f"{' -> '.join(path)}); feature claims are leaves: claim 'MLP{node.layer}' "
                    "with children to say what its input reads"
                )
            if parent is None:
                continue
            _check_link(self.name, graph, graph.node(parent.node), node, path)
            if node.kind == "feature" and f"MLP{node.layer}" in {ch.node for ch in parent.children}:
                raise HypothesisError(
                    f"hypothesis {self.name!r}: {parent.node!r} claims both 'MLP{node.layer}' and "
                    f"its feature {c.node!r} (at {' -> '.join(path)}); the MLP claim already "
                    "covers its features: keep one"
                )
            names = [ch.node for ch in parent.children]
            if names.count(c.node) > 1:
                raise HypothesisError(
                    f"hypothesis {self.name!r}: {parent.node!r} lists {c.node!r} twice "
                    f"(at {' -> '.join(path)})"
                )
        for c, _, path in self.root.walk():
            node = graph.node(c.node)
            if node.kind in ("head", "mlp") and c.children:
                kinds = {graph.node(ch.node).is_receiver for ch in c.children}
                if len(kinds) > 1:
                    raise HypothesisError(
                        f"hypothesis {self.name!r}: {c.node!r} mixes its own inputs and upstream "
                        f"senders as children (at {' -> '.join(path)}); list senders under "
                        f"'{c.node}.q', '.k', '.v' instead"
                    )

    def describe(self) -> str:
        lines = []

        def rec(c: Claim, depth: int) -> None:
            lines.append(f"{'  ' * depth}{c.node}  [{c.feature_name}]")
            for ch in c.children:
                rec(ch, depth + 1)

        rec(self.root, 0)
        return "\n".join(lines)


def _check_link(hname: str, graph: ComponentGraph, p: Node, c: Node, path: tuple[str, ...]) -> None:
    where = " -> ".join(path)
    if p.kind in ("embed", "pos_embed"):
        raise HypothesisError(f"hypothesis {hname!r}: {p.name} is an input and has no children")
    own_receiver = (
        c.is_receiver
        and c.layer == p.layer
        and (
            (p.kind == "mlp" and c.kind == "mlp_in")
            or (p.kind == "head" and c.kind in ("q", "k", "v") and c.head == _kv(graph, p, c.kind))
        )
    )
    if p.is_sender:
        if own_receiver or (c.is_sender and c.order < p.order):
            return
        raise HypothesisError(
            f"hypothesis {hname!r}: {c.name!r} cannot feed {p.name!r} (at {where}); a "
            f"{p.name}'s children are its own inputs ({_inputs(graph, p)}) or senders upstream "
            "of it (heads of earlier layers, earlier MLPs, embed)"
        )
    if not c.is_sender:
        raise HypothesisError(
            f"hypothesis {hname!r}: {c.name!r} is a receiver (an input of a component); under the "
            f"receiver {p.name!r} (at {where}) list senders: 'embed', heads 'L{{l}}H{{h}}', MLPs"
        )
    if c.order >= p.order:
        raise HypothesisError(
            f"hypothesis {hname!r}: {c.name} is not upstream of {p.name} (at {where}), so it "
            "cannot feed it; heads of layer l reach the inputs of later layers only"
        )


def _kv(graph: ComponentGraph, head: Node, kind: str) -> int | None:
    return None if head.head is None else graph.input_of(head.at(None), kind).head


def _inputs(graph: ComponentGraph, p: Node) -> str:
    if p.kind == "mlp":
        return f"'MLP{p.layer}.in'"
    g = "G" if graph.gqa else "H"
    return (
        f"'L{p.layer}H{p.head}.q', 'L{p.layer}{g}{_kv(graph, p, 'k')}.k', "
        f"'L{p.layer}{g}{_kv(graph, p, 'v')}.v'"
    )


def _check_acyclic(name: str, kids: Mapping[str, Sequence[str]], root: str) -> None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for c in kids.get(n, []):
            if state.get(c) == 1:
                cyc = path[path.index(c) :] + [c] if c in path else [n, c]
                raise HypothesisError(
                    f"hypothesis {name!r} has a cycle: {' -> '.join(cyc)}; information flows "
                    "one way through the model, so a correspondence must be acyclic"
                )
            if state.get(c) != 2:
                visit(c, [*path, c])
        state[n] = 2

    for start in [root, *kids]:
        if start not in state:
            visit(start, [start])


def _reachable(kids: Mapping[str, Sequence[str]], root: str) -> set[str]:
    seen = {root}
    stack = [root]
    while stack:
        for c in kids.get(stack.pop(), []):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def _hashable(v: Any, feature: Feature, row: int) -> Hashable:
    if isinstance(v, Tensor):
        return v.item() if v.ndim == 0 else tuple(v.flatten().tolist())
    if isinstance(v, np.ndarray):
        return v.item() if v.ndim == 0 else tuple(v.flatten().tolist())
    try:
        hash(v)
    except TypeError:
        raise FeatureError(
            f"feature {getattr(feature, '__name__', feature)!r} returned an unhashable "
            f"{type(v).__name__} for dataset row {row}; a feature's value defines equivalence "
            "classes, so return something hashable (an int, a str, a tuple)"
        ) from None
    return v


def feature_values(feature: Feature, tokens: Tensor) -> np.ndarray:
    """Class ids ``[n_rows]`` of ``feature`` on every row of ``tokens`` (equal id: same class).

    Tensors and arrays returned by the feature are turned into Python scalars or tuples.
    """
    ids: dict[Hashable, int] = {}
    out = np.empty(tokens.shape[0], dtype=np.int64)
    rows = tokens.cpu()
    for i in range(rows.shape[0]):
        try:
            v = feature(rows[i])
        except Exception as e:  # noqa: BLE001 - report which feature failed on which row
            raise FeatureError(
                f"feature {getattr(feature, '__name__', feature)!r} raised {type(e).__name__}: "
                f"{e} on dataset row {i} (tokens {rows[i].tolist()[:12]}...)"
            ) from e
        out[i] = ids.setdefault(_hashable(v, feature, i), len(ids))
    return out


def other_rows(
    rows: Tensor, n_rows: int, gen: torch.Generator, avoid: Tensor | None = None
) -> Tensor:
    """A row drawn uniformly from the dataset's rows other than ``rows`` (and ``avoid``, each
    sample's reference, where there are rows enough), for each of ``rows``."""
    return _draw_skipping(torch.zeros_like(rows), torch.full_like(rows, n_rows), rows, avoid, gen)


def _draw_skipping(
    start: Tensor, count: Tensor, own: Tensor, avoid: Tensor | None, gen: torch.Generator
) -> Tensor:
    """Positions in ``[start, start + count)`` drawn uniformly, skipping ``own`` and ``avoid``
    where they lie in the range and enough positions remain (else skipping ``own`` only, else
    ``own`` itself)."""
    u = torch.rand(own.shape, generator=gen, dtype=torch.float64)
    p1 = own - start
    p2 = (avoid - start) if avoid is not None else p1
    second = (p2 >= 0) & (p2 < count) & (p2 != p1) & (count > 2)
    others = count - 1 - second.long()
    lo = torch.where(second, torch.minimum(p1, p2), p1)
    hi = torch.where(second, torch.maximum(p1, p2), count + 1)
    off = (u * others.clamp(min=1)).long().clamp_max(others.clamp(min=1) - 1)
    off = off + (off >= lo).long()
    off = off + (off >= hi).long()
    return torch.where(count > 1, start + off, own)


def class_sampler(ids: np.ndarray) -> Callable[..., Tensor]:
    """A function (parent rows, generator) → rows drawn uniformly from each parent's class,
    leaving the parent out where its class has other rows."""
    order = torch.from_numpy(np.argsort(ids, kind="stable"))
    sorted_ids = ids[order.numpy()]
    starts = np.searchsorted(sorted_ids, ids, side="left")
    ends = np.searchsorted(sorted_ids, ids, side="right")
    start_t = torch.from_numpy(starts)
    count_t = torch.from_numpy(ends - starts)
    slot = torch.empty_like(order)
    slot[order] = torch.arange(len(order))  # each row's place in ``order``

    def sample(parents: Tensor, gen: torch.Generator, avoid: Tensor | None = None) -> Tensor:
        # Another row of the parent's class, and not the sample's reference (``avoid``) where
        # the class has rows enough: a draw is then an independent input with that feature, as
        # from the task, not a copy of one this sample already reads.
        start, count = start_t[parents], count_t[parents]
        where = None if avoid is None else slot[avoid]
        return order[_draw_skipping(start, count, slot[parents], where, gen)]

    return sample
