"""Causal scrubbing on the offline SmolLM2-135M: its induction heads on repeated random tokens.

Data: ``[BOS, x_1..x_6, x_1..x_6]`` with the six tokens distinct, drawn from ids 1000..1019 (so a
feature "token at position p" has 20 classes of ~10 rows in a 200-row dataset). The loss is
predicting ``x_5`` from the second ``x_4`` (position 10). docs/scrubbing.md has the numbers
measured with more samples and the induction-circuit hypotheses.
"""

from __future__ import annotations

import pytest
import torch

from interp.scrubbing import Hypothesis, claim, compare, next_token_loss
from interp.toy import head_scores

torch.set_num_threads(1)

K, J = 6, 4  # six tokens repeated; score the second x_J
POSITION = K + J
INDUCTION = [(17, 5), (18, 6), (17, 4), (17, 3)]  # top induction scores (asserted below)
RANDOM = [(17, 8), (18, 8), (17, 6), (17, 1)]  # lowest induction scores in the same layers


def repeated_tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pool = torch.arange(1000, 1020)
    rows = [pool[torch.randperm(len(pool), generator=g)[:K]] for _ in range(n)]
    return torch.stack([torch.cat([torch.tensor([1]), x, x]) for x in rows])


def _tok(p: int, name: str):
    def feature(x):
        return int(x[p])

    feature.__name__ = name
    return feature


CURRENT = _tok(J, "current token")  # x_J: the token at the query and before the attended key
NEXT = _tok(J + 1, "next token")  # x_{J+1}: the label, and the token at the attended key


def heads_hypothesis(name: str, heads) -> Hypothesis:
    return Hypothesis(name, claim("logits", None, *(claim(f"L{a}H{b}", NEXT) for a, b in heads)))


def circuit_hypothesis(name: str, heads) -> Hypothesis:
    """Each head outputs the next token; its query reads the current token, its key the token
    before the key position (= current), its value the token at the key position (= next)."""

    def head(a: int, b: int):
        g = b // 3  # SmolLM2: 9 query heads, 3 key/value heads
        return claim(f"L{a}H{b}", NEXT, claim(f"L{a}H{b}.q", CURRENT),
                     claim(f"L{a}G{g}.k", CURRENT), claim(f"L{a}G{g}.v", NEXT))  # fmt: skip

    return Hypothesis(name, claim("logits", None, *(head(a, b) for a, b in heads)))


@pytest.mark.slow
def test_smollm2_induction_heads_recover_more_than_random_heads(smollm2):
    data = repeated_tokens(200)
    with torch.no_grad():
        scores = head_scores(smollm2, data[:20]).induction
    top = {divmod(int(i), smollm2.cfg.n_heads) for i in scores.flatten().topk(4).indices}
    assert top == set(INDUCTION)
    assert all(float(scores[a, b]) < 0.1 for a, b in RANDOM)

    hyps = [heads_hypothesis("induction", INDUCTION), heads_hypothesis("random", RANDOM)]
    c = compare(smollm2, data, hyps, next_token_loss(POSITION), n_samples=200, seed=0)
    ind, rnd = c["induction"], c["random"]
    # induction works: clean loss far below the random baseline
    assert float(ind.clean.mean()) + 4 < float(ind.random.mean())
    assert ind.recovered_ci().low > rnd.recovered_ci().high
    assert c.difference_ci("induction", "random").low > 0.01
    assert abs(rnd.recovered) < 0.01
