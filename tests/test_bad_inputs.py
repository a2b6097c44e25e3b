"""Every bad input is a clear error, raised before any forward pass.

One table: each case is a call on the tiny 2-layer model (d_vocab 50, n_ctx 32, 4 heads), the
exception type it must raise and a fragment its message must contain. A pre-hook on the
embedding counts forwards, so every case also proves that nothing ran before the error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from interp.cache import cache_activations
from interp.ioi import ioi_prompts
from interp.metrics import kl_div, logit_diff, loss, prob
from interp.models import load_model
from interp.patching import (
    PatchResult,
    attribution_patch,
    edge_attribution,
    edge_patch,
    patch_sweep,
    path_patch,
)
from interp.scrubbing import next_token_loss
from interp.steering import add, collect_activations, extract, generate, steer
from interp.steering.vector import hook_name_for
from interp.store import ActivationStore

HOOK = "blocks.0.hook_resid_pre"
V = 50  # the tiny model's d_vocab


@dataclass
class Ctx:
    """What a case may use: the model, good and bad token batches, a small result and a store."""

    model: Any
    tokens: torch.Tensor  # [2, 6] valid ids
    other: torch.Tensor  # [2, 6] valid ids, the corrupted pair
    bad: torch.Tensor  # [2, 6] with one id == d_vocab
    result: PatchResult
    store_dir: Any

    @property
    def store(self) -> ActivationStore:
        return ActivationStore(self.store_dir)


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logit_diff(logits, 1, 2)


def vec(d: int = 16) -> torch.Tensor:
    return torch.ones(d)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Ctx], Any]
    exc: type[BaseException]
    fragment: str


L = torch.zeros(2, 3, V)  # logits [batch, pos, d_vocab]

CASES = [
    # -- cache_activations ------------------------------------------------------------------
    Case("cache: token id >= d_vocab", lambda c: cache_activations(c.model, c.bad, HOOK),
         IndexError, "token id 50 at index (0, 3), but this model's vocabulary has d_vocab=50"),
    Case("cache: negative token id", lambda c: cache_activations(c.model, -c.tokens - 1, HOOK),
         IndexError, "valid: 0..49"),
    Case("cache: longer than n_ctx",
         lambda c: cache_activations(c.model, torch.zeros(1, 40, dtype=torch.long), HOOK),
         ValueError, "40 positions, longer than this model's context window n_ctx=32"),
    Case("cache: position past the end", lambda c: cache_activations(c.model, c.tokens, HOOK, positions=6),
         IndexError, "position 6 is out of range for sequences of 6 positions"),
    Case("cache: a position list with one past the end",
         lambda c: cache_activations(c.model, c.tokens, HOOK, positions=[0, -7]),
         IndexError, "position -7 is out of range"),
    Case("cache: float positions",
         lambda c: cache_activations(c.model, c.tokens, HOOK, positions=torch.tensor([0.5])),
         TypeError, "positions must be integers"),
    Case("cache: per-sequence positions of the wrong batch",
         lambda c: cache_activations(c.model, c.tokens, HOOK, positions=torch.zeros(3, 1, dtype=torch.long)),
         ValueError, "shape [batch=2, n]"),
    Case("cache: a device that is not one",
         lambda c: cache_activations(c.model, c.tokens, HOOK, device="gpu0"),
         ValueError, "'gpu0' is not a device"),
    Case("cache: a missing GPU",
         lambda c: cache_activations(c.model, c.tokens, HOOK, device="cuda:7"),
         ValueError, "'cuda:7' is not available"),
    Case("cache: dtype as a string",
         lambda c: cache_activations(c.model, c.tokens, HOOK, dtype="float16"),  # type: ignore[arg-type]
         TypeError, "dtype must be a torch.dtype"),
    Case("cache: an integer dtype", lambda c: cache_activations(c.model, c.tokens, HOOK, dtype=torch.int64),
         ValueError, "floating-point dtype"),
    Case("cache: empty tokens",
         lambda c: cache_activations(c.model, torch.zeros(1, 0, dtype=torch.long), HOOK),
         ValueError, "tokens is empty"),
    Case("cache: float tokens", lambda c: cache_activations(c.model, c.tokens.float(), HOOK),
         TypeError, "integer token ids"),
    Case("cache: text on a model without a tokenizer", lambda c: cache_activations(c.model, "hi", HOOK),
         ValueError, "text input needs a model with a tokenizer"),
    Case("cache: misspelt hook", lambda c: cache_activations(c.model, c.tokens, "blocks.0.hook_resid_pree"),
         ValueError, "Did you mean: blocks.0.hook_resid_pre"),
    # -- metrics ----------------------------------------------------------------------------
    Case("logit_diff: correct id >= d_vocab", lambda c: logit_diff(L, V, 1),
         IndexError, "correct holds token id 50"),
    Case("logit_diff: negative incorrect id", lambda c: logit_diff(L, 1, -1),
         IndexError, "incorrect holds token id -1"),
    Case("logit_diff: per-prompt ids of the wrong batch", lambda c: logit_diff(L, torch.tensor([1, 2, 3]), 1),
         ValueError, "one id per prompt: shape [2]"),
    Case("logit_diff: a float token id", lambda c: logit_diff(L, 1.5, 1),  # type: ignore[arg-type]
         TypeError, "correct must be integer token ids"),
    Case("logit_diff: position past the end", lambda c: logit_diff(L, 1, 2, pos=3),
         IndexError, "position 3 is out of range"),
    Case("logit_diff: 2-d logits", lambda c: logit_diff(torch.zeros(3, V), 1, 2),
         ValueError, "[batch, pos, d_vocab]"),
    Case("prob: negative token id", lambda c: prob(L, -1), IndexError, "token holds token id -1"),
    Case("loss: target ids >= d_vocab", lambda c: loss(L, torch.full((2, 3), 60)),
         IndexError, "tokens holds token id 60"),
    Case("loss: attention mask of another shape",
         lambda c: loss(L, torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4)),
         ValueError, "attention_mask has shape (2, 4)"),
    Case("kl_div: position past the end", lambda c: kl_div(L, L, pos=-4),
         IndexError, "position -4 is out of range"),
    # -- patch_sweep ------------------------------------------------------------------------
    Case("sweep: clean id >= d_vocab", lambda c: patch_sweep(c.model, c.bad, c.other, metric, site="resid_pre"),
         IndexError, "clean holds token id 50"),
    Case("sweep: corrupt id >= d_vocab", lambda c: patch_sweep(c.model, c.tokens, c.bad, metric, site="resid_pre"),
         IndexError, "corrupt holds token id 50"),
    Case("sweep: text on a model without a tokenizer",
         lambda c: patch_sweep(c.model, ["a b"], ["a c"], metric, site="resid_pre"),
         ValueError, "clean as text needs a model with a tokenizer"),
    Case("sweep: prompts longer than n_ctx",
         lambda c: patch_sweep(c.model, torch.zeros(2, 33, dtype=torch.long), torch.ones(2, 33, dtype=torch.long),
                               metric, site="resid_pre"),
         ValueError, "n_ctx=32"),
    Case("sweep: two positions without 'pos' in over",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="z", over=("layer", "head"),
                               positions=[-1, 0]),
         ValueError, "add 'pos' to over"),
    Case("sweep: heads on a site without heads",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pre", heads=[1]),
         ValueError, "site 'resid_pre' has no head axis"),
    Case("sweep: head out of range",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="z", over=("layer", "head"), heads=[7]),
         IndexError, "head 7 is out of range"),
    Case("sweep: layer out of range", lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pre", layers=[2]),
         IndexError, "layer 2 is out of range"),
    Case("sweep: misspelt site", lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pos"),
         ValueError, "did you mean 'resid_post'"),
    Case("sweep: misspelt direction",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pre", direction="denoize"),
         ValueError, "did you mean 'denoise'"),
    Case("sweep: misspelt ablation",
         lambda c: patch_sweep(c.model, c.tokens, None, metric, site="resid_pre", ablation="mena", direction="noise"),
         ValueError, "did you mean 'mean'"),
    Case("sweep: max_tokens of zero",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pre", max_tokens=0),
         ValueError, "max_tokens must be at least 1"),
    Case("sweep: logits_at past the end",
         lambda c: patch_sweep(c.model, c.tokens, c.other, metric, site="resid_pre", logits_at=[9]),
         IndexError, "logits_at 9 is out of range"),
    Case("sweep: mean-ablation reference with bad ids",
         lambda c: patch_sweep(c.model, c.tokens, None, metric, site="resid_pre", ablation="mean",
                               direction="noise", reference=c.bad),
         IndexError, "reference holds token id 50"),
    # -- attribution, path and edge patching ------------------------------------------------
    Case("attribution: ig with zero steps",
         lambda c: attribution_patch(c.model, c.tokens, c.other, metric, site="resid_pre", method="ig", steps=0),
         ValueError, "steps must be at least 1"),
    Case("attribution: misspelt method",
         lambda c: attribution_patch(c.model, c.tokens, c.other, metric, site="resid_pre", method="atpp"),
         ValueError, "did you mean 'atp'"),
    Case("attribution: clean id >= d_vocab",
         lambda c: attribution_patch(c.model, c.bad, c.other, metric, site="resid_pre"),
         IndexError, "clean holds token id 50"),
    Case("edge attribution: misspelt method",
         lambda c: edge_attribution(c.model, c.tokens, c.other, metric, method="eap_ig"),
         ValueError, "did you mean 'eap-ig'"),
    Case("edge attribution: corrupt id >= d_vocab",
         lambda c: edge_attribution(c.model, c.tokens, c.bad, metric),
         IndexError, "corrupt holds token id 50"),
    Case("path patch: unknown sender",
         lambda c: path_patch(c.model, c.tokens, c.other, metric, senders="L5H0", receivers="logits"),
         KeyError, "no node 'L5H0'"),
    Case("path patch: max_tokens of zero",
         lambda c: path_patch(c.model, c.tokens, c.other, metric, senders="L0H0", receivers="logits", max_tokens=0),
         ValueError, "max_tokens must be at least 1"),
    Case("path patch: clean id >= d_vocab",
         lambda c: path_patch(c.model, c.bad, c.other, metric, senders="L0H0", receivers="logits"),
         IndexError, "clean holds token id 50"),
    Case("edge patch: misspelt direction",
         lambda c: edge_patch(c.model, c.tokens, c.other, metric, edges=["L0H0->logits"], direction="nosie"),
         ValueError, "did you mean 'noise'"),
    # -- PatchResult ------------------------------------------------------------------------
    Case("result: top(0)", lambda c: c.result.top(0), ValueError, "k must be at least 1"),
    Case("result: misspelt top(by=)", lambda c: c.result.top(by="efect"), ValueError, "did you mean 'abs_effect'"),
    Case("result: squeeze an axis longer than 1", lambda c: c.result.squeeze("head"),
         ValueError, "axis 'head' has 4 entries"),
    Case("result: squeeze a misspelt axis", lambda c: c.result.squeeze("layr"), ValueError, "did you mean 'layer'"),
    Case("result: ci level above 1", lambda c: c.result.ci(1.5), ValueError, "level must be in (0, 1)"),
    # -- IOI and models ---------------------------------------------------------------------
    Case("ioi: a model without a tokenizer", lambda c: ioi_prompts(c.model, 4),
         ValueError, "ioi_prompts needs a model with a tokenizer"),
    Case("ioi: a float count", lambda c: ioi_prompts(c.model, 2.5),  # type: ignore[arg-type]
         TypeError, "n must be an int"),
    Case("load_model: a hub name offline", lambda c: load_model("gpt2"),
         OSError, "needs the Hugging Face hub, but HF_HUB_OFFLINE"),
    Case("load_model: misspelt mechscope name", lambda c: load_model("smolm2-135m"),
         ValueError, "Did you mean: 'smollm2-135m'"),
    Case("load_model: unknown dtype", lambda c: load_model("toy-induction", dtype="fp17"),
         ValueError, "Unknown dtype 'fp17'"),
    Case("load_model: a missing GPU", lambda c: load_model("toy-induction", device="cuda:7"),
         ValueError, "'cuda:7' is not available"),
    # -- steering ---------------------------------------------------------------------------
    Case("steer: layer out of range", lambda c: steer(c.model, add(vec(), 1.0, layer=2)).__enter__(),
         ValueError, "layer 2 is out of range"),
    Case("steer: vector of another width", lambda c: steer(c.model, add(vec(8), 1.0, layer=0)).__enter__(),
         ValueError, "d_model is 16"),
    Case("steer: misspelt site", lambda c: hook_name_for("resid_psot", 0), ValueError, "did you mean 'resid_post'"),
    Case("steer: misspelt positions", lambda c: add(vec(), 1.0, layer=0, positions="genrated"),
         ValueError, "did you mean 'generated'"),
    Case("steer: position past a masked prompt",
         lambda c: steer(c.model, add(vec(), 1.0, layer=0, positions=[9]),
                         attention_mask=torch.ones(2, 6)).__enter__(),
         IndexError, "positions [9] are out of range"),
    Case("steer: a 1-d attention mask",
         lambda c: steer(c.model, add(vec(), 1.0, layer=0, positions=[0]), attention_mask=torch.ones(6)).__enter__(),
         ValueError, "attention_mask must be [batch, pos]"),
    Case("steer: negative prompt_len",
         lambda c: steer(c.model, add(vec(), 1.0, layer=0), prompt_len=-2).__enter__(),
         ValueError, "prompt_len must be at least 0"),
    Case("generate: text on a model without a tokenizer", lambda c: generate(c.model, "hi", add(vec(), 1.0, layer=0)),
         ValueError, "generate() from text needs a model with a tokenizer"),
    Case("generate: prompt id >= d_vocab", lambda c: generate(c.model, c.bad, add(vec(), 1.0, layer=0)),
         IndexError, "prompt holds token id 50"),
    Case("generate: past the context window",
         lambda c: generate(c.model, c.tokens, add(vec(), 1.0, layer=0), max_new_tokens=40),
         ValueError, "n_ctx=32"),
    Case("generate: negative max_new_tokens",
         lambda c: generate(c.model, c.tokens, add(vec(), 1.0, layer=0), max_new_tokens=-1),
         ValueError, "max_new_tokens must be at least 0"),
    Case("extract: prompt ids >= d_vocab", lambda c: extract(c.model, [[1, 2, 60]], [[1, 2, 3]], layers=0),
         IndexError, "prompts holds token id 60"),
    Case("extract: misspelt method",
         lambda c: extract(c.model, [[1, 2]], [[1, 3]], layers=0, method="diff_means"),
         ValueError, "did you mean 'diff_mean'"),
    Case("extract: max_tokens of zero", lambda c: extract(c.model, [[1, 2]], [[1, 3]], layers=0, max_tokens=0),
         ValueError, "max_tokens must be at least 1"),
    Case("collect: max_tokens of zero", lambda c: collect_activations(c.model, [[1, 2]], layers=0, max_tokens=0),
         ValueError, "max_tokens must be at least 1"),
    Case("collect: layer out of range", lambda c: collect_activations(c.model, [[1, 2]], layers=[0, 3]),
         ValueError, "layer 3 is out of range"),
    Case("next_token_loss: position past the end",
         lambda c: next_token_loss(6)(torch.zeros(2, 6, V), c.tokens),
         IndexError, "position 6 is out of range for sequences of 6 positions"),
    Case("next_token_loss: a float position", lambda c: next_token_loss([1.5]), TypeError, "must be an int"),
    # -- the activation store ---------------------------------------------------------------
    Case("store: context_size longer than n_ctx",
         lambda c: ActivationStore.write(c.store_dir.parent / "long", c.model, HOOK, [torch.arange(40)],
                                         context_size=40),
         ValueError, "context_size is 40 positions, longer than this model's context window n_ctx=32"),
    Case("store: forward_max_tokens of zero",
         lambda c: ActivationStore.write(c.store_dir.parent / "zero", c.model, HOOK, [torch.arange(6)],
                                         context_size=6, forward_max_tokens=0),
         ValueError, "forward_max_tokens must be at least 1"),
    Case("store: batch size of zero", lambda c: next(c.store.batches(0)), ValueError, "batch_size must be"),
    Case("store: misspelt hook", lambda c: next(c.store.batches(4, hook="blocks.1.hook_resid_psot")),
         KeyError, "did you mean 'blocks.1.hook_resid_post'"),
    Case("store: row past the end", lambda c: c.store.rows([10**6]), IndexError, "row indices must be in"),
    Case("store: a missing GPU", lambda c: next(c.store.batches(4, device="cuda:7")),
         ValueError, "'cuda:7' is not available"),
    Case("store: an integer dtype", lambda c: next(c.store.batches(4, dtype=torch.int32)),
         ValueError, "floating-point dtype"),
]  # fmt: skip


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, tiny_model_shared):
    model = tiny_model_shared
    contexts = [torch.arange(6) + i for i in range(4)]
    path = tmp_path_factory.mktemp("store") / "s"
    ActivationStore.write(
        path, model, "blocks.1.hook_resid_post", contexts, context_size=6, shard_tokens=12
    )
    return path


@pytest.fixture()
def ctx(tiny_model, store_dir):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (2, 6), generator=g)
    bad = tokens.clone()
    bad[0, 3] = V
    result = PatchResult(
        torch.randn(3, 2, 4), ("layer", "head"), {"layer": ["L0", "L1"],
        "head": [f"H{h}" for h in range(4)]}, "logit_diff", "patch_sweep", "z", "corrupt",
        "denoise", torch.ones(3), torch.zeros(3),
    )  # fmt: skip
    other = torch.randint(0, V, (2, 6), generator=g)
    return Ctx(tiny_model, tokens, other, bad, result, store_dir)


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_before_any_forward(case, ctx, monkeypatch):
    if "without a tokenizer" in case.id:  # TL 4's tiny_model, a bridge, comes with one
        monkeypatch.setattr(ctx.model, "tokenizer", None)
    forwards = []
    handle = ctx.model.embed.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(case.exc, match=re.escape(case.fragment)):
            case.call(ctx)
    finally:
        handle.remove()
    assert not forwards, f"{case.id}: {len(forwards)} forward pass(es) ran before the error"


# -- a sweep at one position (issue 12, item 7) ---------------------------------------------
def _pair(model):
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randint(0, V, (3, 6), generator=g) for _ in range(2))


def test_a_head_sweep_at_one_position_is_layer_by_head(tiny_model):
    clean, corrupt = _pair(tiny_model)
    kw: dict[str, Any] = {"site": "z", "positions": [-1]}
    res = patch_sweep(tiny_model, clean, corrupt, metric, over=("layer", "head"), **kw)
    full = patch_sweep(tiny_model, clean, corrupt, metric, over=("layer", "head", "pos"), **kw)
    assert res.axes == ("layer", "head") and res.shape == (2, 4)
    assert full.shape == (2, 4, 1)
    squeezed = full.squeeze()
    assert squeezed.axes == ("layer", "head") and squeezed.meta["fixed"]["pos"].split()[0] == "5"
    torch.testing.assert_close(res.values, squeezed.values)
    # the same cells as patching each head at position 5 of an all-position sweep
    every = patch_sweep(tiny_model, clean, corrupt, metric, over=("layer", "head", "pos"), site="z")
    torch.testing.assert_close(res.values, every.values[..., 5])


def test_attribution_at_one_position_is_layer_by_head(tiny_model):
    clean, corrupt = _pair(tiny_model)
    res = attribution_patch(
        tiny_model, clean, corrupt, metric, site="z", over=("layer", "head"), positions=-1
    )
    every = attribution_patch(
        tiny_model, clean, corrupt, metric, site="z", over=("layer", "head", "pos")
    )
    assert res.axes == ("layer", "head")
    torch.testing.assert_close(res.values, every.values[..., 5])


def test_squeeze_drops_only_what_it_is_asked_to(ctx):
    one = ctx.result.squeeze()
    assert one is ctx.result  # no length-1 axis
    r = PatchResult(
        torch.randn(3, 1, 4, 1), ("layer", "head", "pos"), {"layer": ["L1"], "head": list("abcd"),
        "pos": ["7 ' to'"]}, "m", "patch_sweep", "z", "corrupt", "denoise", torch.ones(3),
        torch.zeros(3),
    )  # fmt: skip
    assert r.squeeze("pos").axes == ("layer", "head")
    both = r.squeeze()
    assert both.axes == ("head",) and both.meta["fixed"] == {"layer": "L1", "pos": "7 ' to'"}
    torch.testing.assert_close(both.values, r.values[:, 0, :, 0])
