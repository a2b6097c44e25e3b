"""Linear probes and k-sparse probing of SAE latents (SAEBench's ``sparse_probing``), with the
offline labelled tasks mechscope measures them on.

For a binary task with train rows (a_i, y_i) (a: SAE latents, or residual activations for the
baseline), latents are ranked by ``|mean(a | y=1) − mean(a | y=0)|`` on train; the k-sparse probe
is an L2 logistic regression on the top k of them, scored by accuracy on held-out rows. Sequence
tasks (which play a line is from) mean-pool over a line's tokens, SAE latents being computed per
token before pooling, as SAEBench does; token tasks (a tokenizer-determined property) use one row
per token.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "KSparseResult", "LinearProbe", "TOKEN_PROPERTIES", "fit_probe", "k_sparse_probe",
    "mean_diff_ranking", "pooled_activations", "token_property_rows",
]  # fmt: skip


@dataclass
class LinearProbe:
    """A multinomial logistic-regression probe on standardised inputs (2 classes: binary)."""

    weight: Tensor
    """``[n_classes, d]``, in standardised units."""
    bias: Tensor
    mean: Tensor
    std: Tensor

    def logits(self, x: Tensor) -> Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x) == y).float().mean())

    def direction(self, c: int) -> Tensor:
        """Class c's weight in raw input units (the direction its logit grows along)."""
        return self.weight[c] / self.std


def _check_labels(y: Tensor, what: str) -> int:
    if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32, torch.bool):
        raise ValueError(
            f"{what} labels must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}"
        )
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"{what} labels hold a single class ({classes.tolist()}): a probe needs examples "
            "of at least two classes; pick a task or split with both"
        )
    return int(y.max()) + 1


def fit_probe(
    x: Tensor, y: Tensor, *, l2: float = 1e-2, max_iter: int = 200, balanced: bool = False
) -> LinearProbe:
    """Fit softmax regression (L-BFGS, mean loss + ``l2``·‖W‖²/2) to rows ``x`` and labels ``y``;
    ``balanced`` weights each class by n / (classes · its count), sklearn's ``"balanced"``.

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]]); y = torch.tensor([0, 0, 1, 1])
    >>> fit_probe(x, y).accuracy(x, y)
    1.0
    """
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"x must be [n, d] with one label per row; got {tuple(x.shape)}, {len(y)} labels"
        )
    n_classes = _check_labels(y, "training")
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")
    target = y.long()
    counts = torch.bincount(target, minlength=n_classes).float()
    weight = len(target) / (n_classes * counts.clamp_min(1)) if balanced else None

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(z @ w.T + b, target, weight=weight)
            + l2 / 2 * w.pow(2).sum()
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)  # type: ignore[no-untyped-call]
    return LinearProbe(w.detach(), b.detach(), mean, std)


def mean_diff_ranking(acts: Tensor, y: Tensor) -> Tensor:
    """Latent indices by ``|mean over y=1 − mean over y=0|``, largest first (SAEBench's ranking)."""
    _check_labels(y, "training")
    pos = y.bool()
    return (acts[pos].float().mean(0) - acts[~pos].float().mean(0)).abs().argsort(descending=True)


@dataclass
class KSparseResult:
    """Held-out accuracy of the k-sparse probe per k, with the latents it used."""

    accuracy: dict[int, float]
    latents: dict[int, list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "latents": self.latents}


def k_sparse_probe(
    train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor, ks: Sequence[int] = (1, 2, 5, 20)
) -> KSparseResult:
    """k-sparse probing of a binary task: top-k latents by mean difference on train, a
    class-balanced logistic probe on them, accuracy on test.

    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.rand(200, 50, generator=g); y = torch.arange(200) % 2; a[:, 7] += 3 * y
    >>> r = k_sparse_probe(a[:100], y[:100], a[100:], y[100:], ks=(1,))
    >>> r.latents[1], r.accuracy[1]
    ([7], 1.0)
    """
    d = train.shape[-1]
    if bad := [k for k in ks if not 1 <= k <= d]:
        raise ValueError(f"k must be in 1..{d} (the number of latents); got {bad}")
    if test.shape[-1] != d:
        raise ValueError(f"train has {d} latents but test has {test.shape[-1]}")
    if set(torch.unique(y_train).tolist()) - {0, 1} or set(torch.unique(y_test).tolist()) - {0, 1}:
        raise ValueError("k-sparse probing is binary: labels must be 0 and 1 (one-vs-rest)")
    _check_labels(y_test, "held-out")
    order = mean_diff_ranking(train, y_train)
    acc, used = {}, {}
    for k in ks:
        idx = order[:k]
        probe = fit_probe(train[:, idx], y_train, balanced=True)
        acc[k], used[k] = probe.accuracy(test[:, idx], y_test), idx.tolist()
    return KSparseResult(acc, used)


# ---- offline tasks ---------------------------------------------------------------------------------
@torch.no_grad()
def pooled_activations(
    model: Any, hook: str, texts: Sequence[str], saes: Sequence[Any], *, max_len: int = 48
) -> tuple[Tensor, list[Tensor]]:
    """Per text, the mean over its tokens (BOS left out) of the residual activation at ``hook``,
    and of each SAE's latents (encoded per token, then pooled). Texts are cut to ``max_len``."""
    from interp.cache import cache_activations

    tok = model.tokenizer
    bos = getattr(tok, "bos_token_id", None)
    resid: list[Tensor] = []
    latents: list[list[Tensor]] = [[] for _ in saes]
    for text in texts:  # one text per forward: no padding to mask
        ids = tok(text, return_tensors="pt")["input_ids"][:, :max_len]
        act = cache_activations(model, ids, hook)[hook][0].float()
        act = act[1:] if bos is not None and int(ids[0, 0]) == bos else act
        resid.append(act.mean(0))
        for out, sae in zip(latents, saes, strict=True):
            out.append(sae.encode(act).float().mean(0))
    return torch.stack(resid), [torch.stack(f) for f in latents]


TOKEN_PROPERTIES = {
    "starts_with_space": lambda s: s.startswith(" "),
    "capitalised": lambda s: s.strip()[:1].isupper(),
}
"""Token properties the tokenizer alone determines, on the decoded token text."""


@torch.no_grad()
def token_property_rows(
    model: Any, hook: str, texts: Sequence[str], prop: str, *, max_len: int = 48
) -> tuple[Tensor, Tensor]:
    """Residual activations at ``hook`` for every token of ``texts`` but the first, labelled by
    the token property ``prop`` (a key of ``TOKEN_PROPERTIES``)."""
    from interp.cache import cache_activations

    if prop not in TOKEN_PROPERTIES:
        close = difflib.get_close_matches(prop, TOKEN_PROPERTIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown token property {prop!r}{hint}; choose from {sorted(TOKEN_PROPERTIES)}"
        )
    rule, tok = TOKEN_PROPERTIES[prop], model.tokenizer
    rows, labels = [], []
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"][:, :max_len]
        rows.append(cache_activations(model, ids, hook)[hook][0, 1:].float())
        labels += [int(rule(tok.decode([int(t)]))) for t in ids[0, 1:]]
    return torch.cat(rows), torch.tensor(labels)
