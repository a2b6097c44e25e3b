"""Feature nodes as patching cells (interp.circuits.cells.patch_features) against a dense
reference: the model run whole, with a core ``Add`` along the decoder direction per prompt."""

from __future__ import annotations

import functools

import pytest
import torch

from interp.circuits import attribute
from interp.circuits.cells import feature_acts, input_hook, patch_features
from interp.circuits.validate import feature_nodes
from interp.core.interventions import Add, Record, intervene
from interp.core.nodes import ComponentGraph
from interp.metrics import logit_diff
from saes.config import SAEConfig
from saes.transcoder import Transcoder

CLEAN = torch.tensor([[1, 5, 7, 9, 3, 2, 11], [4, 8, 6, 10, 12, 2, 13]])
CORRUPT = torch.tensor([[1, 5, 7, 14, 3, 2, 11], [4, 15, 6, 10, 12, 2, 16]])
METRIC = functools.partial(logit_diff, correct=3, incorrect=4)


def _tc(seed: int, d: int = 16, d_sae: int = 40) -> Transcoder:
    tc = Transcoder(SAEConfig(d_in=d, d_sae=d_sae, activation="relu", d_out=d), seed=seed)
    with torch.no_grad():  # a positive encoder bias: many features active, so many cells change
        tc.b_enc.uniform_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return tc


def _acts(model, tokens, tcs, layer):
    got: dict = {}
    with torch.no_grad(), intervene(model, [Record(input_hook(model, layer), got)]):
        model(tokens)
    return feature_acts(tcs[layer], got[input_hook(model, layer)], range(tcs[layer].cfg.d_sae))


def _dense(model, base, source, tcs, node, metric=METRIC):
    """The cell by hand: each prompt's own forward with Add(W_dec[f], scale=Δ) at the MLP output."""
    layer, f = node.layer, node.head
    a_base, a_src = _acts(model, base, tcs, layer), _acts(model, source, tcs, layer)
    positions = range(base.shape[1]) if node.pos is None else [node.pos]
    out = []
    for i in range(base.shape[0]):
        ivs = []
        for p in positions:
            delta = float(a_src[i, p, f] - a_base[i, p, f])

            def where(act, p=p):
                m = torch.zeros(1, act.shape[1], dtype=torch.bool)
                m[0, p] = True
                return m

            vec = tcs[layer].W_dec[f].detach()
            ivs.append(Add(f"blocks.{layer}.hook_mlp_out", vec, where=where, scale=delta))
        with torch.no_grad(), intervene(model, ivs):
            out.append(metric(model(base[i : i + 1]))[0])
    return torch.stack(out)


@pytest.mark.parametrize(
    ("direction", "fast"), [("denoise", None), ("noise", None), ("denoise", False)]
)
def test_every_cell_equals_a_dense_forward(tiny_model, direction, fast):
    model = tiny_model
    tcs = {0: _tc(1), 1: _tc(2)}
    graph = ComponentGraph(model)
    nodes = [graph.node(s) for s in ("F0.3@3", "F0.7@1", "F1.5@3", "F1.11@6", "F0.2")]
    res = patch_features(
        model, CLEAN, CORRUPT, METRIC, features=nodes, transcoders=tcs, direction=direction,
        fast=fast,
    )  # fmt: skip
    assert fast is None or res.meta["fast"] is False  # whole forwards when asked
    assert res.axes == ("feature",) and res.labels["feature"] == [n.name for n in nodes]
    base, source = (CORRUPT, CLEAN) if direction == "denoise" else (CLEAN, CORRUPT)
    changed = 0
    for i, node in enumerate(nodes):
        want = _dense(model, base, source, tcs, node)
        torch.testing.assert_close(res.values[:, i], want, atol=1e-4, rtol=1e-4)
        changed += int(not torch.allclose(want, METRIC(model(base)), atol=1e-6))
    assert changed >= 3  # the reference is not just the unpatched run
    assert res.meta["cells_skipped_unchanged"] < len(nodes)


def test_zero_ablation_and_graph_nodes(tiny_model):
    """Noising with zero sets a feature to 0; the cells come straight from a pruned graph."""
    model = tiny_model
    tcs = {0: _tc(1), 1: _tc(2)}
    g = attribute(model, CLEAN[:1], tcs, max_feature_nodes=None, batch_size=8)
    nodes = feature_nodes(g, g.prune().node_mask)[:6]
    assert nodes
    res = patch_features(
        model, CLEAN[:1], None, METRIC, features=nodes, transcoders=tcs, ablation="zero",
        direction="noise",
    )  # fmt: skip
    for i, node in enumerate(nodes):
        a = _acts(model, CLEAN[:1], tcs, node.layer)
        delta = -float(a[0, node.pos, node.head])
        vec = tcs[node.layer].W_dec[node.head].detach()

        def where(act, p=node.pos):
            m = torch.zeros(1, act.shape[1], dtype=torch.bool)
            m[0, p] = True
            return m

        iv = Add(f"blocks.{node.layer}.hook_mlp_out", vec, where=where, scale=delta)
        with torch.no_grad(), intervene(model, [iv]):
            want = METRIC(model(CLEAN[:1]))
        torch.testing.assert_close(res.values[:, i], want, atol=1e-4, rtol=1e-4)


def test_mean_ablation_uses_the_reference_mean(tiny_model):
    """Noising with the mean sets each feature to its mean activation over the reference set,
    per position."""
    model = tiny_model
    tcs = {0: _tc(1), 1: _tc(2)}
    nodes = ["F0.3@3", "F1.5@2"]
    res = patch_features(
        model, CLEAN, None, METRIC, features=nodes, transcoders=tcs, ablation="mean",
        direction="noise", reference=CORRUPT,
    )  # fmt: skip
    graph = ComponentGraph(model)
    for i, name in enumerate(nodes):
        node = graph.node(name)
        a = _acts(model, CLEAN, tcs, node.layer)[:, node.pos, node.head]
        mean = _acts(model, CORRUPT, tcs, node.layer)[:, node.pos, node.head].mean()
        vec = tcs[node.layer].W_dec[node.head].detach()
        for row in range(CLEAN.shape[0]):

            def where(act, p=node.pos):
                m = torch.zeros(1, act.shape[1], dtype=torch.bool)
                m[0, p] = True
                return m

            delta = float(mean - a[row])
            iv = Add(f"blocks.{node.layer}.hook_mlp_out", vec, where=where, scale=delta)
            with torch.no_grad(), intervene(model, [iv]):
                want = METRIC(model(CLEAN[row : row + 1]))[0]
            torch.testing.assert_close(res.values[row, i], want, atol=1e-4, rtol=1e-4)


def test_bad_input_fails_before_any_forward(tiny_model):
    model = tiny_model
    tcs = {0: _tc(1)}
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        kw = {"transcoders": tcs}
        with pytest.raises(ValueError, match="beyond the layer-0 transcoder's d_sae = 40"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["F0.40@2"], **kw)
        with pytest.raises(ValueError, match=r"no transcoder at layer 1 \(layers with one: \[0\]"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["F1.3@2"], **kw)
        with pytest.raises(IndexError, match="position 7 is out of range for 7 positions"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["F0.3@7"], **kw)
        with pytest.raises(ValueError, match="is a head node; feature cells are"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["L0H1"], **kw)
        with pytest.raises(ValueError, match="features is empty"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=[], **kw)
        with pytest.raises(KeyError, match="feature nodes sit at MLP layers 0-1"):
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["F5.3"], **kw)
        with pytest.raises(ValueError, match="d_model = 16"):
            bad = {0: _tc(1, d=8)}
            patch_features(model, CLEAN, CORRUPT, METRIC, features=["F0.3"], transcoders=bad)
    finally:
        handle.remove()
    assert not calls


def test_patch_sweep_takes_feature_cells(tiny_model):
    from interp.patching import patch_sweep

    tcs = {0: _tc(1), 1: _tc(2)}
    nodes = ["F0.3@3", "F1.5@3", "F0.2"]
    via_sweep = patch_sweep(
        tiny_model, CLEAN, CORRUPT, METRIC, site="feature", features=nodes, transcoders=tcs
    )
    direct = patch_features(tiny_model, CLEAN, CORRUPT, METRIC, features=nodes, transcoders=tcs)
    torch.testing.assert_close(via_sweep.values, direct.values, atol=0, rtol=0)
    assert via_sweep.labels["feature"] == ["F0.3@3", "F1.5@3", "F0.2"]
    with pytest.raises(ValueError, match="site='feature'"):
        patch_sweep(tiny_model, CLEAN, CORRUPT, METRIC, site="z", transcoders=tcs)
