"""interp.heads: head detection on any tokens or text, checked against TransformerLens's
``detect_head``, a brute-force reference and the toy model's known heads."""

from __future__ import annotations

import warnings

import pytest
import torch
from builders import tl_model
from transformer_lens.head_detector import detect_head

from interp import heads, toy
from interp.heads import KINDS, TL_NAMES, NoTargetWarning, head_scores
from interp.stats import OnePromptWarning
from interp.table import Rows

# Natural text for the toy model's 41-token context: a character per token (ASCII id), BOS 0.
TEXTS = ["Mary had a lamb. Mary had a lamb.", "one two three, one two three."]
EXCLUSIONS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    """A character-level tokenizer whose ids are the ASCII codes (BOS = 0), as the toy's vocab."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<bos>": 0, **{chr(i): i for i in range(32, 127)}}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(BPE(vocab=vocab, merges=[])),
        bos_token="<bos>",
        eos_token="<bos>",
        pad_token="<bos>",
    )
    folder = tmp_path_factory.mktemp("char_tokenizer")
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def toy_model():
    return toy.load_toy_induction()


@pytest.fixture(scope="module")
def toy_text(char_tokenizer):
    """The toy model with the character tokenizer, so it reads text (BOS prepended as trained)."""
    model = toy.load_toy_induction()
    model.set_tokenizer(char_tokenizer)
    model.cfg.default_prepend_bos = True
    return model


@pytest.fixture(scope="module")
def tiny_text(char_tokenizer):
    """A random 2-layer model (attention + MLP) with the character tokenizer (a HookedTransformer
    on TL 3, a GPT-2 bridge on TL 4)."""
    torch.manual_seed(0)
    model = tl_model(
        n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_mlp=64, d_vocab=128,
        act_fn="gelu", normalization_type="LN", seed=0,
    )  # fmt: skip
    if hasattr(model, "set_tokenizer"):
        model.set_tokenizer(char_tokenizer)
    else:  # a bridge has no set_tokenizer; to_tokens reads the attribute
        model.tokenizer = char_tokenizer
    model.cfg.default_prepend_bos = True
    model.eval()
    return model


def _repeat_tokens(batch: int, seed: int, vocab: int, n: int = 8, noise: int = 4) -> torch.Tensor:
    """[BOS, x, noise, x]: repeats at an offset the toy never trained on, plus chance repeats."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (batch, n), generator=g)
    mid = torch.randint(1, vocab, (batch, noise), generator=g)
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), x, mid, x], dim=1)


def _detect_head_on_tokens(model, tokens, kind, monkeypatch, **kwargs) -> torch.Tensor:
    """detect_head on each row of token ids (it only takes text: feed it the ids), mean over rows
    as detect_head does for a list of prompts."""
    out = []
    for row in tokens:
        monkeypatch.setattr(model, "to_tokens", lambda seq, row=row: row[None])
        out.append(detect_head(model, "ids", TL_NAMES[kind], **kwargs))
    monkeypatch.undo()
    return torch.stack(out).mean(0).float()


# ---------------------------------------------------------------- TransformerLens's detect_head


@pytest.mark.parametrize(("exclude_bos", "exclude_current_token"), EXCLUSIONS)
@pytest.mark.parametrize(
    "which", [pytest.param("toy_model", marks=pytest.mark.hooked), "tiny_model"]
)
def test_matches_detect_head_on_tokens(
    which, exclude_bos, exclude_current_token, request, monkeypatch
):
    model = request.getfixturevalue(which)
    tokens = _repeat_tokens(3, seed=1, vocab=model.cfg.d_vocab)  # 21 < n_ctx as detect_head needs
    flags = {"exclude_bos": exclude_bos, "exclude_current_token": exclude_current_token}
    scores = head_scores(model, tokens, **flags)
    for kind in KINDS:
        expected = _detect_head_on_tokens(model, tokens, kind, monkeypatch, **flags)
        torch.testing.assert_close(scores.transformer_lens(kind), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("exclude_bos", "exclude_current_token"), EXCLUSIONS)
@pytest.mark.parametrize("which", [pytest.param("toy_text", marks=pytest.mark.hooked), "tiny_text"])
def test_matches_detect_head_on_text(which, exclude_bos, exclude_current_token, request):
    model = request.getfixturevalue(which)
    flags = {"exclude_bos": exclude_bos, "exclude_current_token": exclude_current_token}
    scores = head_scores(model, TEXTS, **flags)  # two lengths: two forwards, no padding
    for kind in KINDS:
        expected = detect_head(model, TEXTS, TL_NAMES[kind], **flags).float()
        torch.testing.assert_close(scores.transformer_lens(kind), expected, atol=1e-6, rtol=0)


def test_documented_difference_from_detect_head(tiny_text):
    """detect_head divides target mass by every query position; ours only by those with a
    target: on one prompt, ours = tl * n_pos / n_counted exactly."""
    text = TEXTS[0]
    n_pos = tiny_text.to_tokens(text).shape[-1]
    scores = head_scores(tiny_text, text)
    for kind in KINDS:
        tl = detect_head(tiny_text, text, TL_NAMES[kind]).float()
        n = scores.n_positions[kind]
        assert 0 < n < n_pos
        torch.testing.assert_close(scores[kind], tl * n_pos / n, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- definitions, brute force


def _brute_force(pattern: torch.Tensor, tokens: list[int], kind: str) -> tuple[float, int]:
    """Mean target attention over query positions with a target, by loops over positions."""
    total, count = 0.0, 0
    for i, tok in enumerate(tokens):
        if kind == "previous_token":
            targets = [i - 1] if i >= 1 else []
        else:
            earlier = [j for j in range(i) if tokens[j] == tok]
            targets = earlier if kind == "duplicate_token" else [j + 1 for j in earlier]
        if targets:
            total += float(pattern[i, targets].sum())
            count += 1
    return (total / count if count else float("nan")), count


def test_definitions_on_irregular_repeats(tiny_model):
    """A fixed random causal pattern in every head; scores equal the loop-by-loop definition on
    tokens with back-to-back repeats, triple occurrences and tokens seen once."""
    tokens = [0, 5, 5, 7, 9, 5, 7, 3, 9, 9, 11, 5]
    n = len(tokens)
    g = torch.Generator().manual_seed(0)
    pattern = torch.rand(n, n, generator=g).tril()
    pattern /= pattern.sum(-1, keepdim=True)

    def force(p, hook):
        return pattern.expand_as(p).clone()

    with tiny_model.hooks(fwd_hooks=[(lambda name: name.endswith("hook_pattern"), force)]):
        scores = head_scores(tiny_model, torch.tensor([tokens]))
    for kind in KINDS:
        value, count = _brute_force(pattern, tokens, kind)
        assert scores.n_positions[kind] == count
        torch.testing.assert_close(scores[kind], torch.full((2, 4), value), atol=1e-6, rtol=0)


def test_batches_by_length_and_tokens():
    rows = [torch.zeros(n, dtype=torch.long) for n in (4, 4, 4, 6, 4, 6)]
    assert heads._batches(rows, 8) == [[0, 1], [2, 4], [3], [5]]
    assert heads._batches(rows, 12) == [[0, 1, 2], [4], [3, 5]]
    assert heads._batches(rows, 3) == [[0], [1], [2], [4], [3], [5]]


def test_pooled_over_positions_and_independent_of_batching(tiny_text):
    texts = [*TEXTS, "abcabc", TEXTS[0]]
    whole = head_scores(tiny_text, texts, max_tokens=2048)
    one_by_one = head_scores(tiny_text, texts, max_tokens=1)
    parts = [head_scores(tiny_text, t) for t in texts]
    for kind in KINDS:
        torch.testing.assert_close(whole[kind], one_by_one[kind], atol=1e-6, rtol=0)
        n = [p.n_positions[kind] for p in parts]
        assert whole.n_positions[kind] == sum(n)
        pooled = sum(p[kind] * c for p, c in zip(parts, n, strict=True)) / sum(n)
        torch.testing.assert_close(whole[kind], pooled, atol=1e-6, rtol=0)
        assert whole.per_prompt[kind].shape == (len(texts), 2, 4)
        torch.testing.assert_close(whole.per_prompt[kind][1], parts[1][kind], atol=1e-6, rtol=0)


# ---------------------------------------------------------------- the toy model's known heads


def _check_toy_heads(scores: heads.HeadScores) -> None:
    # interp/toy.py and tests/test_toy.py: previous-token heads L0H4 and L0H2, induction in layer 1
    prev = {(r["layer"], r["head"]) for r in scores.top("previous_token", 2)}
    assert prev == {(0, 4), (0, 2)}, scores["previous_token"]
    assert float(scores["previous_token"][0, [2, 4]].min()) > 0.7
    (layer, _), best = scores.best("induction")
    assert layer == 1 and best > 0.85, scores["induction"]
    assert float(scores["induction"][1].min()) > 0.7, scores["induction"]
    assert float(scores["induction"][0].max()) < 0.1, scores["induction"]
    # copying heads attend after the earlier copy, not to it
    assert float(scores["duplicate_token"].max()) < 0.2, scores["duplicate_token"]


def test_toy_heads_from_repeated_random_tokens(toy_model):
    tokens = toy.repeated_random_tokens(64, 20, generator=torch.Generator().manual_seed(7))
    _check_toy_heads(head_scores(toy_model, tokens))


def test_toy_heads_from_repeats_at_an_untrained_offset(toy_model):
    _check_toy_heads(head_scores(toy_model, _repeat_tokens(64, seed=2, vocab=128, n=12, noise=5)))


def test_toy_heads_from_natural_text(toy_text):
    scores = head_scores(toy_text, TEXTS)
    _check_toy_heads(scores)
    # natural text: many positions repeat a letter, so more count than the repeated halves
    assert scores.n_positions["induction"] > len(TEXTS[0]) // 2 + len(TEXTS[1]) // 2


def test_toy_head_scores_delegates(toy_model):
    tokens = toy.repeated_random_tokens(16, 10, generator=torch.Generator().manual_seed(3))
    old = toy.head_scores(toy_model, tokens)
    new = head_scores(toy_model, tokens, kinds=("previous_token", "induction"))
    assert torch.equal(old.previous_token, new["previous_token"])
    assert torch.equal(old.induction, new["induction"])


# ---------------------------------------------------------------- no repeats, tables, CIs


def test_no_repeats_is_nan_with_a_warning(tiny_text):
    with pytest.warns(NoTargetWarning, match="no token in these prompts occurs twice") as rec:
        scores = head_scores(tiny_text, "abcdefg")
    assert {str(w.message).split(":")[0] for w in rec} == {"duplicate_token", "induction"}
    assert torch.isnan(scores["induction"]).all() and torch.isnan(scores["duplicate_token"]).all()
    assert scores.n_positions["induction"] == 0
    assert torch.isfinite(scores["previous_token"]).all()
    assert scores.top("induction") == [] and str(scores.top("induction")) == "(no rows)"
    with pytest.raises(ValueError, match="no head has a induction score"):
        scores.best("induction")
    with pytest.raises(ValueError, match="no prompt has a induction target"):
        scores.ci("induction")


def test_top_is_a_table_and_ci_is_over_prompts(tiny_text):
    scores = head_scores(tiny_text, [*TEXTS, "abab cdcd", "no rep"])
    top = scores.top("induction", 3)
    assert isinstance(top, Rows) and top.columns() == ["node", "layer", "head", "score"]
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    (layer, head), value = scores.best("induction")
    assert top[0]["node"] == f"L{layer}H{head}" and value == float(scores["induction"].max())
    assert "<table>" in top._repr_html_()
    ci = scores.ci("induction")
    assert ci.n == 3  # "no rep" has no induction target and is left out
    assert (ci.low <= ci.estimate + 1e-6).all() and (ci.estimate <= ci.high + 1e-6).all()
    with pytest.warns(OnePromptWarning):
        head_scores(tiny_text, TEXTS[0]).ci("induction")


def test_kinds_accept_detect_head_names(tiny_text):
    scores = head_scores(tiny_text, TEXTS[0], kinds="induction_head")
    assert scores.kinds == ("induction",)
    with pytest.raises(KeyError, match="'previous_token' was not computed"):
        scores.top("previous_token")


# ---------------------------------------------------------------- bad input, before any forward


def _no_forward(model, monkeypatch):
    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran before the input was checked")

    monkeypatch.setattr(model, "forward", forward)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("hello hello",), {}, ValueError, "head_scores on text needs a model with a tokenizer"),
        ((torch.tensor([[0, 5, 128]]),), {}, ValueError, "128"),
        ((torch.tensor([[0, 5, 5]]),), {"kinds": "inducton"}, ValueError, "did you mean 'induction'"),
        ((torch.tensor([[0, 5, 5]]),), {"kinds": ()}, ValueError, "kinds is empty"),
        ((torch.tensor([[0, 5, 5]]),), {"max_tokens": 0}, ValueError, "max_tokens must be at least 1"),
        ((torch.zeros(1, 42, dtype=torch.long),), {}, ValueError, "41"),
        ((torch.zeros(1, 0, dtype=torch.long),), {}, ValueError, "empty"),
        (([1, 2, 3],), {}, TypeError, "a string or a list of strings"),
    ],
)  # fmt: skip
def test_bad_input_on_toy(toy_model, monkeypatch, args, kwargs, error, match):
    _no_forward(toy_model, monkeypatch)
    with pytest.raises(error, match=match):
        head_scores(toy_model, *args, **kwargs)


def test_bad_text_input(tiny_text, monkeypatch):
    _no_forward(tiny_text, monkeypatch)
    with pytest.raises(ValueError, match="empty list of prompts"):
        head_scores(tiny_text, [])
    with pytest.raises(ValueError, match="prompt 1"):  # too long: refused, not truncated
        head_scores(tiny_text, ["ab ab", "x" * 80])


def test_no_warning_when_every_kind_has_targets(toy_text):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head_scores(toy_text, TEXTS)


def test_half_precision_model_sums_in_float32(toy_model):
    tokens = toy.repeated_random_tokens(8, 20, generator=torch.Generator().manual_seed(5))
    full = head_scores(toy_model, tokens)
    half = head_scores(toy.load_toy_induction(dtype=torch.bfloat16), tokens)
    for kind in KINDS:
        assert half[kind].dtype == torch.float32
        torch.testing.assert_close(half[kind], full[kind], atol=0.02, rtol=0)
