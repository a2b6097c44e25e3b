"""Attribution graphs (interp.circuits): exactness against independent computations, a hand-built
model with a known answer, pruning, save/load, export, interventions and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from interp.circuits import AttributionGraph, GraphModelMismatch, LocalReplacement, attribute
from interp.circuits.influence import node_influence, prune, threshold_of
from interp.circuits.replacement import EMBED_HOOK, INPUT_HOOK, OUTPUT_HOOK
from interp.hooks import hooks
from saes.config import SAEConfig
from saes.transcoder import Transcoder

TOKENS = torch.tensor([[1, 5, 7, 9, 3, 2, 11]])


def _tc(d: int = 16, d_sae: int = 40, k: int = 5, seed: int = 1, skip: bool = False) -> Transcoder:
    tc = Transcoder(SAEConfig(d_in=d, d_sae=d_sae, k=k, d_out=d, skip_connection=skip), seed=seed)
    with torch.no_grad():  # non-zero biases and skip, so the bias terms and skip path are tested
        tc.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        tc.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        if skip:
            tc.W_skip.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 2))
    return tc


def _zero_source_run(model, rep: LocalReplacement):
    """The frozen model with every source (token embedding, features, errors) at zero: what is
    left are the bias terms. Transcoder inputs and the final logits, by an independent forward."""
    got: dict[int, torch.Tensor] = {}
    n_layers = rep.spec.n_layers

    def zero_mlp(layer):
        tc = rep.transcoders.get(layer)

        def fn(act, hook):
            out = torch.zeros_like(act)
            if tc is not None:
                out = out + tc.b_dec + (tc.skip(got[layer]) if tc.cfg.skip_connection else 0)
            return out

        return fn

    def keep(layer):
        def fn(act, hook):
            got[layer] = act

        return fn

    fwd = [(EMBED_HOOK, lambda act, hook: torch.zeros_like(act)), *rep.freeze_hooks()]
    fwd += [(INPUT_HOOK.format(layer=i), keep(i)) for i in rep.transcoders]
    fwd += [(OUTPUT_HOOK.format(layer=i), zero_mlp(i)) for i in range(n_layers)]
    with torch.no_grad(), hooks(model, fwd=fwd):
        logits = model(rep.tokens)[0, -1]
    return got, logits


@pytest.mark.parametrize("skip", [False, True])
def test_edges_sum_to_preactivations_and_logits(tiny_model, skip):
    model = tiny_model
    tcs = {0: _tc(seed=1, skip=skip), 1: _tc(seed=2, skip=skip)}
    g = attribute(model, TOKENS, tcs, max_feature_nodes=None, batch_size=8)
    rep = LocalReplacement.from_prompt(model, TOKENS, tcs)
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
    with torch.no_grad(), hooks(model, fwd=[(n, lambda a, hook: rec.__setitem__(hook.name, a.clone())) for n in [*names, *outs, "blocks.0.hook_resid_pre"]]):
        model(TOKENS)
    for j, t in enumerate(g.logit_tokens.tolist()):
        leaves = {n: rec[n].clone().requires_grad_(True) for n in [*outs, "blocks.0.hook_resid_pre"]}
        fwd = [(n, lambda a, hook: rec[hook.name]) for n in names]
        fwd += [(n, lambda a, hook: leaves[hook.name]) for n in leaves]
        with hooks(model, fwd=fwd):
            logits = model(TOKENS)[0, -1]
        (logits[t] - logits.mean()).backward()
        err = [(leaves[o].grad * rec[o]).sum(-1)[0] for o in outs]  # [pos] per layer
        tok = (leaves["blocks.0.hook_resid_pre"].grad * rec["blocks.0.hook_resid_pre"]).sum(-1)[0]
        row = g.adjacency[g.logit_start + j]
        torch.testing.assert_close(row[g.error_start : g.token_start], torch.cat(err), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(row[g.token_start : g.logit_start], tok, atol=1e-5, rtol=1e-4)
