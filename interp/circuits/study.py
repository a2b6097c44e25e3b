"""The SmolLM2 attribution-graph study (issue 15):
``python -m interp.circuits.study --transcoders DIR --out DIR``.

Two graphs, "The capital of France is" → " Paris" and one IOI prompt (:func:`interp.ioi.ioi_prompts`,
target the indirect object), with the transcoders found in ``DIR`` (a set written by
``python -m saes.transcoders``); every layer without one is frozen whole, an error node per
position, and so is position 0 at every layer unless ``--keep-position-0`` (the attention sink:
see :class:`~interp.circuits.replacement.LocalReplacement`). Per graph: the replacement's logits against the model's, scores, node and edge counts
before and after pruning, backward passes and time, where the influence sits (by kind and by
(layer, position)), and :func:`~interp.circuits.validate.check_interventions` for the most
influential features. For IOI, the route of the name tokens: the share of their influence on the
logit that passes through each (layer, position)'s feature nodes, and the share that reaches the
logit directly (through frozen attention only). Error nodes are leaves in an attribution graph, so
no token influence passes through them: what the whole-MLP error nodes carry is not traced.
Writes ``OUT/<name>/`` (the graph), ``OUT/<name>.json`` (viewer JSON), ``OUT/study.json`` and
``OUT/study.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json
from interp.circuits.attribute import attribute
from interp.circuits.export import export_json
from interp.circuits.graph import AttributionGraph
from interp.circuits.influence import node_influence, normalize
from interp.circuits.replacement import LocalReplacement
from interp.circuits.validate import check_interventions

__all__ = ["graph_report", "influence_cells", "main", "name_route", "run_study"]

PARIS = ("The capital of France is", " Paris")


def _labels(graph: AttributionGraph, roles: Sequence[str] | None) -> list[str]:
    words = list(roles) if roles else [repr(t) for t in graph.token_strings]
    return [f"{w}@{p}" for p, w in enumerate(words)] if words else []


def influence_cells(graph: AttributionGraph, top: int = 10) -> dict[str, Any]:
    """Influence on the logits by node kind (fractions of the total) and the ``top``
    (layer, position) cells, each split into its feature and error nodes' shares."""
    infl = node_influence(graph.adjacency, graph.logit_weights)
    total = float(infl.sum())
    n_f, t0 = graph.n_features, graph.token_start
    kinds = {
        "features": float(infl[:n_f].sum()) / total,
        "errors": float(infl[n_f:t0].sum()) / total,
        "tokens": float(infl[t0 : graph.logit_start].sum()) / total,
    }
    cell_f = torch.zeros(graph.n_layers, graph.n_pos)
    ft = graph.feature_table
    cell_f.index_put_((ft[:, 0], ft[:, 1]), infl[:n_f], accumulate=True)
    cell_e = infl[n_f:t0].reshape(graph.n_layers, graph.n_pos)
    both = cell_f + cell_e
    order = both.flatten().argsort(descending=True)[:top].tolist()
    cells = [
        {
            "layer": i // graph.n_pos,
            "pos": i % graph.n_pos,
            "features": float(cell_f.flatten()[i]) / total,
            "errors": float(cell_e.flatten()[i]) / total,
        }
        for i in order
    ]
    return {"kinds": kinds, "top_cells": cells}


def name_route(graph: AttributionGraph, positions: Sequence[int], top: int = 10) -> dict[str, Any]:
    """How the influence of the token nodes at ``positions`` reaches the logits.

    The flow through node v is (v's influence on the logits) × (the share of v's normalised input
    that comes, over all paths, from those tokens): the sum of the normalised path weights from the
    tokens to the logits that pass through v. Paths go strictly up the layers, so each layer's
    flows sum to at most the tokens' influence; ``direct`` is the share reaching the logits with no
    node in between. Fractions are of the tokens' total influence.

    >>> A = torch.zeros(4, 4); A[0, 2] = 1.0; A[3, 0] = 1.0; A[3, 2] = 3.0  # F0 ← tok; logit
    >>> g = AttributionGraph(torch.tensor([5]), torch.tensor([[0, 0, 7]]), torch.tensor([1.0]),
    ...     torch.tensor([0]), A, torch.tensor([9]), torch.tensor([1.0]), 1, [0])
    >>> r = name_route(g, [0])
    >>> r["direct"], r["by_layer"], r["top_cells"][0]["share"]
    (0.75, [0.25], 0.25)
    """
    norm = normalize(graph.adjacency)
    infl = node_influence(graph.adjacency, graph.logit_weights)
    src = torch.zeros(len(norm))
    src[[graph.token_start + p for p in positions]] = 1.0
    reach = norm @ src
    share = reach.clone()  # share of each node's input from the tokens, over all paths
    for _ in range(graph.n_layers + 2):
        reach = norm @ reach
        if not reach.any():
            break
        share += reach
    total = max(float(infl[[graph.token_start + p for p in positions]].sum()), 1e-30)
    n_f = graph.n_features
    flow = (infl[:n_f] * share[:n_f]) / total
    cells = torch.zeros(graph.n_layers, graph.n_pos)
    ft = graph.feature_table
    cells.index_put_((ft[:, 0], ft[:, 1]), flow, accumulate=True)
    w = graph.logit_weights
    direct = float(w @ norm[:, [graph.token_start + p for p in positions]].sum(1)) / total
    order = cells.flatten().argsort(descending=True)[:top].tolist()
    return {
        "positions": list(positions),
        "token_influence": total / float(infl.sum()),
        "direct": round(direct, 6),
        "by_layer": [round(float(x), 6) for x in cells.sum(1)],
        "top_cells": [
            {
                "layer": i // graph.n_pos,
                "pos": i % graph.n_pos,
                "share": round(float(cells.flatten()[i]), 6),
            }
            for i in order
            if cells.flatten()[i] > 0
        ],
    }


def graph_report(
    model: Any,
    name: str,
    tokens: Tensor,
    target: int,
    transcoders: Mapping[int, Any],
    out: Path,
    *,
    max_feature_nodes: int = 512,
    batch_size: int = 32,
    n_interventions: int = 20,
    fraction: float = 0.1,
    also_fractions: Sequence[float] = (),
    skip_position_0: bool = True,
) -> tuple[AttributionGraph, dict[str, Any]]:
    """Build, check, prune, save and export one graph; its numbers as a dict. The interventions
    are reported per feature at ``fraction``, and as correlations only at ``also_fractions``
    (how they move with the size of the edit)."""
    tcs = dict(transcoders)
    g = attribute(
        model, tokens, tcs, targets=[target], max_feature_nodes=max_feature_nodes,
        batch_size=batch_size, skip_position_0=skip_position_0,
    )  # fmt: skip
    with torch.no_grad():
        real = model(g.tokens[None])[0]
    rep = LocalReplacement.from_prompt(model, g.tokens[None], tcs, skip_position_0=skip_position_0)
    exact = float((rep.logits_of() - real).abs().max())
    replacement, completeness = g.scores()
    pruned = g.prune()
    g.save(out / name, overwrite=True)
    export_json(g, out / f"{name}.json", slug=name)
    t0 = time.perf_counter()
    chk = check_interventions(
        model, g, tcs, n=n_interventions, fraction=fraction, skip_position_0=skip_position_0
    )
    sweep = [chk] + [
        check_interventions(
            model, g, tcs, n=n_interventions, fraction=fr, skip_position_0=skip_position_0
        )
        for fr in also_fractions
    ]
    labels = _labels(g, None)
    report = {
        "prompt": g.prompt,
        "skip_position_0": skip_position_0,
        "tokens": len(g.tokens),
        "token_strings": g.token_strings,
        "target": g.logit_strings[0] if g.logit_strings else int(g.logit_tokens[0]),
        "target_probability": float(g.logit_probabilities[0]),
        "max_abs_logit_diff_replacement_vs_model": exact,
        "replacement_score": replacement,
        "completeness_score": completeness,
        "active_features": len(g.active_features),
        "feature_nodes": g.n_features,
        "nodes": len(g.adjacency),
        "edges": int((g.adjacency != 0).sum()),
        "pruned_nodes": int(pruned.node_mask.sum()),
        "pruned_features": int(pruned.node_mask[: g.n_features].sum()),
        "pruned_errors": int(pruned.node_mask[g.error_start : g.token_start].sum()),
        "pruned_edges": int(pruned.edge_mask.sum()),
        "backward_passes": g.backward_passes,
        "graph_seconds": g.seconds,
        "intervention_seconds": time.perf_counter() - t0,
        "influence": influence_cells(g),
        "interventions": {
            "fraction": fraction,
            "correlation_replacement": chk.correlation_replacement,
            "correlation_real": chk.correlation_real,
            "correlation_frozen": chk.correlation_frozen,
            "by_fraction": [
                {
                    "fraction": fr,
                    "correlation_replacement": c.correlation_replacement,
                    "correlation_frozen": c.correlation_frozen,
                    "correlation_real": c.correlation_real,
                }
                for fr, c in zip([fraction, *also_fractions], sweep, strict=True)
            ],
            "rows": [
                {
                    "feature": f"F{lay}.{f}@{labels[p] if labels else p}",
                    "predicted": a,
                    "replacement": b,
                    "real": c,
                    "frozen": d,
                }
                for (lay, p, f), a, b, c, d in zip(
                    chk.features,
                    chk.predicted.tolist(),
                    chk.replacement.tolist(),
                    chk.real.tolist(),
                    chk.frozen.tolist(),
                    strict=True,
                )
            ],  # fmt: skip
        },
    }
    return g, report


def run_study(
    model: Any,
    transcoders: Mapping[int, Any],
    out: str | os.PathLike[str],
    *,
    ioi_seed: int = 0,
    skip_position_0: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """Both graphs (``kw`` goes to :func:`graph_report`); writes ``study.json`` and ``study.md``."""
    from interp.circuits.attribute import target_tokens
    from interp.ioi import ioi_prompts

    out = Path(out)
    paris = model.to_tokens(PARIS[0])[0]
    (paris_target,) = target_tokens(model, [PARIS[1]])
    ioi = ioi_prompts(model, 1, seed=ioi_seed)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "transcoder_layers": sorted(transcoders),
        "error_only_layers": [i for i in range(model.cfg.n_layers) if i not in transcoders],
        "skip_position_0": skip_position_0,
        "graphs": {},
    }
    kw["skip_position_0"] = skip_position_0
    _, results["graphs"]["paris"] = graph_report(
        model, "paris", paris, paris_target, transcoders, out, **kw
    )
    g, rep = graph_report(model, "ioi", ioi.clean[0], int(ioi.io[0]), transcoders, out, **kw)
    roles = ioi.roles
    names = [i for i, r in enumerate(roles) if r in ("name1", "name2", "S2")]
    rep["roles"] = roles
    rep["route"] = name_route(g, names)
    rep["route_by_token"] = {roles[p]: name_route(g, [p], top=5) for p in names}
    results["graphs"]["ioi"] = rep
    results["seconds"] = time.perf_counter() - start
    results["load_average"] = list(os.getloadavg())
    results["threads"] = torch.get_num_threads()
    atomic_write_json(out / "study.json", results)
    atomic_write_bytes(out / "study.md", markdown(results).encode())
    return results


def _cell(c: dict[str, Any], labels: list[str]) -> str:
    return f"L{c['layer']} {labels[c['pos']]}"


def markdown(results: dict[str, Any]) -> str:
    """The study's numbers as Markdown tables."""
    lines = [
        f"Transcoders at layers {results['transcoder_layers']}; layers "
        f"{results['error_only_layers']} are whole-MLP error nodes"
        + (", and so is position 0 at every layer." if results.get("skip_position_0") else "."),
        "",
        "| graph | tokens | max abs logit diff | replacement | completeness | nodes → pruned | "
        "edges → pruned | feature nodes → pruned | backward passes | graph s | r (replacement) "
        "| r (model, attention and norms frozen) | r (model) |",
        "|" + "---|" * 13,
    ]
    for name, r in results["graphs"].items():
        iv = r["interventions"]
        lines.append(
            f"| {name} | {r['tokens']} | {r['max_abs_logit_diff_replacement_vs_model']:.1e} "
            f"| {r['replacement_score']:.3f} | {r['completeness_score']:.3f} "
            f"| {r['nodes']:,} → {r['pruned_nodes']:,} | {r['edges']:,} → {r['pruned_edges']:,} "
            f"| {r['feature_nodes']} → {r['pruned_features']} | {r['backward_passes']} "
            f"| {r['graph_seconds']:.0f} | {iv['correlation_replacement']:.3f} "
            f"| {iv.get('correlation_frozen', math.nan):.3f} | {iv['correlation_real']:.3f} |"
        )
    for name, r in results["graphs"].items():
        words = r.get("roles") or [repr(t) for t in r["token_strings"]]
        labels = [f"{w}@{p}" for p, w in enumerate(words)] or [str(p) for p in range(r["tokens"])]
        k = r["influence"]["kinds"]
        lines += [
            "",
            f"**{name}** ({r['prompt']!r} → {r['target']!r}, p = {r['target_probability']:.3f}): "
            f"influence on the logit: features {k['features']:.3f}, errors {k['errors']:.3f}, "
            f"tokens {k['tokens']:.3f}. Top (layer, position) cells (feature + error share): "
            + ", ".join(
                f"{_cell(c, labels)} {c['features']:.3f} + {c['errors']:.3f}"
                for c in r["influence"]["top_cells"][:6]
            ),
        ]
        sweep = r["interventions"].get("by_fraction", [])
        if len(sweep) > 1:
            lines[-1] += (
                " Interventions, r (replacement / attention and norms frozen / model) by ablated "
                "share: "
                + "; ".join(
                    f"{b['fraction']:g}: {b['correlation_replacement']:.3f} / "
                    f"{b['correlation_frozen']:.3f} / {b['correlation_real']:.3f}"
                    for b in sweep
                )
            )
        if "route" in r:
            rt = r["route"]
            lines += [
                "",
                f"Name tokens ({', '.join(labels[p] for p in rt['positions'])}): "
                f"{rt['token_influence']:.3f} of all influence; direct to the logit "
                f"{rt['direct']:.3f}; through feature nodes, by layer: "
                + ", ".join(f"L{i} {x:.3f}" for i, x in enumerate(rt["by_layer"]) if x > 0)
                + "; top cells: "
                + ", ".join(f"{_cell(c, labels)} {c['share']:.3f}" for c in rt["top_cells"][:6]),
            ]
            for role, sub in r["route_by_token"].items():
                lines.append(
                    f"- {role}: {sub['token_influence']:.3f} of all influence, direct "
                    f"{sub['direct']:.3f}, through feature nodes by layer "
                    + ", ".join(f"L{i} {x:.3f}" for i, x in enumerate(sub["by_layer"]) if x > 0)
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m interp.circuits.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--transcoders", required=True, help="a set folder (python -m saes.transcoders)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", help="comma-separated layers of the set to use (default: all)")
    p.add_argument("--max-feature-nodes", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-interventions", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.1, help="ablate this share of a feature")
    p.add_argument("--also-fractions", default="",
                   help="comma-separated other shares, reported as correlations only")  # fmt: skip
    p.add_argument("--ioi-seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--keep-position-0", action="store_true",
                   help="feature nodes at position 0 too (default: it is an error node whole)")  # fmt: skip
    args = p.parse_args(argv)
    from interp.models import load_model
    from saes.checksums import SAELoadError
    from saes.transcoder import load_transcoders

    try:
        also = [float(x) for x in args.also_fractions.split(",") if x.strip()]
    except ValueError:
        p.error(
            f"--also-fractions must be numbers separated by commas, got {args.also_fractions!r}"
        )
    for fr in (args.fraction, *also):
        if not 0 < fr <= 1:
            p.error(f"--fraction and --also-fractions must be in (0, 1], got {fr}")
    if not Path(args.transcoders).is_dir():
        p.error(f"--transcoders {args.transcoders}: no such folder (python -m saes.transcoders)")
    try:
        layers = None if not args.layers else [int(s) for s in args.layers.split(",")]
        model = load_model(args.model)
        tcs = load_transcoders(model, args.transcoders, layers=layers)
    except (SAELoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_study(
        model, tcs, args.out, ioi_seed=args.ioi_seed, max_feature_nodes=args.max_feature_nodes,
        batch_size=args.batch_size, n_interventions=args.n_interventions, fraction=args.fraction,
        also_fractions=also,
        skip_position_0=not args.keep_position_0,
    )  # fmt: skip
    print(markdown(res))
    print(f"wrote {args.out}/study.json, study.md, paris/, ioi/ and their viewer JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
