"""The SmolLM2 attribution-graph study (interp.circuits.study): the name-route measure against
path removal on a random graph, bad input, and the whole study on SmolLM2 with tiny transcoders
trained by saes.transcoders."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from interp.circuits import AttributionGraph
from interp.circuits.influence import normalize
from interp.circuits.study import main, name_route


def _random_graph(seed: int = 0) -> AttributionGraph:
    """Features at layers 0 and 1 over 3 positions; edges only go up the layers (acyclic)."""
    gen = torch.Generator().manual_seed(seed)
    n_layers, n_pos, n_logits = 2, 3, 2
    feats = torch.tensor([[0, 0, 4], [0, 2, 1], [1, 1, 7], [1, 2, 3], [1, 2, 5]])
    n_f = len(feats)
    n = n_f + n_layers * n_pos + n_pos + n_logits
    layer_of = torch.full((n,), -1)  # tokens at layer -1, logits at n_layers
    layer_of[:n_f] = feats[:, 0]
    layer_of[n_f : n_f + n_layers * n_pos] = torch.arange(n_layers).repeat_interleave(n_pos)
    layer_of[-n_logits:] = n_layers
    is_target = torch.zeros(n, dtype=torch.bool)
    is_target[:n_f] = True
    is_target[-n_logits:] = True
    allowed = is_target[:, None] & (layer_of[None, :] < layer_of[:, None])
    adjacency = torch.randn(n, n, generator=gen) * allowed
    return AttributionGraph(
        torch.tensor([3, 8, 2]), feats, torch.rand(n_f, generator=gen) + 0.5, torch.arange(n_f),
        adjacency, torch.tensor([11, 12]), torch.tensor([0.7, 0.2]), n_layers, [0, 1],
    )  # fmt: skip


def _token_influence(norm: torch.Tensor, w: torch.Tensor, cols: list[int]) -> float:
    cur, total = w @ norm, torch.zeros(len(w))
    while cur.any():
        total += cur
        cur = cur @ norm
    return float(total[cols].sum())


@pytest.mark.parametrize("positions", [[0], [1, 2], [0, 1, 2]])
def test_name_route_equals_paths_removed(positions):
    """Flow through a feature = the tokens' influence lost when that node is cut out of the
    normalised graph (every path meets a node at most once); direct = influence with every
    feature cut out."""
    g = _random_graph()
    norm, w = normalize(g.adjacency), g.logit_weights
    cols = [g.token_start + p for p in positions]
    total = _token_influence(norm, w, cols)
    route = name_route(g, positions, top=100)
    flows = torch.zeros(g.n_layers, g.n_pos)
    for i, (layer, pos, _) in enumerate(g.feature_table.tolist()):
        cut = norm.clone()
        cut[i] = 0
        cut[:, i] = 0
        flows[layer, pos] += (total - _token_influence(cut, w, cols)) / total
    torch.testing.assert_close(torch.tensor(route["by_layer"]), flows.sum(1), atol=1e-5, rtol=0)
    for c in route["top_cells"]:
        assert math.isclose(c["share"], float(flows[c["layer"], c["pos"]]), abs_tol=1e-5)
    no_feat = norm.clone()
    no_feat[: g.n_features] = 0
    assert math.isclose(route["direct"], _token_influence(no_feat, w, cols) / total, abs_tol=1e-5)


def test_bad_input_before_model_load(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--transcoders", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--transcoders", str(tmp_path), "--out", str(tmp_path), "--fraction", "1.5"])
    assert "must be in (0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--transcoders", str(tmp_path), "--out", str(tmp_path), "--also-fractions", "0.01,x"])
    assert "numbers separated by commas, got '0.01,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--transcoders", str(tmp_path), "--out", str(tmp_path), "--also-fractions", "0,0.1"])
    assert "got 0.0" in capsys.readouterr().err


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads spin and run ~5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_study_end_to_end_on_smollm2(smollm2, tmp_path, one_thread):
    """Tiny transcoders for layers 1 and 3 (trained by saes.transcoders on 256 tokens), then the
    study: exact replacement logits, scores in [0, 1], 20 interventions, files that load back."""
    from interp.circuits.study import run_study
    from saes.transcoder import load_transcoders, save_to_set
    from saes.transcoders import _contexts, train_layer

    args = argparse.Namespace(
        model="smollm2-135m", d_sae=128, k=8, epochs=2.0, batch_size=64, lr=1e-3,
        forward_tokens=512, seed=0, progress=False,
    )  # fmt: skip
    train, held_out = _contexts(smollm2, 32, 8, 1)
    for layer in (1, 3):
        tc, _ = train_layer(smollm2, layer, train, held_out, args)
        save_to_set(tc, tmp_path / "set", layer)
    tcs = load_transcoders(smollm2, tmp_path / "set")
    out = tmp_path / "study"
    res = run_study(
        smollm2, tcs, out, max_feature_nodes=48, n_interventions=20, also_fractions=(0.01,)
    )
    assert res["error_only_layers"] == [i for i in range(30) if i not in (1, 3)]
    for name, r in res["graphs"].items():
        assert r["max_abs_logit_diff_replacement_vs_model"] < 1e-4, name
        assert 0 <= r["replacement_score"] <= 1 and 0 <= r["completeness_score"] <= 1
        rows = r["interventions"]["rows"]
        assert len(rows) == 20 and all(math.isfinite(x["real"] + x["frozen"]) for x in rows)
        sweep = r["interventions"]["by_fraction"]
        assert [b["fraction"] for b in sweep] == [0.1, 0.01]
        assert sweep[0]["correlation_real"] == r["interventions"]["correlation_real"]
        assert r["feature_nodes"] == 48 and r["pruned_nodes"] <= r["nodes"]
        back = AttributionGraph.load(out / name, model=smollm2)
        assert back.n_features == 48 and back.transcoder_layers == [1, 3]
        assert r["skip_position_0"] and not (back.active_features[:, 1] == 0).any()  # the sink
        viewer = json.loads((out / f"{name}.json").read_text())
        assert sum(n["is_target_logit"] for n in viewer["nodes"]) == 1
    assert res["graphs"]["paris"]["target"] == " Paris"
    ioi = res["graphs"]["ioi"]
    assert [ioi["roles"][p] for p in ioi["route"]["positions"]] == ["name1", "name2", "S2"]
    assert all(0 <= x <= 1 + 1e-6 for x in ioi["route"]["by_layer"])
    assert all(x == 0 for i, x in enumerate(ioi["route"]["by_layer"]) if i not in (1, 3))
    assert json.loads((out / "study.json").read_text())["graphs"]["ioi"]["target"] == ioi["target"]
    assert "| paris |" in (out / "study.md").read_text()
    assert "by ablated share: 0.1: " in (out / "study.md").read_text()
