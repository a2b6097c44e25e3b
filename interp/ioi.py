"""Indirect-object-identification (IOI) prompts with corrupted pairs, after Wang et al. (2022).

A clean prompt names two people and repeats one (the subject, S); the model should complete with
the other (the indirect object, IO)::

    ABBA: "When Mary and John went to the store, John gave a drink to" →  " Mary"
    BABA: "When John and Mary went to the store, John gave a drink to" →  " Mary"

The corrupted prompt replaces the repeated name with a third name (the "ABC" distribution), so
nothing in it tells IO from S. Names, places and objects are single tokens with their leading
space in the model's vocabulary, so every prompt has the same length and positions line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp.hooks import TLModel
from interp.validate import check_int, check_tokenizer

__all__ = ["IOIBatch", "ioi_prompts"]

NAMES = [
    "Mary",
    "John",
    "Tom",
    "James",
    "David",
    "Sarah",
    "Paul",
    "Anna",
    "Mark",
    "Lisa",
    "Peter",
    "Kate",
    "Michael",
    "Emma",
    "Daniel",
    "Alice",
    "Robert",
    "Laura",
    "Steve",
    "Jane",
    "George",
    "Susan",
    "Chris",
    "Helen",
    "Frank",
    "Rachel",
    "Kevin",
    "Amy",
    "Eric",
    "Julia",
    "Sam",
    "Ben",
    "Tim",
    "Ryan",
    "Adam",
    "Jack",
    "Alex",
    "Lucy",
    "Rose",
    "Grace",
]
PLACES = ["store", "park", "school", "beach", "office", "station", "market", "garden"]
OBJECTS = ["drink", "book", "ball", "gift", "letter", "key", "pen", "bag"]
TEMPLATE = "When {a} and {b} went to the {place}, {s} gave a {obj} to"
# Roles of each position of TEMPLATE's tokens (one token per word, comma on its own).
ROLES = [
    "When",
    "name1",
    "and",
    "name2",
    "went",
    "to",
    "the",
    "[place]",
    ",",
    "S2",
    "gave",
    "a",
    "[object]",
    "to",
]


@dataclass
class IOIBatch:
    clean: Tensor  # [n, pos]
    corrupt: Tensor  # [n, pos]
    io: Tensor  # [n] token id of the indirect object (the right answer)
    s: Tensor  # [n] token id of the subject
    texts: list[str]
    corrupt_texts: list[str]
    orders: list[str]  # "ABBA" or "BABA" per prompt
    roles: list[str]  # a label per position


def _single_tokens(model: TLModel, words: list[str]) -> list[str]:
    return [w for w in words if model.to_tokens(" " + w, prepend_bos=False).shape[1] == 1]


def ioi_prompts(model: TLModel, n: int, *, seed: int = 0) -> IOIBatch:
    """``n`` IOI prompts (half ABBA, half BABA) and their ABC-corrupted pairs."""
    check_int(n, "n", minimum=1)
    check_int(seed, "seed")
    check_tokenizer(model, "ioi_prompts")  # the prompts are text
    names = _single_tokens(model, NAMES)
    places, objects = _single_tokens(model, PLACES), _single_tokens(model, OBJECTS)
    if len(names) < 3 or not places or not objects:
        raise ValueError(
            "this model's tokenizer splits too many of the IOI names/places/objects into several "
            f"tokens (single-token names: {len(names)}, places: {len(places)}, objects: "
            f"{len(objects)}); prompts would not line up position by position"
        )
    gen = torch.Generator().manual_seed(seed)
    texts, corrupt_texts, orders, io_ids, s_ids = [], [], [], [], []
    for i in range(n):
        a, b, c = (names[j] for j in torch.randperm(len(names), generator=gen)[:3].tolist())
        place = places[int(torch.randint(len(places), (1,), generator=gen))]
        obj = objects[int(torch.randint(len(objects), (1,), generator=gen))]
        order = "ABBA" if i % 2 == 0 else "BABA"
        first, second = (a, b) if order == "ABBA" else (b, a)  # IO = a, S = b in both
        texts.append(TEMPLATE.format(a=first, b=second, place=place, s=b, obj=obj))
        corrupt_texts.append(TEMPLATE.format(a=first, b=second, place=place, s=c, obj=obj))
        orders.append(order)
        io_ids.append(model.to_single_token(" " + a))
        s_ids.append(model.to_single_token(" " + b))
    clean = torch.cat([model.to_tokens(t) for t in texts])
    corrupt = torch.cat([model.to_tokens(t) for t in corrupt_texts])
    roles = ROLES if clean.shape[1] == len(ROLES) else [str(p) for p in range(clean.shape[1])]
    if clean.shape[1] == len(ROLES) + 1:  # a tokenizer that prepends BOS
        roles = ["BOS", *ROLES]
    return IOIBatch(
        clean,
        corrupt,
        torch.tensor(io_ids),
        torch.tensor(s_ids),
        texts,
        corrupt_texts,
        orders,
        roles,
    )
