"""First-letter feature absorption (Chanin et al., "A is for Absorption"; SAEBench's
``absorption_first_letter``), built offline from the model's own vocabulary.

Words are vocabulary tokens that decode to a space and 2+ ASCII letters. Each word gets an ICL
prompt, ``"\\n{ex} has the first letter: {E}"`` for a few other words, then ``"\\n{word} has the
first letter:"``; x is the residual activation at the SAE's hook on the word token. A multinomial
logistic probe predicts the first letter from x (train words; accuracy on held-out words).

Per letter L: latents ranked by mean activation on L-words minus on the rest (train); the main
latents are the top k, k grown from 1 while the class-balanced k-sparse probe's held-out F1 rises by at least
``f1_jump`` (SAEBench's feature-splitting rule). Then for every held-out L-word the probe labels
L, with u the unit probe direction of L, c_j = cos(u, W_dec[j]), p_j = f_j·c_j, P = x·u,
M = Σ_{j∈main} p_j and A = sum of the 3 largest p_j > 0 over non-main latents with c_j ≥ 0.1::

    absorption fraction = 0                 if M ≥ P or A/P < 0.4
                          1                 elif M ≤ 0
                          a / (a + M)       otherwise, a = min(A, P − M)   (clipped to [0, 1])
    full absorption     = no main latent fires, P > 0, and the latent of largest p_j has
                          c_j ≥ 0.025 and p_j/P ≥ 0.4

A letter's scores are their means over those words; the SAE's, the means over letters. These are
SAEBench's formulas and thresholds. Where this differs: latents are ranked by mean difference
(SAEBench: the weights of an L1-regularised probe on all latents); the probe is an L2 softmax
regression on standardised activations; "the probe labels L" is its argmax (SAEBench: L's score
> 0); ICL examples are 3 random unmeasured words per prompt (SAEBench: 10); P ≤ 0 gives fraction 0
(SAEBench divides by it).
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saes.probing import LinearProbe, fit_probe

__all__ = [
    "AbsorptionResult", "TEMPLATE", "absorption_scores", "first_letter_absorption",
    "first_letter_words", "main_latents", "spelling_activations", "spelling_prompt",
    "word_activations",
]  # fmt: skip

TEMPLATE = "{word} has the first letter:"
EPS = 1e-8


def first_letter_words(tokenizer: Any) -> dict[str, list[tuple[int, str]]]:
    """Vocabulary tokens that are a space and 2+ ASCII letters, as ``(id, word)``, by lower-case
    first letter (sorted by id)."""
    out: dict[str, list[tuple[int, str]]] = {c: [] for c in string.ascii_lowercase}
    for i in sorted(tokenizer.get_vocab().values()):
        s = tokenizer.decode([i])
        if len(s) >= 3 and s[0] == " " and s[1:].isascii() and s[1:].isalpha():
            out[s[1].lower()].append((i, s))
    return out


def spelling_prompt(word: str, examples: Sequence[str]) -> str:
    """The ICL prompt for ``word`` (words keep their leading space).

    >>> spelling_prompt(" cat", [" dog"])
    '\\n dog has the first letter: D\\n cat has the first letter:'
    """
    shots = [TEMPLATE.format(word=ex) + " " + ex.strip()[0].upper() for ex in examples]
    return "\n" + "\n".join([*shots, TEMPLATE.format(word=word)])


def absorption_scores(
    x: Tensor,
    latents: Tensor,
    w_dec: Tensor,
    direction: Tensor,
    main: Sequence[int],
    *,
    cos_fraction: float = 0.1,
    cos_full: float = 0.025,
    proportion: float = 0.4,
    max_absorbers: int = 3,
) -> tuple[Tensor, Tensor]:
    """Per row, the absorption fraction and whether it is fully absorbed (module docstring).

    ``x`` ``[n, d_in]`` activations, ``latents`` ``[n, d_sae]`` the SAE's on them, ``w_dec``
    ``[d_sae, d_in]``, ``direction`` the probe's ``[d_in]``, ``main`` the main latents' indices.
    """
    if not main:
        raise ValueError("main latents are empty: absorption is measured against at least one")
    u = direction.float() / direction.float().norm()
    cos = torch.nn.functional.cosine_similarity(w_dec.float(), u[None], dim=-1)  # [d_sae]
    proj = latents.float() * cos
    total = x.float() @ u
    is_main = torch.zeros(len(cos), dtype=torch.bool)
    is_main[list(main)] = True
    m = proj[:, is_main].sum(-1)
    cand = torch.where(~is_main & (cos >= cos_fraction) & (proj > 0), proj, torch.zeros(()))
    a = cand.topk(min(max_absorbers, cand.shape[1]), dim=-1).values.sum(-1)
    safe = torch.where(total > 0, total, torch.ones(()))
    partial = torch.minimum(a, total - m)
    frac = torch.where(m <= 0, torch.ones(()), (partial / (partial + m)).clamp(0, 1))
    frac = torch.where((total <= 0) | (m >= total) | (a / safe < proportion), 0.0, frac)
    top = proj.argmax(-1)
    full = (
        (latents[:, is_main].float() < EPS).all(-1)
        & (total > 0)
        & (cos[top] >= cos_full)
        & (proj.gather(1, top[:, None])[:, 0] / safe >= proportion)
    )
    return frac, full


def _f1(pred: Tensor, y: Tensor) -> float:
    tp = float((pred & y).sum())
    return 2 * tp / max(float(pred.sum() + y.sum()), 1.0)


def main_latents(
    train: Tensor,
    y_train: Tensor,
    test: Tensor,
    y_test: Tensor,
    *,
    max_k: int = 10,
    f1_jump: float = 0.03,
) -> tuple[list[int], list[float]]:
    """The main latents of a binary task: top latents by (signed) mean difference, grown while
    the class-balanced k-sparse probe's held-out F1 rises by ``f1_jump``; also the F1 per k tried."""
    pos = y_train.bool()
    order = (train[pos].float().mean(0) - train[~pos].float().mean(0)).argsort(descending=True)
    best, chosen, f1s = -1.0, order[:1].tolist(), []
    for k in range(1, min(max_k, train.shape[1]) + 1):
        idx = order[:k]
        probe = fit_probe(train[:, idx], y_train.long(), balanced=True)
        f1s.append(_f1(probe.predict(test[:, idx]).bool(), y_test.bool()))
        if f1s[-1] < best + f1_jump:
            break
        best, chosen = f1s[-1], idx.tolist()
    return chosen, f1s


@dataclass
class AbsorptionResult:
    """First-letter absorption of one SAE (definitions in the module docstring)."""

    mean_absorption_fraction: float
    full_absorption_rate: float
    probe_accuracy: float
    n_train: int
    n_test: int
    per_letter: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@torch.no_grad()
def word_activations(
    model: Any, hook: str, prompts: list[str], ids: list[int], batch: int
) -> Tensor:
    """Residual rows at ``hook`` on each prompt's word token (``ids``, checked to sit just before
    the template's tail); prompts of equal length share a forward."""
    from interp.cache import cache_activations

    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None)
    toks = [tok(p)["input_ids"] for p in prompts]
    # The word sits just before the template's tail (its own tokens, without any BOS).
    pos = -1 - len([t for t in tok(TEMPLATE.format(word=""))["input_ids"] if t != bos])
    for t, i in zip(toks, ids, strict=True):
        if t[pos] != i:
            raise ValueError(
                f"word token {i} is not at position {pos} of its prompt: {tok.decode(t)!r}"
            )
    out = torch.empty(len(prompts), model.cfg.d_model)
    by_len: dict[int, list[int]] = {}
    for j, t in enumerate(toks):
        by_len.setdefault(len(t), []).append(j)
    for rows in by_len.values():
        for k in range(0, len(rows), batch):
            chunk = rows[k : k + batch]
            ids_t = torch.tensor([toks[j] for j in chunk])
            out[chunk] = (
                cache_activations(model, ids_t, hook, positions=pos)[hook]
                .float()
                .reshape(len(chunk), -1)
            )
    return out


def first_letter_absorption(
    model: Any,
    sae: Any,
    hook: str,
    *,
    words_per_letter: int = 20,
    min_words: int = 9,
    n_examples: int = 3,
    seed: int = 0,
    batch: int = 32,
    max_k: int = 10,
    acts: tuple[Tensor, list[int], list[str]] | None = None,
) -> AbsorptionResult:
    """Absorption of ``sae`` (reading ``hook`` of ``model``) on first-letter spelling: up to
    ``words_per_letter`` words per letter with at least ``min_words``, two thirds train.
    ``acts``: precomputed ``(x, letter ids, words)`` from :func:`spelling_activations` (several
    SAEs on one hook share one model pass)."""
    x, letters, _ = acts if acts is not None else spelling_activations(
        model, hook, words_per_letter=words_per_letter, min_words=min_words,
        n_examples=n_examples, seed=seed, batch=batch,
    )  # fmt: skip
    y = torch.tensor(letters)
    gen = torch.Generator().manual_seed(seed)
    train = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():  # stratified: two thirds of each letter's words train
        rows = (y == c).nonzero()[:, 0]
        rows = rows[torch.randperm(len(rows), generator=gen)]
        train[rows[: 2 * len(rows) // 3]] = True
    probe: LinearProbe = fit_probe(x[train], y[train])
    pred = probe.predict(x)
    with torch.no_grad():
        f = sae.encode(x.to(sae.W_dec.device)).float().cpu()
    w_dec = sae.W_dec.detach().float().cpu()
    per: dict[str, dict[str, Any]] = {}
    for c in y.unique().tolist():
        yt, ys = (y[train] == c).long(), (y[~train] == c).long()
        main, f1s = main_latents(f[train], yt, f[~train], ys, max_k=max_k)
        tp = ~train & (y == c) & (pred == c)
        if not tp.any():
            continue
        frac, full = absorption_scores(x[tp], f[tp], w_dec, probe.direction(c), main)
        per[string.ascii_lowercase[c]] = {
            "main_latents": main, "f1_by_k": f1s, "n_probe_true_positives": int(tp.sum()),
            "absorption_fraction": float(frac.mean()), "full_absorption_rate": float(full.float().mean()),
        }  # fmt: skip
    if not per:
        raise ValueError("the probe labelled no held-out word correctly: nothing to measure")
    mean = lambda key: sum(v[key] for v in per.values()) / len(per)  # noqa: E731
    return AbsorptionResult(
        mean("absorption_fraction"), mean("full_absorption_rate"),
        probe.accuracy(x[~train], y[~train]), int(train.sum()), int((~train).sum()), per,
    )  # fmt: skip


def spelling_activations(
    model: Any,
    hook: str,
    *,
    words_per_letter: int = 20,
    min_words: int = 9,
    n_examples: int = 3,
    seed: int = 0,
    batch: int = 32,
) -> tuple[Tensor, list[int], list[str]]:
    """Residual activations at ``hook`` on the word token of each spelling prompt, the words'
    first letters (0 = a) and the words: ``words_per_letter`` random words of every letter that
    has ``min_words``; ICL examples come from words not measured."""
    if min_words < 3 or words_per_letter < min_words:
        raise ValueError(
            f"need 3 <= min_words <= words_per_letter (train and held-out words of each letter); "
            f"got min_words={min_words}, words_per_letter={words_per_letter}"
        )
    rng = random.Random(seed)
    words, letters, pool = [], [], []
    for c, rows in first_letter_words(model.tokenizer).items():
        rows = rng.sample(rows, len(rows))
        if len(rows) >= min_words + 1:
            take = rows[:words_per_letter]
            words += take
            letters += [ord(c) - ord("a")] * len(take)
            pool += [w for _, w in rows[words_per_letter : words_per_letter + 4]]
    if len(set(letters)) < 2:
        raise ValueError(f"fewer than 2 letters have {min_words} words in this vocabulary")
    prompts = [spelling_prompt(w, rng.sample(pool, n_examples)) for _, w in words]
    x = word_activations(model, hook, prompts, [i for i, _ in words], batch)
    return x, letters, [w for _, w in words]
