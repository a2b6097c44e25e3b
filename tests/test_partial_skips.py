"""What the partial forward leaves out inside blocks (issue 18): the last block computes only the
rows the metric reads, and a patch of a head's ``z`` or of ``attn_out`` restarts after that
attention. Each is exact against the whole computation, used only where it checked itself, and
never where a hook could see the difference."""

from __future__ import annotations

import pytest
import torch

from interp.core.forward import PartialForward
from interp.hooks import hooks
from interp.metrics import logit_diff
from interp.models import hooked_available
from interp.patching import patch_sweep
from interp.random_models import random_model

N, POS = 3, 10
GPT2 = dict(n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16)
LLAMA = GPT2 | dict(
    positional_embedding_type="rotary",
    normalization_type="RMS",
    act_fn="silu",
    n_key_value_heads=2,
    gated_mlp=True,
)
BACKENDS = ["bridge", *(["hooked"] if hooked_available() else [])]


@pytest.fixture(scope="module", params=[(b, a) for b in BACKENDS for a in ("gpt2", "llama")])
def model(request):
    backend, arch = request.param
    torch.manual_seed(0)
    return random_model(backend, **(GPT2 if arch == "gpt2" else LLAMA)).eval()


def _tokens(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (N, POS), generator=g)


def _mlp_rows(model):
    """Rows the last block's MLP computes, call by call (a plain module hook: not a hook
    point, so it does not switch the saving off)."""
    rows: list[int] = []
    handle = model.blocks[-1].mlp.register_forward_hook(
        lambda mod, args, out: rows.append(int(args[0].shape[:-1].numel()))
    )
    return rows, handle


def _bump(layer, p0):
    """A change at ``layer`` from ``p0`` on, on every stacked copy alike."""

    def fn(x, hook):
        x = x.clone()
        x[:, x.shape[1] - (POS - p0) :] += 0.5  # a restarted block's rows start at p0
        return x

    return [(f"blocks.{layer}.hook_resid_pre", fn)]


@pytest.mark.parametrize(
    "read, layer, p0",
    [([POS - 1], 0, 4), ([POS - 1], 2, 5), ([POS - 3, POS - 1], 1, 7), ([2, POS - 2], 0, 4)],
)
def test_tail_equals_the_whole_block(model, read, layer, p0):
    tokens = _tokens(model)
    fast = PartialForward(model, tokens, read)
    assert fast.tail, "the last block should have checked itself and kept its rows only"
    whole = PartialForward(model, tokens, read)
    whole.tail = False
    got = fast.run_from(layer, p0, 2, _bump(layer, p0))
    want = whole.run_from(layer, p0, 2, _bump(layer, p0))
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    # and against a whole forward with the same change at every position from p0 on
    ref = PartialForward(model, tokens, read, fast=False)
    torch.testing.assert_close(
        fast.logits(got), ref.run_from(layer, p0, 2, _bump(layer, p0)), atol=1e-5, rtol=1e-5
    )


def test_tail_computes_only_the_read_rows(model):
    tokens = _tokens(model)
    pf = PartialForward(model, tokens, [POS - 1])
    rows, handle = _mlp_rows(model)
    try:
        pf.run_from(0, 4, 2, _bump(0, 4))
    finally:
        handle.remove()
    # one MLP call on the last block; a bridge's MLP sees its rows flattened or not alike
    assert rows == [2 * N * 1], rows
    pf.tail = False
    rows, handle = _mlp_rows(model)
    try:
        pf.run_from(0, 4, 2, _bump(0, 4))
    finally:
        handle.remove()
    assert rows == [2 * N * (POS - 4)]


def test_a_hook_on_the_last_block_runs_it_whole_and_sees_every_row(model):
    tokens = _tokens(model)
    pf = PartialForward(model, tokens, [POS - 1])
    ref = PartialForward(model, tokens, [POS - 1], fast=False)
    last = model.cfg.n_layers - 1
    seen: list[int] = []

    def double(x, hook):
        seen.append(x.shape[1])
        return x * 2

    fwd = [*_bump(0, 4), (f"blocks.{last}.hook_mlp_out", double)]
    got = pf.run_from(0, 4, 1, fwd)
    assert seen == [POS - 4], "the user's hook must see every restarted row"
    torch.testing.assert_close(pf.logits(got), ref.run_from(0, 4, 1, fwd), atol=1e-5, rtol=1e-5)
    # a hook installed outside the partial forward counts too
    seen.clear()
    with hooks(model, fwd=[(f"blocks.{last}.hook_mlp_out", double)]):
        again = pf.run_from(0, 4, 1, _bump(0, 4))
    assert seen == [POS - 4]
    torch.testing.assert_close(again, got)


def test_a_tail_that_fails_its_check_is_not_used(model, monkeypatch):
    def wrong(self, t0):  # keeps the rows but forgets to put the MLP's output back
        last = f"blocks.{model.cfg.n_layers - 1}"
        return [(f"{last}.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]

    monkeypatch.setattr(PartialForward, "_tail_hooks", wrong)
    tokens = _tokens(model)
    pf = PartialForward(model, tokens, [POS - 1])
    assert not pf.tail
    ref = PartialForward(model, tokens, [POS - 1], fast=False)
    torch.testing.assert_close(
        pf.logits(pf.run_from(1, 3, 1, _bump(1, 3))),
        ref.run_from(1, 3, 1, _bump(1, 3)),
        atol=1e-5,
        rtol=1e-5,
    )


def test_a_change_after_every_read_position_runs_nothing(model):
    tokens = _tokens(model)
    pf = PartialForward(model, tokens, [2, 4])
    before = pf.block_positions
    out = pf.run_from(0, 6, 2, _bump(0, 6))
    assert pf.block_positions == before
    torch.testing.assert_close(out, pf.base.final.repeat(2, 1, 1))


# ---------------------------------------------------------------- restart after attention


def _pair(model):
    clean = _tokens(model)
    corrupt = clean.clone()
    corrupt[:, [3, 6]] = (clean[:, [3, 6]] + 7) % model.cfg.d_vocab
    return clean, corrupt


def _metric(logits):
    return logit_diff(logits, 1, 2)


def _no_mid(monkeypatch):
    monkeypatch.setattr(PartialForward, "mid_usable", lambda self, layer: False)


SWEEPS = [
    ("z", ("layer", "head"), "corrupt"),
    ("z", ("layer", "pos", "head"), "corrupt"),
    ("z", ("layer", "pos"), "mean"),
    ("attn_out", ("layer", "pos"), "corrupt"),
    ("attn_out", ("layer",), "zero"),
]


@pytest.mark.parametrize("site, over, ablation", SWEEPS)
def test_restart_after_attention_equals_the_patch_hook(model, site, over, ablation, monkeypatch):
    clean, corrupt = _pair(model)
    # the first layer, and the last: there the restart after attention meets the last block's
    # read rows
    kw = dict(site=site, over=over, ablation=ablation, layers=[0, 2])
    if ablation != "corrupt":
        kw["direction"] = "noise"
    pf = PartialForward(model, corrupt, [POS - 1])
    assert pf.mid_ok, "the MLP half should have checked itself"
    got = patch_sweep(model, clean, corrupt, _metric, **kw)
    whole = patch_sweep(model, clean, corrupt, _metric, fast=False, **kw)
    torch.testing.assert_close(got.values, whole.values, atol=2e-6, rtol=1e-5)
    _no_mid(monkeypatch)
    hooked = patch_sweep(model, clean, corrupt, _metric, **kw)
    torch.testing.assert_close(got.values, hooked.values, atol=2e-6, rtol=1e-5)


def _attn_calls(model, layer):
    calls: list[int] = []
    handle = model.blocks[layer].attn.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_the_patched_layers_attention_is_not_run(model, monkeypatch):
    clean, corrupt = _pair(model)
    calls, handle = _attn_calls(model, 1)
    try:
        patch_sweep(model, clean, corrupt, _metric, site="z", over=("layer", "head"), layers=1)
        skipped = len(calls)
        calls.clear()
        _no_mid(monkeypatch)
        patch_sweep(model, clean, corrupt, _metric, site="z", over=("layer", "head"), layers=1)
    finally:
        handle.remove()
    # the base run and the clean run call it either way; the restarts only without the skip
    assert skipped == 2 and len(calls) > skipped, (skipped, len(calls))


def test_a_hook_on_the_patched_block_keeps_its_attention(model):
    clean, corrupt = _pair(model)
    seen: list[tuple[int, ...]] = []

    def watch(x, hook):
        seen.append(tuple(x.shape))

    kw = dict(site="z", over=("layer", "head"), layers=1)
    with hooks(model, fwd=[("blocks.1.attn.hook_z", watch)]):
        got = patch_sweep(model, clean, corrupt, _metric, **kw)
    # base run, clean run, then one restart per group of heads: the hook saw them all
    assert len(seen) > 2
    whole = patch_sweep(model, clean, corrupt, _metric, fast=False, **kw)
    torch.testing.assert_close(got.values, whole.values, atol=2e-6, rtol=1e-5)


def test_an_mlp_half_that_fails_its_check_is_not_used(model, monkeypatch):
    monkeypatch.setattr(PartialForward, "_mlp_half", lambda self, layer, mid: mid)
    clean, corrupt = _pair(model)
    assert not PartialForward(model, corrupt, [POS - 1]).mid_ok
    got = patch_sweep(model, clean, corrupt, _metric, site="z", over=("layer", "head"))
    whole = patch_sweep(
        model, clean, corrupt, _metric, site="z", over=("layer", "head"), fast=False
    )
    torch.testing.assert_close(got.values, whole.values, atol=2e-6, rtol=1e-5)


def test_mid_where_it_cannot_be_used_is_refused(model):
    pf = PartialForward(model, _tokens(model), [POS - 1])
    pf.mid_ok = False
    with pytest.raises(ValueError, match="mid_usable"):
        pf.run_from(1, 3, 1, mid=torch.zeros(N, POS - 3, model.cfg.d_model))
