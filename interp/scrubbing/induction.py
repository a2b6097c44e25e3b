"""Induction hypotheses for the toy 2-layer model (``interp.toy``), scored at one position.

Data: ``repeated_random_tokens(n, 20)`` (``[BOS, x_1..x_20, x_1..x_20]``). The loss is predicting
position ``T + 1`` from position ``T = 30`` (the second copy of ``x_10``, whose next token
``x_11`` can only be known by induction). Features are tokens at fixed positions, so classes
are large (127 values): ``current`` = the token at T (equal to the token at 10, the one before
the key the induction head should attend to), ``next`` = the token at T + 1 (the label, equal to
the token at 11, the key the head copies from).

- ``naive`` (the textbook circuit, as in Redwood's naive hypothesis): every layer-1 head (all
  eight are induction heads in this model) outputs ``next``; its query reads the current token
  from the embedding, its key reads ``current`` from the previous-token heads L0H4 and L0H2,
  its value reads ``next`` from the embedding. Everything else is resampled at random.
- ``refined``: also claims that the other layer-0 heads feed the key (all eight, with
  ``current``) and that the query and value read layer-0 heads on the same input as the
  induction head (the shortformer model smears "previous token" over several layer-0 heads).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from interp.manifest import sourced
from interp.scrubbing.hypothesis import Claim, Hypothesis, claim

__all__ = ["POSITION", "bench_hypothesis", "induction_hypotheses", "token_feature"]

POSITION = 30
PREV_TOKEN_HEADS = ("L0H4", "L0H2")
LAYER0 = tuple(f"L0H{h}" for h in range(8))


@sourced
def token_feature(p: int, name: str) -> Callable[[Tensor], int]:
    def feature(x: Tensor) -> int:
        return int(x[p])

    feature.__name__ = name
    return feature


CURRENT = token_feature(POSITION, "current token")
NEXT = token_feature(POSITION + 1, "next token")


def _head(h: int, q: list[Claim], k: list[Claim], v: list[Claim]) -> Claim:
    n = f"L1H{h}"
    return claim(
        n, NEXT, claim(f"{n}.q", None, *q), claim(f"{n}.k", None, *k), claim(f"{n}.v", None, *v)
    )


def induction_hypotheses(heads: range | tuple[int, ...] = tuple(range(8))) -> dict[str, Hypothesis]:
    naive = [
        _head(
            h,
            [claim("embed", CURRENT)],
            [claim(p, CURRENT) for p in PREV_TOKEN_HEADS],
            [claim("embed", NEXT)],
        )
        for h in heads
    ]
    refined = [
        _head(
            h,
            [claim("embed", CURRENT), *(claim(p) for p in LAYER0)],
            [claim(p, CURRENT) for p in LAYER0],
            [claim("embed", NEXT), *(claim(p) for p in LAYER0)],
        )
        for h in heads
    ]
    heads_only = [claim(f"L1H{h}", NEXT) for h in heads]
    return {
        "heads only": Hypothesis("heads only", claim("logits", None, *heads_only)),
        "naive": Hypothesis("naive", claim("logits", None, *naive)),
        "refined": Hypothesis("refined", claim("logits", None, *refined)),
    }


def bench_hypothesis() -> Hypothesis:
    """Ten claims: L1H7's full induction circuit, plus L1H1 as a leaf."""
    return Hypothesis(
        "bench: L1H7 circuit + L1H1",
        claim(
            "logits",
            None,
            _head(
                7,
                [claim("embed", CURRENT)],
                [claim(p, CURRENT) for p in PREV_TOKEN_HEADS],
                [claim("embed", NEXT)],
            ),
            claim("L1H1", NEXT),
        ),
    )
