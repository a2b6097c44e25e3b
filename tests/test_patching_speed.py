"""What makes sweeps fast stays exact: whole-position patches restart where the inputs first
differ, logits are computed only where the metric reads, unembedding is chunked (issue 18)."""

from __future__ import annotations

import functools

import pytest
import torch
import transformer_lens.patching as tlp

import interp.patching.sweep as sweep_module
from interp.core.adapter import adapt
from interp.core.metric import read_positions
from interp.core.sites import Cell
from interp.metrics import logit_diff, loss
from interp.patching import patch_sweep
from interp.patching.sweep import first_change

N, POS = 4, 9
DIFFER = (3, 6)  # the only positions where clean and corrupt prompts differ


def _pair(vocab: int):
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, vocab, (N, POS), generator=g)
    corrupt = clean.clone()
    for p in DIFFER:
        corrupt[:, p] = (clean[:, p] + 1 + torch.randint(0, vocab - 2, (N,), generator=g)) % vocab
    return clean, corrupt


def _metric(logits):
    return logit_diff(logits, 3, 7)


@pytest.mark.parametrize(
    "tl_fn, site",
    [
        (tlp.get_act_patch_attn_head_out_all_pos, "z"),
        (tlp.get_act_patch_attn_head_v_all_pos, "v"),
        (tlp.get_act_patch_attn_head_pattern_all_pos, "pattern"),
    ],
)
def test_whole_position_patches_restart_where_the_inputs_differ(tiny_model, tl_fn, site):
    clean, corrupt = _pair(tiny_model.cfg.d_vocab)
    res = patch_sweep(tiny_model, clean, corrupt, _metric, site=site, over=("layer", "head"))
    if hasattr(tiny_model, "run_with_cache") and adapt(tiny_model).backend == "hooked":
        _, cache = tiny_model.run_with_cache(clean)
        ref = tl_fn(tiny_model, corrupt, cache, lambda lg: _metric(lg).mean())
        torch.testing.assert_close(res.mean, ref.float(), atol=1e-5, rtol=1e-5)
    whole = patch_sweep(
        tiny_model, clean, corrupt, _metric, site=site, over=("layer", "head"), fast=False
    )
    torch.testing.assert_close(res.values, whole.values, atol=1e-5, rtol=1e-5)
    if adapt(tiny_model).restart is not None:  # every cell ran from the first differing position
        n_layers, n_heads = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
        per_cell = [N * (POS - DIFFER[0]) * (n_layers - layer) for layer in range(n_layers)]
        assert res.meta["block_positions"] == n_heads * sum(per_cell)


def test_first_change_by_layout():
    base = torch.zeros(2, 5, 3, 4)  # [batch, pos, head, d_head]
    source = base.clone()
    source[1, 2, 1] = 1.0
    assert first_change(source, base, Cell(0, head=1), "bphd") == 2
    assert first_change(source, base, Cell(0, head=0), "bphd") is None
    assert first_change(source, base, Cell(0, pos=4, head=1), "bphd") is None
    assert first_change(source, base, Cell(0, pos=3, head=1), "bphd") is None
    source[0, 3, 1] = 1.0
    assert first_change(source, base, Cell(0, pos=3, head=1), "bphd") == 3
    pattern = torch.zeros(2, 3, 5, 5)  # [batch, head, query_pos, key_pos]
    changed = pattern.clone()
    changed[0, 2, 4, 1] = 0.5
    assert first_change(changed, pattern, Cell(0, head=2), "bhqk") == 4
    assert first_change(changed, pattern, Cell(0, head=2, src_pos=0), "bhqk") is None
    mean = torch.ones(1, 5, 8)  # a mean-ablation source broadcasts over the batch
    assert first_change(mean, torch.ones(2, 5, 8), Cell(0), "bpd") is None


def _tokens_metric(logits, tokens):
    return loss(logits, tokens)


def _data_dependent(logits):
    """Reads the position where logit 0 first exceeds logit 1: which one depends on the data."""
    where = (logits[..., 0] > logits[..., 1]).float().argmax(1)
    return logits[torch.arange(len(logits)), where, 2]


@pytest.mark.parametrize(
    "metric, reads",
    [
        (_metric, [POS - 1]),
        (functools.partial(logit_diff, correct=3, incorrect=7, pos=4), [4]),
        (_tokens_metric, list(range(POS - 1))),
        (_data_dependent, None),
    ],
)
def test_logits_only_where_the_metric_reads_are_exact(tiny_model, metric, reads):
    clean, corrupt = _pair(tiny_model.cfg.d_vocab)
    lazy = patch_sweep(tiny_model, clean, corrupt, metric, site="resid_pre")
    full = patch_sweep(tiny_model, clean, corrupt, metric, site="resid_pre", logits_at=range(POS))
    # Equal to float rounding, not always bit for bit: reading fewer positions, the last block
    # runs its MLP on fewer rows (tests/test_partial_skips.py), and a matmul's rounding can
    # depend on its row count.
    torch.testing.assert_close(lazy.values, full.values, atol=1e-6, rtol=1e-6)
    if reads is not None:
        assert lazy.meta["metric_reads"] == reads


def test_read_positions_restores_its_inputs_and_refuses_a_metric_that_depends_on_data():
    logits, other = torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    before, other_before = logits.clone(), other.clone()
    assert read_positions(_metric, logits, None, 3, (other,)) == [5]
    assert torch.equal(logits, before) and torch.equal(other, other_before)
    # NaN compares False, so probing one position at a time cannot see this metric's reads;
    # swapping in another run's logits at every "unread" position can.
    logits[..., 0], logits[..., 1] = -1.0, 1.0  # logit 0 never wins: argmax falls on position 0
    other[..., 0], other[..., 1] = 1.0, -1.0  # here it wins at once: the metric reads position 1
    assert read_positions(_data_dependent, logits, None, 3, (other,)) == list(range(6))


def test_unembedding_in_bounded_chunks_gives_the_same_numbers(tiny_model, monkeypatch):
    clean, corrupt = _pair(tiny_model.cfg.d_vocab)
    ref = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre")
    rows: list[int] = []
    original = sweep_module.PatchRunner.logits

    def spy(self, final):
        rows.append(final.shape[0])
        return original(self, final)

    monkeypatch.setattr(sweep_module.PatchRunner, "logits", spy)
    vocab = tiny_model.cfg.d_vocab
    monkeypatch.setattr(sweep_module, "UNEMBED_FLOATS", 2 * N * vocab)  # two cells at a time
    small = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre")
    torch.testing.assert_close(small.values, ref.values, atol=0, rtol=0)
    if adapt(tiny_model).restart is not None:
        assert rows and max(rows) <= 2 * N and len(rows) > 1
