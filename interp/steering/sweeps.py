"""Sweep steering over layers × strengths, measuring the intended effect and the side effects.

Each :class:`Measure` is a set of prompts and a per-prompt metric:

- ``"loss"``: mean next-token loss over real tokens; reported as the change from the unsteered run.
- ``"kl"``: KL(unsteered ‖ steered) of the next-token distributions, averaged over real tokens
  (the definition of :func:`interp.metrics.kl_div`); reported as is (0 without steering).
- a function ``(logits, encoded) -> [batch]``; reported as the change from the unsteered run.

Every cell gets a bootstrap CI over prompts (the same resamples in every cell). Steering a layer
cannot change the layers before it, so each prompt batch runs the model once unsteered, keeps the
residual stream at every swept layer, and each steered cell starts from there
(``start_at_layer``), with the edit still applied through the hook.

Baselines, so an effect can be judged (issue 14; AxBench, Wu et al. 2025, found prompting beat
every steering method it tried):

- ``controls``: other directions run through the same cells (same layers, same α), each rescaled
  at every layer to the steering vector's norm there: a random direction
  (:func:`random_direction`), and for a word-logit metric the embedding direction of the metric's
  own words (:func:`word_embedding_direction`), which raises those logits with no concept at all;
- ``prefix``: the prompting baseline, each measure's prompts after an instruction (e.g. ``"Answer
  positively:\n"``) with no vector, measured on the prompt's own tokens; several named prefixes
  may be given, e.g. a neutral one beside the instruction, to tell the instruction from the mere
  presence of context;
- :meth:`SteeringSweep.wrong_direction`: the share of prompts whose change goes against the
  intended direction, with a Wilson score interval.

A :class:`SteeringSweep` is a :class:`~interp.core.result.Result` on the axes ``measure``,
``layer`` (labels ``"L3"``) and ``alpha`` (labels ``"0.5"``). Measures may have prompts of their
own, so there is no single values tensor: ``values`` maps each measure to its
``[n_prompts, layer, alpha]`` values, and ``sweep.measure(name)`` (or ``sweep.sel(measure=name)``)
is that measure as a plain :class:`~interp.core.result.Values`. The view is
:func:`interp.viz.steering.plot_steering_sweep`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.core.forward import rows_for
from interp.core.metric import evaluate
from interp.core.positions import Positions, Real, Span, check_positions_spec, positions_to_json
from interp.core.result import Result, Values
from interp.hooks import TLModel, hooks
from interp.manifest import sourced, write_run_manifest
from interp.metrics import loss as loss_metric
from interp.multiple_testing import FamilyTest, family_test, split_samples
from interp.recipe import recorded
from interp.stats import CI, bootstrap_ci
from interp.steering._batch import (
    Encoded,
    Prompts,
    _ids,
    encode,
    hash_prompts,
    require_unpadded,
    token_index,
)
from interp.steering.apply import add, steer
from interp.steering.vector import SteeringVector, check_layer, check_width
from interp.validate import check_int, did_you_mean

__all__ = [
    "Best", "Measure", "SteeringSweep", "WrongDirection", "random_direction", "sweep",
    "wilson_interval", "word_embedding_direction", "word_logit_diff",
]  # fmt: skip

STEERING, PROMPT = "steering", "prompt"  # the vector's name; a lone prefix's name

Metric = Literal["loss", "kl"] | Callable[[Tensor, Encoded], Tensor]


@dataclass(frozen=True)
class Measure:
    """A named set of prompts and the per-prompt metric to evaluate on them."""

    name: str
    prompts: Prompts | Encoded
    metric: Metric


def _word_ids(model: TLModel, words: Sequence[str]) -> Tensor:
    """The token id of each word; every word must be a single token."""
    if not words:
        raise ValueError("a word list is empty: give at least one word")
    toks = [model.to_tokens(w, prepend_bos=False)[0] for w in words]
    if bad := [w for w, t in zip(words, toks, strict=True) if len(t) != 1]:
        raise ValueError(f"these words are not single tokens: {bad}")
    return torch.stack([t[0] for t in toks])


@sourced
def word_logit_diff(
    model: TLModel, positive: Sequence[str], negative: Sequence[str]
) -> Callable[[Tensor, Encoded], Tensor]:
    """Metric: mean logit of the positive words − mean logit of the negative words, at each
    prompt's last real token. Each word must be a single token (a leading space is usual)."""
    ids = [_word_ids(model, positive), _word_ids(model, negative)]

    def metric(logits: Tensor, enc: Encoded) -> Tensor:
        last = logits[torch.arange(len(enc)), token_index(enc, "last").to(logits.device)]
        return last[:, ids[0]].mean(-1) - last[:, ids[1]].mean(-1)

    return metric


def word_embedding_direction(
    model: TLModel, positive: Sequence[str], negative: Sequence[str]
) -> Float[Tensor, " d_model"]:
    """The control for :func:`word_logit_diff`: the mean input embedding (``W_E`` row) of the
    positive words minus that of the negative words. Added to the residual stream it pushes the
    metric's own tokens, with no concept behind them; a steering vector should beat it at the
    same norm."""
    w_e = model.W_E.detach()
    pos, neg = (w_e[_word_ids(model, w).to(w_e.device)].mean(0) for w in (positive, negative))
    return (pos - neg).float().cpu()


def random_direction(model: TLModel, seed: int = 0) -> Float[Tensor, " d_model"]:
    """A unit Gaussian direction in the residual stream (seeded): the control any steering vector
    should beat at the same norm.

    >>> from interp.random_models import random_model
    >>> m = random_model("bridge", n_layers=1, d_model=8, n_heads=2, d_mlp=16, d_vocab=20)
    >>> d = random_direction(m, seed=3)
    >>> tuple(d.shape), round(float(d.norm()), 6), torch.equal(d, random_direction(m, seed=3))
    ((8,), 1.0, True)
    """
    from interp.core.adapter import adapt

    d = torch.randn(adapt(model).spec.d_model, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


def wilson_interval(k: Tensor | float, n: int, level: float = 0.95) -> tuple[Tensor, Tensor]:
    """The Wilson score interval of a proportion ``k / n`` (Wilson 1927). Unlike a percentile
    bootstrap it is not [0, 0] when no prompt is counted, and it keeps close to its level at the
    few prompts a study has.

    >>> [round(float(x), 4) for x in wilson_interval(torch.tensor(0.0), 12)]
    [0.0, 0.2425]
    """
    from statistics import NormalDist

    if n < 1:
        raise ValueError(f"a proportion needs at least one prompt; got n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = torch.as_tensor(k, dtype=torch.float64) / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half).clamp(min=0), (centre + half).clamp(max=1)


class WrongDirection(NamedTuple):
    """The share of prompts whose change goes against the intended direction, per cell, with a
    Wilson score interval over prompts (NaN where no direction is intended: α = 0)."""

    rate: Tensor
    low: Tensor
    high: Tensor
    wrong: Tensor  # how many prompts
    n: int
    level: float

    def __str__(self) -> str:
        if self.rate.ndim:
            return f"WrongDirection(cells {tuple(self.rate.shape)}, n={self.n})"
        return (
            f"{int(self.wrong)}/{self.n} = {float(self.rate):.2f} "
            f"[{float(self.low):.2f}, {float(self.high):.2f}]"
        )


def _wrong(changes: Tensor, sign: Tensor | float, level: float) -> WrongDirection:
    """Prompts (first axis) whose change has the opposite sign to ``sign`` (0: none intended)."""
    sign = torch.as_tensor(sign, dtype=torch.float64)
    against = ((changes.double() * sign) < 0).sum(0).double()
    n = int(changes.shape[0])
    low, high = wilson_interval(against, n, level)
    none = sign.expand_as(against) == 0
    nan = torch.full_like(against, math.nan)
    pick = lambda t: torch.where(none, nan, t)  # noqa: E731
    return WrongDirection(pick(against / n), pick(low), pick(high), against, n, level)


def _kl(base: Tensor, steered: Tensor, enc: Encoded) -> Tensor:
    lp, lq = base.float().log_softmax(-1), steered.float().log_softmax(-1)
    per_pos = (lp.exp() * (lp - lq)).sum(-1)  # [batch, pos]
    m = enc.attention_mask.to(per_pos)
    return (per_pos * m).sum(1) / m.sum(1)


def _evaluate(metric: Metric, logits: Tensor, base: Tensor, enc: Encoded) -> Tensor:
    if metric == "kl":
        return _kl(base, logits, enc)
    if metric == "loss":
        return loss_metric(logits, enc.tokens, attention_mask=enc.attention_mask)
    if callable(metric):
        return evaluate(metric, logits, enc, len(enc), scalar_ok=False, what="prompt")
    raise ValueError(f"unknown metric {metric!r}: expected 'loss', 'kl' or a function")


Interval = tuple[float, float, float]  # estimate, low, high


class Best(NamedTuple):
    """The chosen cell: every measure, and every baseline beside it, on the same reporting prompts.

    ``baselines``: each control direction at this cell (same layer, α and norm) and ``"prompt"``
    (each prefix by its name, no vector), measure by measure; ``versus``: the intended effect of
    the steering vector minus each baseline's, paired prompt by prompt, in the measure's units
    (steering did better where it lies in the goal's direction: above 0 for "increase");
    ``wrong``: for ``"steering"`` and each baseline, the share of
    prompts whose intended measure moved against the goal, with a Wilson interval.
    """

    layer: int
    alpha: float
    effect: Interval
    side_effects: dict[str, Interval]
    how: str = ""  # how the cell was chosen and what its intervals mean
    baselines: dict[str, dict[str, Interval]] = {}  # never mutated
    versus: dict[str, Interval] = {}
    wrong: dict[str, WrongDirection] = {}


@dataclass
class SteeringSweep(Result):
    """Per-prompt values ``[prompt, layer, alpha]`` for every measure, with CIs per cell.

    A :class:`~interp.core.result.Result` on the axes ``measure``, ``layer``, ``alpha`` whose
    measures may have different prompts: ``ci(name)`` is one measure's interval per cell (the
    intended measure's without a name); ``sel(measure=name, ...)`` gives that measure as a plain
    :class:`~interp.core.result.Values`, and lists of measures, layers or alphas give a smaller
    sweep; ``plot()`` is the registered view.
    """

    kind: ClassVar[str] = "steering_sweep"

    layers: list[int]
    alphas: list[float]
    values: dict[str, Float[Tensor, "n layer alpha"]]  # type: ignore[assignment]  # by measure
    baseline: dict[str, Float[Tensor, " n"]]  # the unsteered metric per prompt
    metrics: dict[str, str]  # measure -> "loss" | "kl" | "custom"
    intended: str
    goal: Literal["increase", "decrease"]
    config: dict[str, Any] = field(default_factory=dict)
    level: float = 0.95
    n_resamples: int = 1000
    seed: int = 0
    # control -> measure -> [n_prompts, layer, alpha]: other directions at the vector's norm
    controls: dict[str, dict[str, Float[Tensor, "n layer alpha"]]] = field(default_factory=dict)
    # prefix -> measure -> [n_prompts]: the prompting baselines (no vector)
    prompted: dict[str, dict[str, Float[Tensor, " n"]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cells = (len(self.layers), len(self.alphas))
        for name, v in self.values.items():
            if v.ndim != 3 or tuple(v.shape[1:]) != cells:
                raise ValueError(
                    f"measure {name!r} has values of shape {tuple(v.shape)}; expected "
                    f"[n_prompts, {cells[0]} layers, {cells[1]} alphas]"
                )
        if set(self.baseline) != set(self.values) or set(self.metrics) != set(self.values):
            raise ValueError(
                f"values, baseline and metrics must name the same measures; got "
                f"{list(self.values)}, {list(self.baseline)}, {list(self.metrics)}"
            )
        if self.intended not in self.values:
            raise ValueError(
                f"intended={self.intended!r} is not a measure; measures: {', '.join(self.values)}"
            )
        for name, by in self.controls.items():
            if name == STEERING or name in self.prompted:
                raise ValueError(f"a control cannot be named {name!r}: that name is taken")
            if set(by) != set(self.values) or any(
                by[m].shape != v.shape for m, v in self.values.items()
            ):
                raise ValueError(
                    f"control {name!r} needs values of the steering vector's shapes for every "
                    f"measure; got { ({m: tuple(t.shape) for m, t in by.items()}) }"
                )
        for name, by in self.prompted.items():
            if set(by) != set(self.values) or any(
                by[m].shape != v.shape[:1] for m, v in self.values.items()
            ):
                raise ValueError(
                    f"prompting baseline {name!r} needs one value per prompt of every measure; "
                    f"got { ({m: tuple(t.shape) for m, t in by.items()}) }"
                )

    # -- the Result layout -------------------------------------------------------------------
    @property
    def axes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("measure", "layer", "alpha")

    @property
    def labels(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {
            "measure": list(self.values),
            "layer": [f"L{la}" for la in self.layers],
            "alpha": [f"{a:g}" for a in self.alphas],
        }

    @property
    def meta(self) -> dict[str, Any]:  # type: ignore[override]
        return {"intended": self.intended, "goal": self.goal, "config": self.config}

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.values), len(self.layers), len(self.alphas))

    @property
    def n_prompts(self) -> dict[str, int]:
        """The number of prompts of each measure."""
        return {k: int(v.shape[0]) for k, v in self.values.items()}

    @property
    def n_samples(self) -> int:
        """The number of prompts, when every measure has the same number (see ``n_prompts``)."""
        sizes = set(self.n_prompts.values())
        if len(sizes) != 1:
            raise ValueError(
                f"the measures have different numbers of prompts ({self.n_prompts}); read "
                "n_prompts, or select one measure"
            )
        return sizes.pop()

    @property
    def mean(self) -> Tensor:
        """``[measure, layer, alpha]``: each measure's mean over its own prompts."""
        return torch.stack([v.mean(0) for v in self.values.values()])

    def measure(self, name: str) -> Values:
        """One measure's per-prompt values ``[n_prompts, layer, alpha]`` as a plain Result."""
        if name not in self.values:
            raise KeyError(f"no measure {name!r}; measures: {', '.join(self.values)}")
        labels = self.labels
        meta = {"metric": self.metrics[name], "fixed": {"measure": name}}
        return Values(
            self.values[name], ("layer", "alpha"), {a: labels[a] for a in ("layer", "alpha")}, meta
        )

    def ci(  # type: ignore[override]
        self,
        name: str | None = None,
        level: float | None = None,
        *,
        n_resamples: int | None = None,
        seed: int | None = None,
        direction: str = STEERING,
    ) -> CI:
        """Bootstrap CI of the mean over prompts, per [layer, alpha] cell, of the measure
        ``name`` (default: the intended one) under the steering vector, or under a control
        (``direction=``); the level, resamples and seed default to the sweep's own."""
        name = self.intended if name is None else name
        return bootstrap_ci(
            self.direction_values(direction, name),
            level=self.level if level is None else level,
            n_resamples=self.n_resamples if n_resamples is None else n_resamples,
            seed=self.seed if seed is None else seed,
        )

    def direction_values(self, direction: str, name: str) -> Float[Tensor, "n layer alpha"]:
        """Per-prompt values of measure ``name`` under ``"steering"`` or a control direction."""
        if name not in self.values:
            raise KeyError(f"no measure {name!r}; measures: {', '.join(self.values)}")
        if direction == STEERING:
            return self.values[name]
        if direction not in self.controls:
            raise KeyError(
                f"no direction {direction!r}; this sweep has: "
                + ", ".join([STEERING, *self.controls])
            )
        return self.controls[direction][name]

    def wrong_direction(
        self, direction: str = STEERING, *, level: float | None = None
    ) -> WrongDirection:
        """Per [layer, alpha] cell: the share of prompts whose intended measure moves against
        the direction the cell aims at (the goal's at α > 0, the other way at α < 0; NaN at
        α = 0), with a Wilson score interval over prompts. ``direction``: ``"steering"``, a
        control, or ``"prompt"`` (the prompting baseline, aimed at the goal; shape ``()``).
        A prompt whose change is exactly 0 is not counted as wrong."""
        goal = 1.0 if self.goal == "increase" else -1.0
        level = self.level if level is None else level
        if direction in self.prompted:
            return _wrong(self.prompted[direction][self.intended], goal, level)
        if direction == PROMPT:
            raise ValueError("this sweep has no prompting baseline: run sweep(..., prefix=...)")
        if direction != STEERING and direction not in self.controls:
            known = ", ".join([STEERING, *self.controls, *self.prompted])
            raise KeyError(f"no direction {direction!r}; this sweep has: {known}")
        sign = goal * torch.tensor(self.alphas, dtype=torch.float64).sign()
        return _wrong(self.direction_values(direction, self.intended), sign, level)

    def sel(self, **by: Any) -> Any:
        """One measure (``measure=name``, with any ``layer=`` / ``alpha=``): a plain
        :class:`~interp.core.result.Values`. Lists only: a smaller sweep (keeping the intended
        measure). A single layer or alpha across several measures, whose prompts differ, has no
        one values tensor: select a measure too, or pass a list."""
        for a in by:
            if a not in self.axes:
                raise ValueError(
                    f"no axis {a!r} in this result (its axes: {', '.join(self.axes)})"
                    + did_you_mean(a, self.axes)
                )
        rest = {a: k for a, k in by.items() if a != "measure"}
        if "measure" in by and not isinstance(by["measure"], (list, tuple)):
            i = self._index("measure", by["measure"])
            assert isinstance(i, int)
            one = self.measure(list(self.values)[i])
            return one.sel(**rest) if rest else one
        if single := [a for a, k in rest.items() if not isinstance(k, (list, tuple))]:
            raise ValueError(
                f"a single {' and '.join(single)} across several measures (with prompts of their "
                "own) has no one values tensor: select one measure too, or pass a list"
            )
        pick = {
            a: self._index(a, by[a]) if a in by else list(range(n))
            for a, n in zip(self.axes, self.shape, strict=True)
        }
        names = [list(self.values)[i] for i in pick["measure"]]  # type: ignore[union-attr]
        if self.intended not in names:
            raise ValueError(
                f"a selection of the sweep keeps its intended measure {self.intended!r}"
            )
        if empty := [a for a, i in pick.items() if not i]:
            raise ValueError(f"select at least one entry of {', '.join(empty)}")
        li = torch.as_tensor(pick["layer"], dtype=torch.long)
        ai = torch.as_tensor(pick["alpha"], dtype=torch.long)
        return replace(
            self,
            layers=[self.layers[i] for i in li.tolist()],
            alphas=[self.alphas[i] for i in ai.tolist()],
            values={n: self.values[n][:, li][:, :, ai] for n in names},
            baseline={n: self.baseline[n] for n in names},
            metrics={n: self.metrics[n] for n in names},
            controls={
                c: {n: by[n][:, li][:, :, ai] for n in names} for c, by in self.controls.items()
            },
            prompted={p: {n: by[n] for n in names} for p, by in self.prompted.items()},
        )

    def effects(self, name: str | None = None) -> Tensor:  # type: ignore[override]
        """Per-prompt effects of one measure (default the intended one): its values, which are
        already changes from the unsteered run (KL is 0 there)."""
        name = self.intended if name is None else name
        if name not in self.values:
            raise KeyError(f"no measure {name!r}; measures: {', '.join(self.values)}")
        return self.values[name]

    def family(  # type: ignore[override]
        self,
        name: str | None = None,
        alpha: float = 0.05,
        *,
        method: str = "maxt",
        n_flips: int = 10000,
        seed: int = 0,
    ) -> FamilyTest:
        """Which [layer, alpha] cells of one measure (default the intended one) differ from no
        change, the error controlled over all cells (:mod:`interp.multiple_testing`)."""
        return family_test(
            self.effects(name), alpha=alpha, method=method, n_flips=n_flips, seed=seed
        )

    def best(
        self,
        *,
        max_kl: float | None = None,
        kl: str | None = None,
        split: float | None = 0.5,
        seed: int | None = None,
    ) -> Best:
        """The cell with the strongest intended effect (in the goal's direction), optionally only
        among cells whose mean KL side effect is at most ``max_kl``.

        ``split`` (default 0.5): each measure's prompts are split at random (seeded); the cell is
        chosen on one part and every measure is reported on the other, so the reported intervals
        are plain intervals of one cell fixed in advance. ``split=None``: chosen and reported on
        all prompts, the intended effect with its interval simultaneous over every cell (max-t
        sign flips), the side effects with their own intervals. ``best.how`` says which.
        """
        seed = self.seed if seed is None else seed
        halves = {n: split_samples(len(v), split, seed) for n, v in self.values.items()}
        sign = 1 if self.goal == "increase" else -1
        score = self.values[self.intended][halves[self.intended][0]].mean(0) * sign
        if max_kl is not None:
            kl = kl or next((n for n, m in self.metrics.items() if m == "kl"), None)
            if kl is None:
                raise ValueError("max_kl given but the sweep has no 'kl' measure")
            mean_kl = self.values[kl][halves[kl][0]].mean(0)
            score = torch.where(mean_kl <= max_kl, score, -torch.inf)
        if not torch.isfinite(score).any():
            raise ValueError(f"no cell has KL <= {max_kl}")
        li, ai = divmod(int(score.argmax()), len(self.alphas))

        def interval(shown: Tensor) -> Interval:
            # The sign-flip t interval: it keeps its level at the few prompts a split leaves,
            # where the percentile bootstrap is too narrow (docs/methods.md).
            c = family_test(shown[:, None], alpha=1 - self.level, seed=seed)
            assert c.low is not None and c.high is not None
            return float(c.estimate[0]), float(c.low[0]), float(c.high[0])

        def shown(name: str, direction: str = STEERING) -> Tensor:
            rows = halves[name][1]
            if direction in self.prompted:
                return self.prompted[direction][name][rows]
            return self.direction_values(direction, name)[rows][:, li, ai]

        effect = interval(shown(self.intended))
        level = f"{self.level:.0%}"
        n = len(self.values[self.intended])
        if split is None:
            fam = self.family(alpha=1 - self.level, seed=seed)
            assert fam.low is not None and fam.high is not None
            effect = (effect[0], float(fam.low[li, ai]), float(fam.high[li, ai]))
            how = (
                f"chosen and reported on all {n} prompts; the {self.intended} interval is "
                f"{level} simultaneous over all {fam.n_cells} cells (max-t sign flips), the side "
                "effects' and baselines' are their own"
            )
        else:
            n_sel = len(halves[self.intended][0])
            how = (
                f"chosen on {n_sel} of {n} prompts (each measure split at {split:g}, seed "
                f"{seed}), reported with {level} sign-flip t intervals on the other {n - n_sel}"
            )
        sides = {m: interval(shown(m)) for m in self.values if m != self.intended}
        names = [*self.controls, *self.prompted]
        baselines = {b: {m: interval(shown(m, b)) for m in self.values} for b in names}
        own = shown(self.intended)
        versus = {b: interval(own - shown(self.intended, b)) for b in names}
        wrong = {b: _wrong(shown(self.intended, b), sign, self.level) for b in [STEERING, *names]}
        return Best(self.layers[li], self.alphas[ai], effect, sides, how, baselines, versus, wrong)

    def summary(self, *, max_kl: float | None = None) -> str:
        b = self.best(max_kl=max_kl)
        fmt = lambda t: f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"  # noqa: E731
        lines = [
            f"best: layer {b.layer}, alpha {b.alpha:g}"
            + (f" (among cells with KL <= {max_kl})" if max_kl is not None else ""),
            f"  {self.intended} ({self.goal}): {fmt(b.effect)}",
            f"  ({b.how})",
        ]
        lines += [f"  {k}: {fmt(v)}" for k, v in b.side_effects.items()]
        for name, by in b.baselines.items():
            what = (
                f"prompt {name!r} ({self.config.get('prefixes', {}).get(name)!r}), no vector"
                if name in self.prompted
                else f"control {name!r} at the same cell and norm"
            )
            lines.append(f"  {what}: " + "; ".join(f"{m} {fmt(v)}" for m, v in by.items()))
        if b.versus:
            lines.append(
                f"  steering minus baseline, {self.intended} (paired per prompt): "
                + "; ".join(f"{k} {fmt(v)}" for k, v in b.versus.items())
            )
        lines.append(
            f"  wrong direction (against {self.goal!r}; Wilson {self.level:.0%}): "
            + "; ".join(f"{k} {v}" for k, v in b.wrong.items())
        )
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``values.safetensors`` + ``sweep.json`` + ``run.json`` (manifest), each written atomically."""
        from safetensors.torch import save as st_save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"values.{k}": v.contiguous() for k, v in self.values.items()}
        tensors |= {f"baseline.{k}": v.contiguous() for k, v in self.baseline.items()}
        tensors |= {
            f"control.{c}.{k}": v.contiguous()
            for c, by in self.controls.items()
            for k, v in by.items()
        }
        tensors |= {
            f"prompted.{p}.{k}": v.contiguous()
            for p, by in self.prompted.items()
            for k, v in by.items()
        }
        atomic_write_bytes(d / "values.safetensors", st_save(tensors))
        meta = {
            k: getattr(self, k)
            for k in ("layers", "alphas", "metrics", "intended", "goal", "level", "n_resamples")
        }
        info = {
            "format": self.format(), **meta, "seed": self.seed, "config": self.config,
            "controls": list(self.controls), "prefixes": list(self.prompted),
        }  # fmt: skip
        atomic_write_json(d / "sweep.json", info)
        write_run_manifest(
            d,
            kind="steering_sweep",
            config={**meta, **{k: v for k, v in self.config.items() if k != "replay"}},
            seed=self.seed,
            data=self.config.get("data", {}),
            extra={"replay": self.config.get("replay")},
        )
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SteeringSweep:
        from safetensors.torch import load_file

        d = Path(directory)
        meta = read_json(d / "sweep.json")
        if meta.get("format", cls.format()) != cls.format():  # saved before 'format': the same
            raise ValueError(
                f"{d} does not hold a steering sweep (format {meta.get('format')!r}, expected "
                f"{cls.format()!r})"
            )
        t = load_file(str(d / "values.safetensors"))
        names = list(meta["metrics"])
        return cls(
            layers=meta["layers"],
            alphas=meta["alphas"],
            values={n: t[f"values.{n}"] for n in names},
            baseline={n: t[f"baseline.{n}"] for n in names},
            metrics=meta["metrics"],
            intended=meta["intended"],
            goal=meta["goal"],
            config=meta["config"],
            level=meta["level"],
            n_resamples=meta["n_resamples"],
            seed=meta["seed"],
            controls={
                c: {n: t[f"control.{c}.{n}"] for n in names} for c in meta.get("controls", [])
            },
            prompted={
                p: {n: t[f"prompted.{p}.{n}"] for n in names} for p in meta.get("prefixes", [])
            },
        )


def _check(
    model: TLModel, vectors: Any, layers: list[int], measures: Sequence[Measure], intended: str
) -> None:
    if not layers:
        raise ValueError("sweep needs at least one layer")
    for layer in layers:
        check_layer(model, layer)
        vec = vectors[layer] if isinstance(vectors, Mapping) else vectors
        if not isinstance(vec, SteeringVector):
            raise TypeError(
                f"expected a SteeringVector for layer {layer}; got {type(vec).__name__}"
            )
        check_width(model, vec.vector, vec.at(layer).hook_name)
    names = [m.name for m in measures]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"measures need distinct names; got {names}")
    if intended not in names:
        raise ValueError(f"intended={intended!r} is not a measure; measures: {', '.join(names)}")


@recorded
def sweep(
    model: TLModel,
    vectors: SteeringVector | Mapping[int, SteeringVector],
    *,
    layers: Sequence[int],
    alphas: Sequence[float],
    measures: Sequence[Measure],
    intended: str,
    goal: Literal["increase", "decrease"] = "increase",
    positions: Positions = "all",
    controls: Mapping[str, Tensor | Mapping[int, Tensor]] | None = None,
    prefix: str | Sequence[int] | Mapping[str, str | Sequence[int]] | None = None,
    max_tokens: int = 2048,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> SteeringSweep:
    """Add ``alpha * vector`` at each layer (the layer's own vector when a mapping is given).

    ``controls``: name -> a direction (or one per layer) run through the same cells, rescaled at
    every layer to the vector's norm there (e.g. ``{"random": random_direction(model)}``).
    ``prefix``: the prompting baseline, text or token ids put before every prompt of every
    measure, with no vector (named ``"prompt"``), or several by name. ``max_tokens``: prompts × positions per forward (every position's
    full-vocabulary logits are kept for the KL, hence a smaller default than patching's).
    ``progress``: a tqdm bar over prompt batches of every measure."""
    check_int(max_tokens, "max_tokens", minimum=1)
    layers, alphas = list(layers), [float(a) for a in alphas]
    if isinstance(vectors, Mapping) and (missing := [la for la in layers if la not in vectors]):
        raise ValueError(f"no vector for layers {missing}; vectors exist for {sorted(vectors)}")
    _check(model, vectors, layers, measures, intended)
    if not alphas:
        raise ValueError("sweep needs at least one strength (alpha)")
    # Applied at the swept layer even when a mapping's vector records another one: each steered
    # run starts at `layer`, so an edit at an earlier layer would silently never fire.
    vec_at = lambda la: (vectors[la] if isinstance(vectors, Mapping) else vectors).at(la)  # noqa: E731
    directions = {STEERING: vec_at, **_controls(model, controls or {}, layers, vec_at)}
    prefixes = _prefixes(model, prefix, directions)
    encs = {
        m.name: encode(model, m.prompts, what=f"prompts of measure {m.name!r}") for m in measures
    }
    if not isinstance(check_positions_spec(positions), (str, Real, Span)):
        for enc in encs.values():  # columns of prompts padded here would move with the padding
            require_unpadded(enc, positions)
    from tqdm.auto import tqdm

    chunks = {
        m.name: list(encs[m.name].chunks(rows_for(max_tokens, encs[m.name].tokens.shape[1])))
        for m in measures
    }
    bar = tqdm(
        total=sum(map(len, chunks.values())), desc="steering sweep", unit="batch",
        disable=not progress,
    )  # fmt: skip
    values: dict[str, dict[str, Tensor]] = {d: {} for d in directions}
    baseline: dict[str, Tensor] = {}
    prompted: dict[str, dict[str, Tensor]] = {p: {} for p in prefixes}
    for m in measures:
        parts = []
        for chunk in chunks[m.name]:
            bar.set_postfix_str(m.name)
            parts.append(
                _sweep_chunk(
                    model, m.metric, chunk, layers, alphas, directions, positions, prefixes
                )
            )
            bar.update(1)
        for d in directions:
            values[d][m.name] = torch.cat([p[0][d] for p in parts])
        baseline[m.name] = torch.cat([p[1] for p in parts])
        for name in prefixes:
            prompted[name][m.name] = torch.cat([p[2][name] for p in parts])
    bar.close()
    first = vec_at(layers[0])
    norms = lambda at: {str(la): float(at(la).vector.norm()) for la in layers}  # noqa: E731
    config = {
        "method": first.method,
        "site": first.site,
        "positions": positions_to_json(positions),
        "vector_metadata": first.metadata,
        "vector_norms": norms(vec_at),
        "control_norms": {d: norms(at) for d, at in directions.items() if d != STEERING},
        "prefixes": {
            name: given if isinstance(given, str) else list(given)
            for name, given in _named(prefix).items()
        },
        "data": {
            m.name: {
                "sha256": hash_prompts(encs[m.name].tokens.tolist()),
                "prompts": len(encs[m.name]),
            }
            for m in measures
        },
    }
    metrics = {m.name: m.metric if isinstance(m.metric, str) else "custom" for m in measures}
    steered = values.pop(STEERING)
    return SteeringSweep(
        layers, alphas, steered, baseline, metrics, intended, goal, json.loads(json.dumps(config, default=str)),
        n_resamples=n_resamples, seed=seed, controls=values, prompted=prompted,
    )  # fmt: skip


def _controls(
    model: TLModel,
    controls: Mapping[str, Tensor | Mapping[int, Tensor]],
    layers: list[int],
    vec_at: Callable[[int], SteeringVector],
) -> dict[str, Callable[[int], SteeringVector]]:
    """Each control as the steering vector's layer function: its direction at the vector's norm."""
    out: dict[str, Callable[[int], SteeringVector]] = {}
    for name, given in controls.items():
        if name in (STEERING, PROMPT):
            raise ValueError(f"a control cannot be named {name!r}: that name is taken")
        by_layer = {}
        for la in layers:
            if isinstance(given, Mapping) and la not in given:
                raise ValueError(
                    f"control {name!r} has no direction for layer {la}; it has {sorted(given)}"
                )
            raw = torch.as_tensor(given[la] if isinstance(given, Mapping) else given).float()
            check_width(model, raw, f"control {name!r} at layer {la}")
            if raw.norm() == 0:
                raise ValueError(f"control {name!r} is zero at layer {la}: it has no direction")
            by_layer[la] = raw / raw.norm()

        def at(la: int, unit: dict[int, Tensor] = by_layer, name: str = name) -> SteeringVector:
            vec = vec_at(la)
            scaled = unit[la].to(vec.vector) * vec.vector.norm()
            return replace(vec, vector=scaled, method=f"control:{name}")

        out[name] = at
    return out


def _named(
    prefix: str | Sequence[int] | Mapping[str, str | Sequence[int]] | None,
) -> Mapping[str, str | Sequence[int]]:
    if prefix is None:
        return {}
    return prefix if isinstance(prefix, Mapping) else {PROMPT: prefix}


def _prefixes(
    model: TLModel,
    prefix: str | Sequence[int] | Mapping[str, str | Sequence[int]] | None,
    directions: Mapping[str, Any],
) -> dict[str, list[int]]:
    """Each prompting baseline's token ids, by name."""
    out = {}
    for name, given in _named(prefix).items():
        if name in directions:
            raise ValueError(f"a prefix cannot be named {name!r}: that name is taken")
        out[name] = _ids(model, given, None)
        if not out[name]:
            raise ValueError(f"the prompting prefix {name!r} has no tokens")
    return out


@torch.no_grad()
def _sweep_chunk(
    model: TLModel,
    metric: Metric,
    chunk: Encoded,
    layers: list[int],
    alphas: list[float],
    directions: dict[str, Callable[[int], SteeringVector]],
    positions: Positions,
    prefixes: dict[str, list[int]],
) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """One prompt batch: [batch, layer, alpha] values per direction, the [batch] unsteered
    metric, and the [batch] prompting baseline of each prefix."""
    kw = chunk.forward_kwargs()
    resid = [f"blocks.{la}.hook_resid_pre" for la in layers]
    saved: dict[str, Tensor] = {}

    def save(act: Tensor, hook: Any) -> None:
        saved[hook.name] = act

    with hooks(model, fwd=[(name, save) for name in resid]):
        base = model(chunk.tokens, **kw)
    b = _evaluate(metric, base, base, chunk)
    out = {d: torch.empty(len(chunk), len(layers), len(alphas)) for d in directions}
    for d, vec_at in directions.items():
        for li, layer in enumerate(layers):
            for ai, alpha in enumerate(alphas):
                # Layers before `layer` cannot change: start from the saved residual stream.
                with steer(model, add(vec_at(layer), alpha, positions=positions),
                           attention_mask=chunk.attention_mask):  # fmt: skip
                    logits = model(saved[resid[li]], start_at_layer=layer, **kw)
                v = _evaluate(metric, logits, base, chunk)
                out[d][:, li, ai] = (v if metric == "kl" else v - b).cpu()
    prompted = {p: _prompted(model, metric, chunk, ids, base, b) for p, ids in prefixes.items()}
    return out, b.cpu(), prompted


def _prompted(
    model: TLModel, metric: Metric, chunk: Encoded, prefix: list[int], base: Tensor, b: Tensor
) -> Tensor:
    """The metric of each prompt run after ``prefix`` (no vector), read at the prompt's own
    tokens: a change from the plain prompt (KL: from its distributions), as a steered cell is.

    Where the model prepends BOS, a prompt that starts with it after a prefix that does too loses
    it; the prefix's last token stands in for it (it predicts the prompt's first real token in
    both runs)."""
    tok = getattr(model, "tokenizer", None)
    prepends = bool(getattr(model.cfg, "default_prepend_bos", False))
    bos = getattr(tok, "bos_token_id", None) if tok is not None and prepends else None
    rows, cols = [], []
    for ids_row, mask in zip(chunk.tokens, chunk.attention_mask, strict=True):
        ids = ids_row[mask.bool()].tolist()
        drop = int(bos is not None and prefix[:1] == [bos] and ids[:1] == [bos])
        rows.append(prefix + ids[drop:])
        start = len(prefix) - drop  # where the prompt's first token (or its stand-in) is
        cols.append(torch.arange(len(ids_row)) - int(mask.int().argmax()) + start)
    pre = encode(model, rows)
    logits = model(pre.tokens, **pre.forward_kwargs())
    idx = torch.stack(cols).clamp(0, pre.tokens.shape[1] - 1).to(logits.device)
    aligned = logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))
    v = _evaluate(metric, aligned, base, chunk)
    return (v if metric == "kl" else v - b).cpu()
