"""Circuit studies run end to end: IOI on the offline SmolLM2, induction on the toy model.

``python -m interp.patching.study [--quick] [--out DIR]`` prints the summary and, with ``--out``,
saves every result and a circuit dashboard (``circuits.html``).
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp._io import atomic_write_json, read_json
from interp.hooks import TLModel
from interp.patching.attribution import attribution_patch, correlation, edge_attribution
from interp.patching.path import edge_patch, path_patch
from interp.patching.result import PatchResult
from interp.patching.sweep import patch_sweep
from interp.progress import Stages
from interp.rules import Rule
from interp.stats import bootstrap_ci

__all__ = ["StudyResult", "induction_study", "ioi_study", "repeat_logprob"]


def repeat_logprob(logits: torch.Tensor, *, tokens: torch.Tensor, half: int) -> torch.Tensor:
    """Mean log p of each second-half token of ``tokens`` (BOS + a half repeated), per prompt."""
    logp = logits[:, half:-1].log_softmax(-1)
    return logp.gather(2, tokens[:, half + 1 :, None])[..., 0].mean(1)


STUDY_FILE = "study.json"


@dataclass
class StudyResult:
    name: str
    results: dict[str, PatchResult]
    numbers: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join([f"== {self.name} ==", *self.lines])

    def save(self, directory: str | Path) -> Path:
        """Every result in its own folder, then ``study.json`` (written last: its presence means
        the study is complete and :meth:`load` can reuse it)."""
        d = Path(directory)
        for key, res in self.results.items():
            res.save(d / key)
        meta = {"name": self.name, "results": list(self.results), "numbers": self.numbers}
        atomic_write_json(d / STUDY_FILE, meta | {"lines": self.lines})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> StudyResult:
        d = Path(directory)
        if not (d / STUDY_FILE).is_file():
            raise FileNotFoundError(
                f"{d} holds no complete study ({STUDY_FILE} is missing); run the study and save it"
            )
        meta = read_json(d / STUDY_FILE)
        results = {k: PatchResult.load(d / k) for k in meta["results"]}
        return cls(meta["name"], results, meta["numbers"], meta["lines"])

    def figures(self) -> list[Any]:
        """Every result's plot, then the edge graphs; each title starts with the study's name."""
        from interp.viz.graph import plot_graph
        from interp.viz.text import plotly_text

        figs = [r.plot() for r in self.results.values()]
        figs += [plot_graph(r) for r in self.results.values() if r.axes == ("edge",)]
        for fig in figs:
            own = fig.layout.title.text or ""
            name = plotly_text(self.name)
            fig.update_layout(title_text=f"{name}: {own}" if own else name)
        return figs


def _ci_text(values: torch.Tensor) -> str:
    ci = bootstrap_ci(values)
    return f"{float(ci.estimate):.3f} (95% CI {float(ci.low):.3f} to {float(ci.high):.3f})"


def _top_text(res: PatchResult, k: int) -> list[str]:
    rows = res.normalized().top(k)
    out = [f"  ({rows.note})"]
    for row in rows:
        cell = " ".join(str(v) for v in row["cell"].values())
        out.append(
            f"  {cell:<24} {row['mean']:+.3f} ({row['low']:+.3f} to {row['high']:+.3f}, "
            f"adjusted p {row['p_adj']:.2g})"
        )
    return out


def ioi_study(
    model: TLModel,
    *,
    n_prompts: int = 16,
    quick: bool = True,
    seed: int = 0,
    progress: bool = True,
    rule: Rule | None = None,
) -> StudyResult:
    """IOI on ``model``: baselines, residual and head sweeps, attribution vs exact, top heads,
    and the verdicts of ``rule`` (default :data:`HEAD_RULE`) on every head at the final
    position (its hash goes into the study's numbers)."""
    from interp.ioi import ioi_prompts
    from interp.metrics import logit_diff

    batch = ioi_prompts(model, n_prompts, seed=seed)

    # A partial of a library function is data: the saved results can be replayed.
    metric: Any = functools.partial(logit_diff, correct=batch.io, incorrect=batch.s, pos=-1)
    metric.__name__ = "logit diff (IO − S)"  # what the plots' axes say

    lines: list[str] = []
    numbers: dict[str, Any] = {}
    results: dict[str, PatchResult] = {}
    n_layers = model.cfg.n_layers
    t0 = time.perf_counter()
    stage = Stages("IOI study", 4, progress)
    stage("residual sweep")
    resid = patch_sweep(
        model,
        batch.clean,
        batch.corrupt,
        metric,
        site="resid_pre",
        over=("layer", "pos"),
        logits_at=-1,
        layers=list(range(0, n_layers, 3)) if quick else None,
    )
    resid.labels["pos"] = list(batch.roles)
    results["resid_pre"] = resid
    numbers["clean_logit_diff"] = float(resid.clean.mean())
    numbers["corrupt_logit_diff"] = float(resid.corrupt.mean())  # type: ignore[union-attr]
    lines.append(f"prompts: {n_prompts} IOI (ABBA/BABA), corrupted by a third name at S2")
    lines.append(f"e.g. {batch.texts[0]!r} -> IO {model.to_string(batch.io[:1])!r}")
    lines.append(f"clean IO−S logit diff:     {_ci_text(resid.clean)}")
    lines.append(f"corrupted IO−S logit diff: {_ci_text(resid.corrupt)}")  # type: ignore[arg-type]
    norm = resid.normalized().mean
    # Where the information sits: per layer, the position whose restoration recovers most.
    best = [
        (resid.labels["layer"][i], batch.roles[int(norm[i].argmax())], float(norm[i].max()))
        for i in range(norm.shape[0])
    ]
    lines.append("residual stream (denoising resid_pre, normalised 0 = corrupted, 1 = clean):")
    lines += [f"  {layer:>4}: best position {role:<8} {v:.2f}" for layer, role, v in best]

    stage("head sweep")
    heads = patch_sweep(
        model,
        batch.clean,
        batch.corrupt,
        metric,
        site="z",
        over=("layer", "head", "pos"),
        positions=[-1],
        logits_at=-1,
    )
    heads = heads.squeeze("pos")
    results["heads_end"] = heads
    lines.append("heads at the final position (denoising z), largest normalised effects:")
    lines += _top_text(heads, 6)
    rule = HEAD_RULE if rule is None else rule
    verdicts = rule.verdicts(heads)
    admitted = [f"{r['cell']['layer']}{r['cell']['head']}" for r in verdicts if r["holds"]]
    numbers["head_rule"] = {"sha256": rule.sha256, "rule": rule.describe(), "admitted": admitted}
    lines.append(f"pre-registered rule {rule.sha256[:12]}: {rule.describe()}")
    lines.append(f"  admits {len(admitted)} of {len(verdicts)} heads: {', '.join(admitted) or '-'}")

    stage("attribution patching")
    atp = attribution_patch(
        model,
        batch.clean,
        batch.corrupt,
        metric,
        site="z",
        over=("layer", "head", "pos"),
        positions=[-1],
    )
    atp = atp.squeeze("pos")
    results["heads_end_attribution"] = atp
    numbers["attribution_vs_exact_r"] = correlation(atp, heads)
    lines.append(
        f"attribution patching vs exact (heads at END): Pearson r = "
        f"{numbers['attribution_vs_exact_r']:.3f}"
    )
    top = [row["cell"] for row in heads.normalized().top(3)]
    names = [f"{c['layer']}{c['head']}" for c in top]
    stage("path patching")
    direct = path_patch(
        model,
        batch.clean,
        batch.corrupt,
        metric,
        senders=names,
        receivers="logits",
        direction="denoise",
    )
    results["top_heads_direct"] = direct
    lines.append(
        "direct effect on the logits of those heads (path patching → logits, "
        "denoising, normalised):"
    )
    lines += _top_text(direct, 3)
    stage.close()
    numbers["seconds"] = round(time.perf_counter() - t0, 1)
    numbers["top_heads"] = names
    return StudyResult("IOI on " + str(model.cfg.model_name), results, numbers, lines)


def induction_study(*, n_prompts: int = 16, seed: int = 0, progress: bool = True) -> StudyResult:
    """The toy 2-layer induction model: head sweep, attribution and edges vs exact."""
    from interp.models import load_model
    from interp.toy import repeated_random_tokens

    model = load_model("toy-induction")
    g = torch.Generator().manual_seed(seed)
    half = 10
    clean = repeated_random_tokens(n_prompts, half, generator=g)
    corrupt = clean.clone()
    # Redraw the first half: the second half no longer repeats anything, and both halves of the
    # circuit (previous-token heads on the first half, induction heads on the second) change.
    corrupt[:, 1 : half + 1] = torch.randint(1, model.cfg.d_vocab, (n_prompts, half), generator=g)

    metric: Any = functools.partial(repeat_logprob, tokens=clean, half=half)
    metric.__name__ = "log p(repeated token)"

    stage = Stages("induction study", 4, progress)
    stage("head sweep")
    heads = patch_sweep(
        model, clean, corrupt, metric, site="z", over=("layer", "head"), direction="noise"
    )
    stage("attribution patching")
    atp = attribution_patch(
        model, clean, corrupt, metric, site="z", over=("layer", "head"), direction="noise"
    )
    atp_ig = attribution_patch(
        model,
        clean,
        corrupt,
        metric,
        site="z",
        over=("layer", "head"),
        direction="noise",
        method="ig",
    )
    stage("edge patching")
    edges = edge_patch(model, clean, corrupt, metric, direction="noise")
    stage("edge attribution")
    eap = edge_attribution(model, clean, corrupt, metric, direction="noise")
    eap_ig = edge_attribution(model, clean, corrupt, metric, direction="noise", method="eap-ig")
    stage.close()
    numbers = {
        "node_r": correlation(atp, heads),
        "node_ig_r": correlation(atp_ig, heads),
        "eap_r": correlation(eap, edges),
        "eap_ig_r": correlation(eap_ig, edges),
    }
    lines = [
        f"{n_prompts} sequences: BOS + {half} random tokens + the same {half} again; "
        "corrupted: the first half redrawn",
        f"clean log p(repeat): {_ci_text(heads.clean)}; corrupted: {_ci_text(heads.corrupt)}",  # type: ignore[arg-type]
        "noising each head (z → corrupted), largest drops, normalised:",
        *_top_text(heads, 10),
        f"vs exact patching, Pearson r over the 16 heads: attribution {numbers['node_r']:.3f}, "
        f"with integrated gradients {numbers['node_ig_r']:.3f}",
        f"vs exact edge patching, over all {len(edges.labels['edge'])} edges: EAP "
        f"{numbers['eap_r']:.3f}, EAP-IG {numbers['eap_ig_r']:.3f}",
    ]
    return StudyResult(
        "induction on the toy model",
        {"heads": heads, "heads_attribution": atp, "edges": edges, "edges_eap": eap},
        numbers,
        lines,
    )


# Fixed before any number is seen; ``main`` registers it in the output folder before the run.
HEAD_RULE = Rule(
    "a head at the final position is part of the IOI circuit",
    "normalized_effect",
    threshold=0.1,
    correction="maxt",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m interp.patching.study", description=__doc__)
    p.add_argument("--quick", action="store_true", help="every third layer in the residual sweep")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--out", default=None, help="save results and circuits.html here")
    args = p.parse_args(argv)
    from interp.models import load_model

    if args.out:  # before the run: the rule cannot be fitted to the numbers
        HEAD_RULE.register(Path(args.out) / "ioi")
    model = load_model("smollm2-135m")
    model.eval()
    studies = [ioi_study(model, n_prompts=args.prompts, quick=args.quick), induction_study()]
    for s in studies:
        print(s.summary())
    if args.out:
        from interp.viz import save_html

        out = Path(args.out)
        for s in studies:
            s.save(out / s.name.split()[0].lower())
        figs = [f for s in studies for f in s.figures()]
        print("wrote", save_html(out / "circuits.html", *figs, title="mechscope circuits"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
