"""Attribution graphs (interp.circuits): exactness against independent computations, a hand-built
model with a known answer, pruning, save/load, export, interventions and bad input."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from interp.circuits import AttributionGraph, GraphModelMismatch, LocalReplacement, attribute
from interp.circuits.influence import node_influence, prune, threshold_of
from interp.circuits.replacement import EMBED_HOOK, OUTPUT_HOOK
from interp.hooks import hooks
from saes.config import SAEConfig
from saes.transcoder import Transcoder

TOKENS = torch.tensor([[1, 5, 7, 9, 3, 2, 11]])


def _tc(
    d: int = 16, d_sae: int = 40, k: int = 5, seed: int = 1, skip: bool = False, act: str = "topk"
) -> Transcoder:
    cfg = SAEConfig(d_in=d, d_sae=d_sae, k=k, d_out=d, skip_connection=skip, activation=act)  # type: ignore[arg-type]
    tc = Transcoder(cfg, seed=seed)
    with torch.no_grad():  # non-zero biases and skip, so the bias terms and skip path are tested
        tc.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        tc.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        if skip:
            tc.W_skip.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 2))
    return tc


def _zero_source_run(model, rep: LocalReplacement):
    """The frozen model with every source (token embedding, features, errors) at zero: what is
    left are the bias terms (none at a position frozen whole: position 0 when ``rep`` skips it).
    Transcoder inputs and the final logits, by an independent forward."""
    got: dict[int, torch.Tensor] = {}
    n_layers = rep.spec.n_layers

    def zero_mlp(layer):
        tc = rep.transcoders.get(layer)

        def fn(act, hook):
            out = torch.zeros_like(act)
            if tc is not None:
                out = out + tc.b_dec + (tc.skip(got[layer]) if tc.cfg.skip_connection else 0)
                out[:, : rep.first] = 0
            return out

        return fn

    def keep(layer):
        def fn(act, hook):
            got[layer] = act

        return fn

    fwd = [(EMBED_HOOK, lambda act, hook: torch.zeros_like(act)), *rep.freeze_hooks()]
    fwd += [(rep.input_hooks[i], keep(i)) for i in rep.transcoders]
    fwd += [(OUTPUT_HOOK.format(layer=i), zero_mlp(i)) for i in range(n_layers)]
    with torch.no_grad(), hooks(model, fwd=fwd):
        logits = model(rep.tokens)[0, -1]
    return got, logits


@pytest.mark.parametrize("pos0", [False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_edges_sum_to_preactivations_and_logits(tiny_model, skip, pos0):
    model = tiny_model
    tcs = {0: _tc(seed=1, skip=skip), 1: _tc(seed=2, skip=skip)}
    g = attribute(model, TOKENS, tcs, max_feature_nodes=None, batch_size=8, skip_position_0=pos0)
    rep = LocalReplacement.from_prompt(model, TOKENS, tcs, skip_position_0=pos0)
    assert g.n_features == int(sum((a != 0).sum() for a in rep.acts.values())) > 0
    # replacement logits equal the model's on the prompt
    with torch.no_grad():
        real = model(TOKENS)[0]
    torch.testing.assert_close(rep.logits_of(), real, atol=1e-4, rtol=0)  # bridge: 1.2e-5
    inputs, bias_logits = _zero_source_run(model, rep)
    # every feature's pre-activation = incoming edges + bias terms (zero-source run)
    for i, (layer, pos, f) in enumerate(g.feature_table.tolist()):
        tc = tcs[layer]
        x_real = rep.acts[layer]  # activations are the pre-activations where active (TopK)
        bias = float(tc.pre_acts(inputs[layer][0, pos : pos + 1]).detach()[0, f])
        total = float(g.adjacency[i].sum()) + bias
        assert abs(total - float(x_real[pos, f])) < 1e-4, (layer, pos, f)
    # every logit node (logit − mean logit) = incoming edges + bias terms
    for j, t in enumerate(g.logit_tokens.tolist()):
        want = float(real[-1, t] - real[-1].mean())
        bias = float(bias_logits[t] - bias_logits.mean())
        assert abs(float(g.adjacency[g.logit_start + j].sum()) + bias - want) < 1e-4
    assert g.backward_passes == -(-g.n_logits // 8) + -(-g.n_features // 8)


def test_all_error_nodes_equal_hand_direct_logit_attribution(tiny_model):
    """No transcoders: the logit rows equal gradient · value computed with torch.autograd on a
    model whose patterns and norm scales are frozen by hand, one backward per target."""
    model = tiny_model
    g = attribute(model, TOKENS, {}, max_n_logits=3, desired_logit_prob=1.0, batch_size=2)
    rec: dict[str, torch.Tensor] = {}
    names = [n for n in model.hook_dict if n.endswith(("hook_pattern", "hook_scale"))]
    n_layers = model.cfg.n_layers
    outs = [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)]
    with (
        torch.no_grad(),
        hooks(
            model,
            fwd=[
                (n, lambda a, hook: rec.__setitem__(hook.name, a.clone()))
                for n in [*names, *outs, "blocks.0.hook_resid_pre"]
            ],
        ),
    ):
        model(TOKENS)
    for j, t in enumerate(g.logit_tokens.tolist()):
        leaves = {
            n: rec[n].clone().requires_grad_(True) for n in [*outs, "blocks.0.hook_resid_pre"]
        }
        fwd = [(n, lambda a, hook: rec[hook.name]) for n in names]
        fwd += [(n, lambda a, hook, lv=leaves: lv[hook.name]) for n in leaves]
        with hooks(model, fwd=fwd):
            logits = model(TOKENS)[0, -1]
        (logits[t] - logits.mean()).backward()
        err = [(leaves[o].grad * rec[o]).sum(-1)[0] for o in outs]  # [pos] per layer
        tok = (leaves["blocks.0.hook_resid_pre"].grad * rec["blocks.0.hook_resid_pre"]).sum(-1)[0]
        row = g.adjacency[g.logit_start + j]
        torch.testing.assert_close(
            row[g.error_start : g.token_start], torch.cat(err), atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(row[g.token_start : g.logit_start], tok, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pos0", [False, True])
def test_handbuilt_model_known_edges(pos0):
    """One layer, attention writing nothing (W_O = 0), no norms: the token's embedding reaches a
    transcoder feature, which writes to the unembedding. Edges in closed form."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=4, n_ctx=8, d_head=2, n_heads=1, d_mlp=8, d_vocab=5,
        act_fn="relu", normalization_type=None, seed=0, device="cpu",
    )  # fmt: skip
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E.copy_(torch.eye(5, 4))  # token t -> e_t (token 4 -> 0)
        model.W_pos.zero_()
        model.W_U[:, :4].copy_(torch.eye(4))
        model.blocks[0].mlp.W_in[2, 0] = 2.0  # the MLP computes what the transcoder does:
        model.blocks[0].mlp.W_out[0, 3] = 1.5  # so the error nodes are zero
    tc = Transcoder(SAEConfig(d_in=4, d_sae=3, activation="relu", d_out=4), seed=0)
    with torch.no_grad():
        tc.W_enc.zero_()
        tc.W_enc[2, 0] = 2.0  # feature 0 reads e_2 with weight 2
        tc.W_dec.zero_()
        tc.W_dec[0, 3] = 1.5  # and writes 1.5·e_3
        tc.b_enc.zero_()
        tc.b_dec.zero_()
    g = attribute(
        model, torch.tensor([2, 2]), {0: tc}, targets=[3], max_feature_nodes=None, batch_size=4,
        skip_position_0=pos0,
    )  # fmt: skip
    # logit 3 − mean logit: feature (a = 2) · W_dec (1.5 e_3) · (e_3 − mean of W_U's columns)
    want = 2.0 * 1.5 * (1.0 - 1.0 / 5)
    if pos0:  # position 0's feature is its error node (nothing reaches the logit from there)
        assert g.feature_table.tolist() == [[0, 1, 0]]
        torch.testing.assert_close(g.adjacency[0, g.token_start : g.logit_start], torch.tensor([0.0, 2.0]))  # fmt: skip
        torch.testing.assert_close(g.adjacency[g.logit_start, :1], torch.tensor([want]))
    else:
        assert g.feature_table.tolist() == [[0, 0, 0], [0, 1, 0]]
        feat_in = g.adjacency[:2, g.token_start : g.logit_start]
        torch.testing.assert_close(feat_in, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
        torch.testing.assert_close(g.adjacency[g.logit_start, :2], torch.tensor([0.0, want]))
    assert float(g.adjacency[g.logit_start, g.error_start : g.token_start].abs().sum()) < 1e-6


def test_influence_and_prune_reference():
    """A 5-node chain with a known answer: influence by the series, pruning keeps the path."""
    A = torch.tensor([[0.0, 0, 0], [2, 0, 0], [1, 3, 0]])
    # Â rows: [0,0,0], [1,0,0], [.25,.75,0]; influence of node 0 = .25 + .75·1, node 1 = .75
    torch.testing.assert_close(
        node_influence(A, torch.tensor([0.0, 0, 1])), torch.tensor([1.0, 0.75, 0.0])
    )
    assert threshold_of(torch.tensor([0.5, 0.0, 0.3, 0.2]), 0.8).item() == pytest.approx(0.3)
    # features 0, 1 (a strong and a negligible one), no errors, token 2, logit 3
    adj = torch.zeros(4, 4)
    adj[0, 2] = 5.0  # token -> f0
    adj[1, 2] = 0.01  # token -> f1
    adj[3, 0] = 4.0  # f0 -> logit
    adj[3, 1] = 0.001  # f1 -> logit
    res = prune(adj, torch.tensor([0.0, 0, 0, 1]), n_features=2, n_tokens=1, n_logits=1)
    assert res.node_mask.tolist() == [True, False, True, True]
    assert res.edge_mask[3, 0] and res.edge_mask[0, 2] and not res.edge_mask[3, 1]


def test_save_load_export_and_model_check(tiny_model, tmp_path):
    from interp.circuits.export import export_json

    tcs = {1: _tc(seed=3)}
    g = attribute(tiny_model, TOKENS, tcs, max_feature_nodes=None)
    out = g.save(tmp_path / "g")
    assert sorted(p.name for p in out.iterdir()) == ["graph.json", "graph.safetensors"]
    back = AttributionGraph.load(out, model=tiny_model)
    torch.testing.assert_close(back.adjacency, g.adjacency, atol=0, rtol=0)
    assert back.scores() == g.scores() and back.backward_passes == g.backward_passes
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(GraphModelMismatch, match="fingerprint"):
        AttributionGraph.load(out, model=other)
    with pytest.raises(FileExistsError):
        g.save(out)
    js = json.loads(export_json(g, tmp_path / "v.json").read_text())
    assert set(js) == {"metadata", "qParams", "nodes", "links"}
    ids = {n["node_id"] for n in js["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in js["links"])
    kinds = {n["feature_type"] for n in js["nodes"]}
    assert {"embedding", "logit"} <= kinds
    assert sum(n["is_target_logit"] for n in js["nodes"]) == 1


def test_max_feature_nodes_caps_rows(tiny_model):
    tcs = {0: _tc(seed=1), 1: _tc(seed=2)}
    full = attribute(tiny_model, TOKENS, tcs, max_feature_nodes=None, batch_size=4)
    capped = attribute(
        tiny_model, TOKENS, tcs, max_feature_nodes=6, batch_size=2, update_interval=1
    )
    assert (
        capped.n_features == 6
        and len(capped.adjacency) == 6 + capped.n_errors + 7 + capped.n_logits
    )
    assert capped.backward_passes == -(-capped.n_logits // 2) + 3
    # the logit rows over the kept columns are the same numbers
    cols = torch.cat([capped.selected_features, torch.arange(full.n_features, full.logit_start)])
    torch.testing.assert_close(
        capped.adjacency[capped.logit_start :, : len(cols)],
        full.adjacency[full.logit_start :, cols],
    )


def test_position_0_is_an_error_node_whole(tiny_model):
    """By default (as circuit-tracer's zero_bos) no feature node sits at position 0 and each
    layer's error node there is the model's whole MLP output there; with the option off the
    TopK transcoders have k features there. Exact either way; no edit can target position 0."""
    from interp.circuits import FeatureEdit

    tcs = {0: _tc(seed=1, skip=True), 1: _tc(seed=2)}
    mlp: dict[str, torch.Tensor] = {}
    outs = [OUTPUT_HOOK.format(layer=i) for i in range(2)]
    with torch.no_grad(), hooks(tiny_model, fwd=[(o, lambda a, hook: mlp.update({hook.name: a[0]})) for o in outs]):  # fmt: skip
        real = tiny_model(TOKENS)[0]
    g = attribute(tiny_model, TOKENS, tcs, max_feature_nodes=None)
    assert g.n_features > 0 and not (g.feature_table[:, 1] == 0).any()
    rep = LocalReplacement.from_prompt(tiny_model, TOKENS, tcs)
    for layer in range(2):
        torch.testing.assert_close(rep.errors[layer][0], mlp[outs[layer]][0], atol=0, rtol=0)
        assert not rep.acts[layer][0].any()
        assert (rep.errors[layer][1:] - mlp[outs[layer]][1:]).abs().max() > 1e-3  # features there
    torch.testing.assert_close(rep.logits_of(), real, atol=1e-4, rtol=0)
    kept = attribute(tiny_model, TOKENS, tcs, max_feature_nodes=None, skip_position_0=False)
    assert int((kept.feature_table[:, 1] == 0).sum()) == 2 * 5  # k = 5 at each of 2 layers
    with pytest.raises(ValueError, match="position 0 is an error node"):
        rep.logits_of([FeatureEdit(0, 0, 3, 1.0)])


def test_interventions_match_prediction(tiny_model):
    from interp.circuits.validate import check_interventions, feature_interventions, feature_nodes

    # ReLU, and a 0.1% edit: linear unless a downstream latent crosses zero (TopK would switch)
    tcs = {0: _tc(seed=1, act="relu"), 1: _tc(seed=2, act="relu")}
    g = attribute(tiny_model, TOKENS, tcs, max_feature_nodes=None)
    chk = check_interventions(tiny_model, g, tcs, n=10, fraction=0.001)
    torch.testing.assert_close(chk.replacement, chk.predicted, atol=1e-4, rtol=1e-2)
    assert chk.correlation_replacement > 0.99
    nodes = feature_nodes(g, g.prune().node_mask)
    assert nodes and all(n.kind == "feature" and n.name.startswith("F") for n in nodes)
    rep = LocalReplacement.from_prompt(tiny_model, TOKENS, tcs)
    layer, pos, f = g.feature_table[0].tolist()
    from interp.circuits import FeatureEdit

    (iv,) = feature_interventions(rep, [FeatureEdit(layer, pos, f, 0.0)])
    assert iv.hook == f"blocks.{layer}.hook_mlp_out"


def _mlps_as_transcoders():
    """A 2-layer ReLU model and transcoders that are its MLPs (W_enc = W_in, ...): error nodes
    are zero, so the frozen real model *is* the replacement model."""
    from interp.random_models import random_model

    model = random_model(
        None, n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="relu", seed=3,
    )  # fmt: skip
    tcs = {}
    for layer in range(2):
        tc = Transcoder(SAEConfig(d_in=16, d_sae=32, d_out=16, activation="relu"), seed=0)
        with torch.no_grad():
            for mine, theirs in (("W_enc", "W_in"), ("b_enc", "b_in"), ("W_dec", "W_out"), ("b_dec", "b_out")):  # fmt: skip
                getattr(tc, mine).copy_(getattr(model, theirs)[layer])
        tcs[layer] = tc
    return model, tcs


def test_frozen_real_model_is_the_replacement_when_transcoders_are_exact():
    """Known answer: with exact transcoders the frozen real model equals the replacement (and the
    prediction, for an edit small enough that no ReLU flips); the live real model differs
    through attention and norms, which the graph freezes by construction."""
    from interp.circuits.validate import check_interventions

    model, tcs = _mlps_as_transcoders()
    rep = LocalReplacement.from_prompt(model, TOKENS, tcs)
    assert max(float(rep.errors[layer][1:].abs().max()) for layer in range(2)) < 1e-5
    g = attribute(model, TOKENS, tcs, max_feature_nodes=None)
    chk = check_interventions(model, g, tcs, n=10, fraction=0.1)  # effects 3e-5 to 4e-4
    torch.testing.assert_close(chk.frozen, chk.replacement, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(chk.frozen, chk.predicted, atol=2e-7, rtol=1e-2)
    assert chk.correlation_frozen > 0.99
    assert float((chk.real - chk.frozen).abs().max()) > 0.5 * float(chk.frozen.abs().max())
    whole = check_interventions(model, g, tcs, n=10, fraction=1.0)  # ReLUs flip: not linear
    torch.testing.assert_close(whole.frozen, whole.replacement, atol=1e-7, rtol=1e-4)


def test_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="d_model = 16"):
        attribute(tiny_model, TOKENS, {0: _tc(d=8)})
    with pytest.raises(ValueError, match="not a layer"):
        attribute(tiny_model, TOKENS, {5: _tc()})
    with pytest.raises(ValueError, match="context is 32 tokens"):
        attribute(tiny_model, torch.zeros(40, dtype=torch.long), {})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        attribute(tiny_model, TOKENS, {}, targets=[999])
    sae = Transcoder.__mro__[1](SAEConfig(d_in=16, d_sae=8, k=2))
    with pytest.raises(TypeError, match="reconstructs its input"):
        attribute(tiny_model, TOKENS, {0: sae})


def _hooked_model(softcap: float | None = None):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    extra = {} if softcap is None else {"output_logits_soft_cap": softcap}
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", normalization_type="LN", seed=0, device="cpu", **extra,
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


@pytest.mark.parametrize("pos0", [False, True])
def test_every_edge_equals_a_finite_difference_of_the_frozen_model(pos0):
    """Edge by edge, not only row sums: nudge one source (a feature's decoder write, an error, a
    token embedding) in an independent frozen forward and read each target's change. Skip
    transcoders with input_scale 1.7, so the scale and the skip path are in play."""
    pytest.importorskip("transformer_lens.components")  # a HookedTransformer config
    model = _hooked_model()
    tcs = {0: _tc(seed=1, skip=True), 1: _tc(seed=2, skip=True)}
    for tc in tcs.values():
        tc.input_scale.fill_(1.7)
    g = attribute(model, TOKENS, tcs, max_feature_nodes=None, batch_size=8, skip_position_0=pos0)
    rep = LocalReplacement.from_prompt(model, TOKENS, tcs, skip_position_0=pos0)
    n_pos, d = TOKENS.shape[1], 16
    rec: dict[str, torch.Tensor] = {}
    frozen = [n for n in model.hook_dict if n.endswith(("hook_pattern", "hook_scale"))]
    ins = {i: f"blocks.{i}.ln2.hook_normalized" for i in range(2)}
    keep = [*frozen, *ins.values(), EMBED_HOOK, *(OUTPUT_HOOK.format(layer=i) for i in range(2))]
    with torch.no_grad(), hooks(model, fwd=[(n, lambda a, hook: rec.update({hook.name: a})) for n in keep]):  # fmt: skip
        model(TOKENS)

    def run(add: dict[str, torch.Tensor]):
        xs: dict[int, torch.Tensor] = {}
        fwd = [(n, lambda a, hook: rec[hook.name]) for n in frozen]
        fwd.append((EMBED_HOOK, lambda a, hook: rec[hook.name] + add.get(hook.name, 0)))
        for i in range(2):
            fwd.append((ins[i], lambda a, hook, i=i: xs.update({i: a})))

            def out(a, hook, i=i):  # MLP output cut, but the skip path follows its input
                tc = tcs[i]  # (not at a position frozen whole)
                live = rec[hook.name] - tc.skip(rec[ins[i]]) + tc.skip(xs[i])
                live[:, : int(pos0)] = rec[hook.name][:, : int(pos0)]
                return live + add.get(hook.name, 0)

            fwd.append((OUTPUT_HOOK.format(layer=i), out))
        with torch.no_grad(), hooks(model, fwd=fwd):
            logits = model(TOKENS)[0, -1]
            return {i: tcs[i].pre_acts(xs[i][0]) for i in range(2)}, logits

    base_pre, base_logits = run({})
    table = g.feature_table.tolist()
    eps, cols = 1e-2, []
    for j in range(g.logit_start):
        v = torch.zeros(1, n_pos, d)
        if j < len(table):
            layer, p, f = table[j]
            v[0, p] = g.activation_values[g.selected_features[j]] * tcs[layer].W_dec[f].detach()
            hook = OUTPUT_HOOK.format(layer=layer)
        elif j < g.token_start:
            layer, p = divmod(j - len(table), n_pos)
            v[0, p] = rep.errors[layer][p]
            hook = OUTPUT_HOOK.format(layer=layer)
        else:
            p = j - g.token_start
            v[0, p] = rec[EMBED_HOOK][0, p]
            hook = EMBED_HOOK
        pre, logits = run({hook: eps * v})
        col = [float(pre[layer][p, f] - base_pre[layer][p, f]) / eps for layer, p, f in table]
        dl = (logits - base_logits) / eps
        cols.append(col + [float(dl[t] - dl.mean()) for t in g.logit_tokens.tolist()])
    want = torch.tensor(cols).T
    got = torch.cat([g.adjacency[: len(table), : g.logit_start], g.adjacency[g.logit_start :, : g.logit_start]])  # fmt: skip
    scale = float(got.abs().max())
    assert scale > 0.1
    torch.testing.assert_close(got, want, atol=1e-3 * scale, rtol=0)


def test_logit_nodes_are_the_logits_before_a_softcap():
    """circuit-tracer's logit nodes are linear in their sources (the demeaned unembedding column,
    before any cap): a capped model's graph equals the uncapped model's; an intervention check,
    which measures capped logits, is refused before any run."""
    pytest.importorskip("transformer_lens.components")
    from interp.circuits.validate import check_interventions

    tcs = {0: _tc(seed=1), 1: _tc(seed=2)}
    capped, plain = _hooked_model(softcap=2.0), _hooked_model()
    g_cap = attribute(capped, TOKENS, tcs, max_feature_nodes=None, targets=[3, 7])
    g_plain = attribute(plain, TOKENS, tcs, max_feature_nodes=None, targets=[3, 7])
    torch.testing.assert_close(g_cap.adjacency, g_plain.adjacency)
    with pytest.raises(ValueError, match="output_logits_soft_cap"):
        check_interventions(capped, g_cap, tcs)


def test_a_transcoder_under_another_layers_key_is_refused(tiny_model):
    tc = _tc(seed=1)
    tc.cfg.metadata["layer"] = 0
    with pytest.raises(ValueError, match=r"trained on layer 0.*\{0: transcoder\}"):
        LocalReplacement.from_prompt(tiny_model, TOKENS, {1: tc})
