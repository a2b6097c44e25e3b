"""interp.steering on the offline SmolLM2-135M-Instruct (one shared load)."""

from __future__ import annotations

import pytest
import torch

from interp.core.positions import real
from interp.steering import (
    add,
    encode,
    extract,
    generate,
    load_vectors,
    probe_accuracy,
    save_vectors,
    steer,
    word_logit_diff,
)
from interp.steering.data import NEGATIVE_WORDS, POSITIVE_WORDS, SENTIMENT_PAIRS, SENTIMENT_PROMPTS

pytestmark = pytest.mark.slow

POS = [p for p, _ in SENTIMENT_PAIRS]
NEG = [n for _, n in SENTIMENT_PAIRS]


@pytest.fixture(scope="module")
def sentiment(smollm2):
    return extract(smollm2, POS[:16], NEG[:16], layers=[15], position=real(slice(1, None)))[15]


def test_sentiment_direction_reads_held_out_pairs(smollm2, sentiment):
    acc = probe_accuracy(smollm2, sentiment, POS[40:], NEG[40:])
    assert acc.ranking is not None and float(acc.ranking.estimate) == 1.0
    assert float(acc.accuracy.estimate) >= 0.85


def test_sentiment_vector_moves_sentiment_words_both_ways(smollm2, sentiment):
    metric = word_logit_diff(smollm2, POSITIVE_WORDS, NEGATIVE_WORDS)
    enc = encode(smollm2, SENTIMENT_PROMPTS[:4])
    kw = {"attention_mask": enc.attention_mask}

    def run(alpha):
        with torch.no_grad(), steer(smollm2, add(sentiment, alpha), **kw):
            return metric(smollm2(enc.tokens, **kw), enc)

    base, up, down = run(0.0), run(2.0), run(-2.0)
    assert (up > base).all() and (down < base).all()
    with torch.no_grad():
        assert torch.equal(run(0.0), metric(smollm2(enc.tokens, **kw), enc))


def test_batched_steered_generation_equals_one_prompt_at_a_time(smollm2, sentiment):
    prompts = ["The film was", "I went to the new restaurant and the food was"]
    edit = add(sentiment, 1.5, positions="generated")
    batched = generate(smollm2, prompts, edit, max_new_tokens=4)
    alone = [generate(smollm2, p, edit, max_new_tokens=4) for p in prompts]
    assert batched == alone


def test_vectors_round_trip_with_the_real_fingerprint(smollm2, sentiment, tmp_path):
    path = save_vectors(tmp_path / "sentiment.safetensors", sentiment)
    back = load_vectors(path, model=smollm2)[15]
    assert torch.equal(back.vector, sentiment.vector)
    assert back.metadata["position"] == ["real", "slice", 1, None]


def test_reading_tokenises_as_the_vector_was_extracted(smollm2):
    from interp.steering import project

    vec = extract(smollm2, POS[:4], NEG[:4], layers=[6], prepend_bos=True)[6]
    assert vec.metadata["prepend_bos"] is True
    stored = project(smollm2, POS[:2], vec)
    explicit = project(smollm2, POS[:2], vec, prepend_bos=True)
    without = project(smollm2, POS[:2], vec, prepend_bos=False)
    torch.testing.assert_close(stored.scores, explicit.scores, equal_nan=True)
    assert stored.scores.shape[1] == without.scores.shape[1] + 1  # the BOS position
    acc = probe_accuracy(smollm2, vec, POS[4:8], NEG[4:8])
    assert acc == probe_accuracy(smollm2, vec, POS[4:8], NEG[4:8], prepend_bos=True)
