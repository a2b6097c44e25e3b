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
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.hooks import TLModel, hooks
from interp.manifest import write_run_manifest
from interp.metrics import loss as loss_metric
from interp.stats import CI, bootstrap_ci
from interp.steering._batch import Encoded, Prompts, encode, hash_prompts, token_index
from interp.steering.apply import Positions, add, steer
from interp.steering.vector import SteeringVector, check_layer, check_width

__all__ = ["Best", "Measure", "SteeringSweep", "sweep", "word_logit_diff"]

Metric = Literal["loss", "kl"] | Callable[[Tensor, Encoded], Tensor]


@dataclass(frozen=True)
class Measure:
    """A named set of prompts and the per-prompt metric to evaluate on them."""

    name: str
    prompts: Prompts | Encoded
    metric: Metric


def word_logit_diff(
    model: TLModel, positive: Sequence[str], negative: Sequence[str]
) -> Callable[[Tensor, Encoded], Tensor]:
    """Metric: mean logit of the positive words − mean logit of the negative words, at each
    prompt's last real token. Each word must be a single token (a leading space is usual)."""
    ids = []
    for words in (positive, negative):
        toks = [model.to_tokens(w, prepend_bos=False)[0] for w in words]
        if bad := [w for w, t in zip(words, toks, strict=True) if len(t) != 1]:
            raise ValueError(f"these words are not single tokens: {bad}")
        ids.append(torch.stack([t[0] for t in toks]))

    def metric(logits: Tensor, enc: Encoded) -> Tensor:
        last = logits[torch.arange(len(enc)), token_index(enc, "last").to(logits.device)]
        return last[:, ids[0]].mean(-1) - last[:, ids[1]].mean(-1)

    return metric


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
        return metric(logits, enc)
    raise ValueError(f"unknown metric {metric!r}: expected 'loss', 'kl' or a function")


class Best(NamedTuple):
    layer: int
    alpha: float
    effect: tuple[float, float, float]  # estimate, low, high
    side_effects: dict[str, tuple[float, float, float]]


@dataclass
class SteeringSweep:
    """Per-prompt values ``[prompt, layer, alpha]`` for every measure, with CIs per cell."""

    layers: list[int]
    alphas: list[float]
    values: dict[str, Float[Tensor, "n layer alpha"]]  # change from unsteered; "kl" as is
    baseline: dict[str, Float[Tensor, " n"]]  # the unsteered metric per prompt
    metrics: dict[str, str]  # measure -> "loss" | "kl" | "custom"
    intended: str
    goal: Literal["increase", "decrease"]
    config: dict[str, Any] = field(default_factory=dict)
    level: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def ci(self, name: str) -> CI:
        """Bootstrap CI of the mean over prompts, per [layer, alpha] cell."""
        if name not in self.values:
            raise KeyError(f"no measure {name!r}; measures: {', '.join(self.values)}")
        return bootstrap_ci(
            self.values[name], level=self.level, n_resamples=self.n_resamples, seed=self.seed
        )

    def best(self, *, max_kl: float | None = None, kl: str | None = None) -> Best:
        """The cell with the strongest intended effect (in the goal's direction), optionally only
        among cells whose mean KL side effect is at most ``max_kl``."""
        eff = self.ci(self.intended)
        score = eff.estimate * (1 if self.goal == "increase" else -1)
        if max_kl is not None:
            kl = kl or next((n for n, m in self.metrics.items() if m == "kl"), None)
            if kl is None:
                raise ValueError("max_kl given but the sweep has no 'kl' measure")
            score = torch.where(self.ci(kl).estimate <= max_kl, score, -torch.inf)
        if not torch.isfinite(score).any():
            raise ValueError(f"no cell has KL <= {max_kl}")
        li, ai = divmod(int(score.argmax()), len(self.alphas))
        cell = lambda c: (float(c.estimate[li, ai]), float(c.low[li, ai]), float(c.high[li, ai]))  # noqa: E731
        sides = {n: cell(self.ci(n)) for n in self.values if n != self.intended}
        return Best(self.layers[li], self.alphas[ai], cell(eff), sides)

    def summary(self, *, max_kl: float | None = None) -> str:
        b = self.best(max_kl=max_kl)
        fmt = lambda t: f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"  # noqa: E731
        n = len(self.baseline[self.intended])  # the intended measure's prompts
        lines = [
            f"best: layer {b.layer}, alpha {b.alpha:g}"
            + (f" (among cells with KL <= {max_kl})" if max_kl is not None else ""),
            f"  {self.intended} ({self.goal}): {fmt(b.effect)} (n={n}, {self.level:.0%} CI)",
        ]
        lines += [f"  {k}: {fmt(v)}" for k, v in b.side_effects.items()]
        return "\n".join(lines)

    def plot(self) -> Any:
        """A Plotly figure: one panel per measure, mean vs α per layer, with CI error bars."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from interp.viz.text import plotly_text

        names = list(self.values)
        titles = [
            plotly_text(f"{n} ({'KL' if self.metrics[n] == 'kl' else 'Δ vs unsteered'})")
            for n in names
        ]
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles)
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
        for col, name in enumerate(names, start=1):
            c = self.ci(name)
            for li, layer in enumerate(self.layers):
                est = c.estimate[li].tolist()
                fig.add_trace(
                    go.Scatter(
                        x=self.alphas,
                        y=est,
                        mode="lines+markers",
                        name=plotly_text(f"layer {layer}"),
                        legendgroup=str(layer),
                        showlegend=col == 1,
                        line={"color": palette[li % len(palette)]},
                        error_y={
                            "type": "data",
                            "symmetric": False,
                            "array": (c.high[li] - c.estimate[li]).tolist(),
                            "arrayminus": (c.estimate[li] - c.low[li]).tolist(),
                        },
                    ),
                    row=1,
                    col=col,
                )
            fig.update_xaxes(title_text="α", row=1, col=col)
        fig.update_layout(
            title=plotly_text(
                f"Steering sweep — intended: {self.intended} ({self.goal}); "
                f"{self.level:.0%} bootstrap CIs over prompts"
            ),
            height=460,
            legend={"orientation": "h", "y": -0.25, "x": 0},  # below the panels: never cut off
        )
        return fig

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``values.safetensors`` + ``sweep.json`` + ``run.json`` (manifest), each written atomically."""
        from safetensors.torch import save as st_save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"values.{k}": v.contiguous() for k, v in self.values.items()}
        tensors |= {f"baseline.{k}": v.contiguous() for k, v in self.baseline.items()}
        atomic_write_bytes(d / "values.safetensors", st_save(tensors))
        meta = {
            k: getattr(self, k)
            for k in ("layers", "alphas", "metrics", "intended", "goal", "level", "n_resamples")
        }
        atomic_write_json(d / "sweep.json", {**meta, "seed": self.seed, "config": self.config})
        write_run_manifest(
            d,
            kind="steering_sweep",
            config={**meta, **self.config},
            seed=self.seed,
            data=self.config.get("data", {}),
        )
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SteeringSweep:
        from safetensors.torch import load_file

        d = Path(directory)
        meta = read_json(d / "sweep.json")
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
    batch_size: int = 16,
    n_resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> SteeringSweep:
    """Add ``alpha * vector`` at each layer (the layer's own vector when a mapping is given).
    ``progress``: a tqdm bar over prompt batches of every measure."""
    layers, alphas = list(layers), [float(a) for a in alphas]
    if isinstance(vectors, Mapping) and (missing := [la for la in layers if la not in vectors]):
        raise ValueError(f"no vector for layers {missing}; vectors exist for {sorted(vectors)}")
    _check(model, vectors, layers, measures, intended)
    if not alphas:
        raise ValueError("sweep needs at least one strength (alpha)")
    # Applied at the swept layer even when a mapping's vector records another one: each steered
    # run starts at `layer`, so an edit at an earlier layer would silently never fire.
    vec_at = lambda la: (vectors[la] if isinstance(vectors, Mapping) else vectors).at(la)  # noqa: E731
    encs = {
        m.name: encode(model, m.prompts, what=f"prompts of measure {m.name!r}") for m in measures
    }
    from tqdm.auto import tqdm

    chunks = {m.name: list(encs[m.name].chunks(batch_size)) for m in measures}
    bar = tqdm(
        total=sum(map(len, chunks.values())), desc="steering sweep", unit="batch",
        disable=not progress,
    )  # fmt: skip
    values, baseline = {}, {}
    for m in measures:
        parts = []
        for chunk in chunks[m.name]:
            bar.set_postfix_str(m.name)
            parts.append(_sweep_chunk(model, m.metric, chunk, layers, alphas, vec_at, positions))
            bar.update(1)
        values[m.name] = torch.cat([p[0] for p in parts])
        baseline[m.name] = torch.cat([p[1] for p in parts])
    bar.close()
    first = vec_at(layers[0])
    config = {
        "method": first.method,
        "site": first.site,
        "positions": positions if isinstance(positions, (str, int, slice)) else list(positions),
        "vector_metadata": first.metadata,
        "vector_norms": {str(la): float(vec_at(la).vector.norm()) for la in layers},
        "data": {
            m.name: {
                "sha256": hash_prompts(encs[m.name].tokens.tolist()),
                "prompts": len(encs[m.name]),
            }
            for m in measures
        },
    }
    metrics = {m.name: m.metric if isinstance(m.metric, str) else "custom" for m in measures}
    return SteeringSweep(
        layers, alphas, values, baseline, metrics, intended, goal, json.loads(json.dumps(config, default=str)),
        n_resamples=n_resamples, seed=seed,
    )  # fmt: skip


@torch.no_grad()
def _sweep_chunk(
    model: TLModel,
    metric: Metric,
    chunk: Encoded,
    layers: list[int],
    alphas: list[float],
    vec_at: Callable[[int], SteeringVector],
    positions: Positions,
) -> tuple[Tensor, Tensor]:
    """One prompt batch: [batch, layer, alpha] values and the [batch] unsteered metric."""
    kw = chunk.forward_kwargs()
    resid = [f"blocks.{la}.hook_resid_pre" for la in layers]
    saved: dict[str, Tensor] = {}

    def save(act: Tensor, hook: Any) -> None:
        saved[hook.name] = act

    with hooks(model, fwd=[(name, save) for name in resid]):
        base = model(chunk.tokens, **kw)
    b = _evaluate(metric, base, base, chunk)
    out = torch.empty(len(chunk), len(layers), len(alphas))
    for li, layer in enumerate(layers):
        for ai, alpha in enumerate(alphas):
            # Layers before `layer` cannot change: start from the saved residual stream.
            with steer(model, add(vec_at(layer), alpha, positions=positions),
                       attention_mask=chunk.attention_mask):  # fmt: skip
                logits = model(saved[resid[li]], start_at_layer=layer, **kw)
            v = _evaluate(metric, logits, base, chunk)
            out[:, li, ai] = (v if metric == "kl" else v - b).cpu()
    return out, b.cpu()
