"""Treeified causal scrubbing in one batched forward per chunk of samples.

The hypothesis tree is expanded into *instances*, one per path from the output (treeification),
and every instance gets its own sampled dataset row per sample:

- the root (``logits``) gets the reference input x;
- a claimed child gets a row that agrees with its parent's row on the child's feature (drawn
  uniformly from that class of the dataset; ``feature=None`` reuses the parent's row);
- the inputs of a node that the hypothesis does not claim all come from one random row r of
  that instance (drawn uniformly from the dataset). A claim with no children (a leaf) takes its
  activation as computed on its own row; the root's unclaimed inputs are always random.

Instances that need computing get a block of rows in one batch, and hooks move values between
blocks as the forward reaches them (a child is always upstream of its parent, so its value is
ready in time):

- a *receiver* block (``logits``, ``L1H7.k``, ``MLP0.in``): every sender upstream of the
  receiver is frozen, per row, to its value on r (from a cache of every sender on every dataset
  row, made by one plain forward) or, for claimed senders, to the child instance's value; the
  receiver's activation (``hook_q``/``k``/``v`` head slice, ``hook_mlp_out``, or the logits)
  is recorded there;
- a *head* block (``L1H7`` with children): the head's q, k and v are set to its receiver
  instances' values and its ``hook_z`` slice is recorded;
- leaves that are senders are read from the cache; a non-leaf MLP is its ``MLP{l}.in`` block;
- a transcoder feature ``F{l}.{f}`` (a leaf) is a share of its MLP's output: the block keeps the
  MLP output of its random row r and adds ``(a_f(x) − a_f(r)) · W_dec[f]``, the feature's
  activation on the claimed row in place of its activation on r (``a_f`` from the cache forward).

So each chunk of samples costs one forward with (#receiver and head instances) × chunk rows,
whatever the depth of the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.circuits.cells import feature_acts, input_hook
from interp.core.forward import rows_for
from interp.core.interventions import FrozenBlock, freeze_senders
from interp.core.metric import evaluate
from interp.core.nodes import ComponentGraph, Node
from interp.hooks import HookFn, TLModel, hook_layer, hooks
from interp.scrubbing.hypothesis import Claim, Feature, Hypothesis, class_sampler, other_rows

__all__ = ["Instance", "Plan", "ScrubEngine"]

ScrubMetric = Callable[[Tensor, Tensor], Tensor]
_RANDOM = "random"  # the x of an input the hypothesis does not claim


@dataclass
class Instance:
    """One node of the treeified hypothesis."""

    id: int
    node: Node
    role: str  # "recv" (a block, receiver recorded), "head" (a block), "leaf", "alias"
    parent: int | None
    feature: Feature | str | None  # None: parent's row; _RANDOM: uniform
    path: tuple[str, ...]
    label: str = ""
    leaf: bool = False  # a receiver claimed without children: r = x
    claimed: dict[str, int] = field(default_factory=dict)  # recv: sender name -> instance
    inputs: dict[str, int] = field(default_factory=dict)  # head: "q"/"k"/"v" -> recv instance
    alias: int | None = None  # a non-leaf MLP: its MLP{l}.in instance
    implicit: bool = False  # made by the engine, not named in the hypothesis
    claim: int | None = None  # preorder index of the claim it expands (None: implicit)


@dataclass
class Plan:
    """The instances of one hypothesis."""

    hypothesis: Hypothesis
    root: int
    instances: list[Instance]


class _Builder:
    def __init__(self, graph: ComponentGraph, start: int, index: dict[int, int]):
        self.graph, self.next, self.index = graph, start, index
        self.out: list[Instance] = []
        self.current: Claim | None = None

    def new(self, node: Node, role: str, parent: int | None, feature: Any, path: tuple[str, ...],
            label: str, implicit: bool = False) -> Instance:  # fmt: skip
        inst = Instance(self.next, node, role, parent, feature, path, label, implicit=implicit)
        if not implicit:
            inst.claim = self.index.get(id(self.current))
        self.next += 1
        self.out.append(inst)
        return inst

    def expand(self, c: Claim, parent: int | None, path: tuple[str, ...]) -> int:
        g = self.graph
        self.current = c
        node = g.node(c.node)
        path = (*path, node.name)
        if node.is_receiver:
            inst = self.new(node, "recv", parent, c.feature, path, c.feature_name)
            inst.leaf = not c.children and parent is not None
            for ch in c.children:
                inst.claimed[g.node(ch.node).name] = self.expand(ch, inst.id, path)
            return inst.id
        if not c.children:
            return self.new(node, "leaf", parent, c.feature, path, c.feature_name).id
        if node.kind == "mlp":
            inst = self.new(node, "alias", parent, c.feature, path, c.feature_name)
            recv = g.node(f"MLP{node.layer}.in")
            if g.node(c.children[0].node).is_receiver:
                inst.alias = self.expand(c.children[0], inst.id, path)
            else:
                inst.alias = self._implicit(recv, inst.id, c.children, path)
            return inst.id
        # a head with children
        inst = self.new(node, "head", parent, c.feature, path, c.feature_name)
        listed = {g.node(ch.node).kind: ch for ch in c.children if g.node(ch.node).is_receiver}
        for kind in ("q", "k", "v"):
            recv = self._receiver(node, kind)
            if listed:
                if kind in listed:
                    inst.inputs[kind] = self.expand(listed[kind], inst.id, path)
                else:  # an input the hypothesis leaves out: computed on a random row
                    r = self.new(recv, "recv", inst.id, _RANDOM, (*path, recv.name), "random",
                                 implicit=True)  # fmt: skip
                    r.leaf = True
                    inst.inputs[kind] = r.id
            else:
                inst.inputs[kind] = self._implicit(recv, inst.id, c.children, path)
        return inst.id

    def _implicit(
        self, recv: Node, parent: int, children: tuple[Claim, ...], path: tuple[str, ...]
    ) -> int:
        r = self.new(recv, "recv", parent, None, (*path, recv.name), "same input", implicit=True)
        for ch in children:
            r.claimed[self.graph.node(ch.node).name] = self.expand(ch, r.id, r.path)
        return r.id

    def _receiver(self, head: Node, kind: str) -> Node:
        return self.graph.input_of(head.at(None), kind)


def plan(graph: ComponentGraph, hyp: Hypothesis, start: int = 0) -> Plan:
    index: dict[int, int] = {}
    for k, (c, _, _) in enumerate(hyp.claims()):
        index.setdefault(id(c), k)
    b = _Builder(graph, start, index)
    root = b.expand(hyp.root, None, ())
    return Plan(hyp, root, b.out)


class ScrubEngine:
    """Sender cache, class samplers and the batched scrubbed forward for a dataset."""

    def __init__(
        self,
        model: TLModel,
        graph: ComponentGraph,
        tokens: Tensor,
        metric: ScrubMetric,
        feature_ids: dict[int, np.ndarray],
        max_tokens: int,
        features: Sequence[Node] = (),
        transcoders: Mapping[int, Any] | None = None,
    ):
        self.model, self.graph, self.tokens, self.metric = model, graph, tokens, metric
        self.samplers = {k: class_sampler(v) for k, v in feature_ids.items()}
        self.max_rows = rows_for(max_tokens, tokens.shape[1])
        self.forwards: dict[str, int] = {"cache": 0, "baseline": 0, "scrub": 0}
        self.rows: dict[str, int] = {"cache": 0, "baseline": 0, "scrub": 0}
        self.names = _sender_hooks(graph)
        self.transcoders = dict(transcoders or {})
        self.dict_features = sorted({(int(n.layer), int(n.head)) for n in features})  # type: ignore[arg-type]
        layers = sorted({layer for layer, _ in self.dict_features})
        self.inputs = {layer: input_hook(model, layer) for layer in layers}
        self.cache: dict[str, Tensor] = {}
        self.feature_acts: dict[tuple[int, int], Tensor] = {}  # (layer, f) -> [rows, pos]
        self.clean_rows = self._cache_forward()

    # -- one plain forward over the dataset: every sender, and the clean metric per row --------
    def _cache_forward(self) -> Tensor:
        n = self.tokens.shape[0]
        parts: dict[str, list[Tensor]] = {k: [] for k in self.names}
        acts: dict[tuple[int, int], list[Tensor]] = {k: [] for k in self.dict_features}
        clean = []

        def record(act: Tensor, hook: Any) -> None:
            parts[hook.name].append(act.detach().clone())

        def encode(layer: int) -> Callable[[Tensor, Any], None]:
            wanted = [f for lay, f in self.dict_features if lay == layer]

            def fn(act: Tensor, hook: Any) -> None:
                a = feature_acts(self.transcoders[layer], act.detach(), wanted)
                for j, f in enumerate(wanted):
                    acts[(layer, f)].append(a[..., j])

            return fn

        fwd: list[tuple[str, HookFn]] = [(k, record) for k in self.names]
        fwd += [(name, encode(layer)) for layer, name in self.inputs.items()]
        step = max(1, self.max_rows)
        with torch.no_grad(), hooks(self.model, fwd=fwd):
            for s in range(0, n, step):
                t = self.tokens[s : s + step]
                clean.append(_checked(self.metric, self.model(t), t))
                self._count("cache", t.shape[0])
        self.cache = {k: torch.cat(v) for k, v in parts.items()}
        self.feature_acts = {k: torch.cat(v) for k, v in acts.items()}
        return torch.cat(clean)

    def feature_change(self, node: Node, x: Tensor, r: Tensor) -> Tensor:
        """``(a_f(x) − a_f(r)) · W_dec[f]`` ``[rows, pos, d_model]``: feature ``node`` on rows
        ``x`` in place of rows ``r``."""
        layer, f = int(node.layer), int(node.head)  # type: ignore[arg-type]
        a = self.feature_acts[(layer, f)]
        d = (a[x.cpu()] - a[r.cpu()]).to(self.tokens.device)
        return d[..., None] * self.transcoders[layer].W_dec[f].detach().to(d)

    def _count(self, phase: str, rows: int) -> None:
        self.forwards[phase] += 1
        self.rows[phase] += rows

    def baseline(self, ref: Tensor, rand: Tensor) -> tuple[Tensor, Tensor]:
        """Clean values (cached) and values with the whole input replaced by ``rand``."""
        out = []
        step = max(1, self.max_rows)
        with torch.no_grad():
            for s in range(0, ref.shape[0], step):
                r, x = rand[s : s + step], ref[s : s + step]
                out.append(_checked(self.metric, self.model(self.tokens[r]), self.tokens[x]))
                self._count("baseline", r.shape[0])
        return self.clean_rows[ref], torch.cat(out)

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self, plans: list[Plan], ref: Tensor, root_random: Tensor, gen: torch.Generator
    ) -> dict[int, Tensor]:
        """Rows ``x`` of every instance (and ``r`` of receiver blocks, keyed by ``-1 - id``).

        Every root's unclaimed inputs use ``root_random``, the rows of the random baseline, so
        hypotheses and baselines are paired sample by sample (claiming nothing *is* the random
        baseline, exactly)."""
        n_data = self.tokens.shape[0]
        rows: dict[int, Tensor] = {}
        for p in plans:
            for inst in p.instances:  # parents come before children
                if inst.parent is None:
                    x = ref
                elif inst.feature is None:
                    x = rows[inst.parent]
                elif inst.feature == _RANDOM:
                    x = other_rows(rows[inst.parent], n_data, gen, avoid=ref)
                else:
                    x = self.samplers[id(inst.feature)](rows[inst.parent], gen, avoid=ref)
                rows[inst.id] = x
                if inst.parent is None:
                    rows[-1 - inst.id] = root_random
                elif inst.role == "recv":
                    rows[-1 - inst.id] = x if inst.leaf else other_rows(x, n_data, gen, avoid=ref)
        return rows

    # -- the scrubbed forward ------------------------------------------------------------------
    def scrub(self, plans: list[Plan], rows: dict[int, Tensor]) -> list[Tensor]:
        """Per-sample metric of every plan, ``[n]`` each."""
        insts = {i.id: i for p in plans for i in p.instances}
        blocks = [i for i in insts.values() if i.role in ("recv", "head")]
        n = next(iter(rows.values())).shape[0]
        chunk = max(1, self.max_rows // max(1, len(blocks)))
        outs: list[list[Tensor]] = [[] for _ in plans]
        for s in range(0, n, chunk):
            sl = slice(s, min(n, s + chunk))
            logits, root_rows = self._forward(insts, blocks, rows, sl)
            for j, p in enumerate(plans):
                ref = rows[p.root][sl]
                outs[j].append(_checked(self.metric, logits[root_rows[p.root]], self.tokens[ref]))
        return [torch.cat(o) for o in outs]

    def _forward(
        self, insts: dict[int, Instance], blocks: list[Instance], rows: dict[int, Tensor], sl: slice
    ) -> tuple[Tensor, dict[int, slice]]:
        g, cache = self.graph, self.cache
        c = sl.stop - sl.start
        where = {b.id: slice(k * c, (k + 1) * c) for k, b in enumerate(blocks)}
        toks = torch.cat(
            [self.tokens[rows[-1 - b.id if b.role == "recv" else b.id][sl]] for b in blocks]
        )
        vals: dict[int, Tensor] = {}
        dev = toks.device

        def value(i: int) -> Tensor:
            inst = insts[i]
            if inst.role == "alias":
                assert inst.alias is not None
                return vals[inst.alias]
            if inst.role == "leaf":
                act = cache[inst.node.hook][rows[i][sl].to(dev)]
                return act[:, :, inst.node.head] if inst.node.kind == "head" else act
            return vals[i]

        # Receiver blocks: every sender upstream of the receiver frozen, per row, to its value on
        # the block's random row r, claimed senders to their child instance's value.
        def cached(b: Instance) -> Callable[[str], Tensor]:
            return lambda name: cache[name][rows[-1 - b.id][sl].to(dev)]

        def claimed(ci: int, b: Instance) -> tuple[Node, Callable[[], Tensor]]:
            node = insts[ci].node.at(None)
            if node.kind == "feature":  # added to the block's frozen MLP output (row r)
                return node, lambda: self.feature_change(node, rows[ci][sl], rows[-1 - b.id][sl])
            return node, lambda: value(ci)

        frozen = [
            FrozenBlock(
                where[b.id], cached(b), b.node.order, [claimed(ci, b) for ci in b.claimed.values()]
            )
            for b in blocks
            if b.role == "recv"
        ]

        def record_outputs(name: str, act: Tensor) -> None:
            layer = hook_layer(name)
            for b in blocks:
                if b.node.layer != layer:
                    continue
                if b.role == "head" and name.endswith("attn.hook_z"):
                    vals[b.id] = act[where[b.id], :, b.node.head].clone()
                elif b.role == "recv" and b.node.kind == "mlp_in" and name.endswith("hook_mlp_out"):
                    vals[b.id] = act[where[b.id]].clone()

        def qkv_fn(layer: int, kind: str) -> Callable[[Tensor, Any], Tensor]:
            def fn(act: Tensor, hook: Any) -> Tensor:
                for b in blocks:
                    if b.role == "recv" and b.node.kind == kind and b.node.layer == layer:
                        vals[b.id] = act[where[b.id], :, b.node.head].clone()
                out = act
                for b in blocks:
                    if b.role == "head" and b.node.layer == layer:
                        if out is act:
                            out = act.clone()
                        ri = b.inputs[kind]
                        out[where[b.id], :, insts[ri].node.head] = vals[ri]
                return out

            return fn

        fwd = freeze_senders(g, frozen, before=record_outputs)
        for layer in range(g.n_layers):
            heads_here = any(b.role == "head" and b.node.layer == layer for b in blocks)
            recv_here = {b.node.kind for b in blocks if b.role == "recv" and b.node.layer == layer}
            for kind in ("q", "k", "v"):
                if heads_here or kind in recv_here:
                    fwd.append((f"blocks.{layer}.attn.hook_{kind}", qkv_fn(layer, kind)))
        with torch.no_grad(), hooks(self.model, fwd=fwd):
            logits = self.model(toks)
        self._count("scrub", toks.shape[0])
        return logits, where


def _sender_hooks(graph: ComponentGraph) -> list[str]:
    return graph.sender_hooks


def _checked(metric: ScrubMetric, logits: Tensor, tokens: Tensor) -> Tensor:
    """One loss per input (see :func:`interp.core.metric.evaluate`), on the CPU."""
    return evaluate(metric, logits, tokens, tokens.shape[0], scalar_ok=False, what="input").cpu()
