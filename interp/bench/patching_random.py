"""Patching on a random GPT-2-small-shaped model: mechscope vs ``transformer_lens.patching``.

``python -m interp.bench patching --model random [--backend hooked|bridge|both] [--layers 12]
[--prompts 16] [--positions 24] [--threads 1] [--json out.json]``

A random TransformerLens model of GPT-2 small's shape (12 layers, d_model 768, 12 heads, d_vocab
50,257; :func:`interp.random_models.random_model`, seed 0) on 16 random prompts of 24 tokens whose
clean and corrupted versions differ at two positions (``--diff-at``, default a third and two
thirds of the way). Metric: per-prompt logit difference at the last position
(``partial(logit_diff, correct=clean token, incorrect=corrupted token)`` at the first differing
position); TransformerLens gets its mean over prompts. Two denoising sweeps, each side by side:

- ``resid_pre`` over layer × position, logits at every position (``logits_at=None``), against
  ``get_act_patch_resid_pre``;
- ``z`` over layer × head (all positions patched together), against
  ``get_act_patch_attn_head_out_all_pos``.

The TransformerLens side is ``run_with_cache`` of the clean prompts (the patched hooks only)
plus the patching call, under ``torch.no_grad``; mechscope's side is one ``patch_sweep`` call.
Each mechscope sweep is timed as the best of ``--repeats``, each TransformerLens sweep as the best
of ``--tl-repeats`` (default 1: it is the slow side). Memory: each sweep again in a fresh child
process at ``--mem-prompts`` prompts: RSS after model load, inputs and one plain forward, then the
peak during the sweep (the kernel's high-water mark reset at the start, or 10 ms sampling where it
cannot be reset); TransformerLens runs its first ``--mem-tl-cells`` cells there (each cell is the
same full forward, so its peak does not grow with more), mechscope the whole sweep.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

__all__ = ["SWEEPS", "Sizes", "add_arguments", "make_inputs", "measure_memory", "run"]

# site -> (over, TransformerLens function, hook suffix)
SWEEPS: dict[str, tuple[tuple[str, str], str, str]] = {
    "resid_pre": (("layer", "pos"), "get_act_patch_resid_pre", "hook_resid_pre"),
    "z": (("layer", "head"), "get_act_patch_attn_head_out_all_pos", "hook_z"),
}
TARGET_SPEEDUP = {"resid_pre": 6.0, "z": 4.0}


@dataclass(frozen=True)
class Sizes:
    layers: int = 12
    d_model: int = 768
    heads: int = 12
    d_vocab: int = 50257
    prompts: int = 16
    positions: int = 24

    def fields(self) -> dict[str, Any]:
        return dict(
            n_layers=self.layers, d_model=self.d_model, n_heads=self.heads,
            d_head=self.d_model // self.heads, d_mlp=4 * self.d_model, d_vocab=self.d_vocab,
            n_ctx=max(1024, self.positions), seed=0,
        )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``--model random`` (``--prompts``, ``--backend``, ``--threads``, ``--json`` and
    ``--skip-tl`` are shared with the IOI case)."""
    g = p.add_argument_group("--model random (issue 18)")
    g.add_argument("--layers", type=int, default=Sizes.layers)
    g.add_argument("--positions", type=int, default=Sizes.positions, help="tokens per prompt")
    g.add_argument("--d-model", type=int, default=Sizes.d_model)
    g.add_argument("--heads", type=int, default=Sizes.heads)
    g.add_argument("--d-vocab", type=int, default=Sizes.d_vocab)
    g.add_argument(
        "--diff-at", type=int, nargs="+", default=None,
        help="positions where clean and corrupted prompts differ (default: n/3 and 2n/3)",
    )  # fmt: skip
    g.add_argument("--sweeps", nargs="+", choices=tuple(SWEEPS), default=list(SWEEPS))
    g.add_argument("--repeats", type=int, default=3, help="mechscope: best of this many")
    g.add_argument("--tl-repeats", type=int, default=1, help="TransformerLens: best of this many")
    g.add_argument("--mem-prompts", type=int, default=32)
    g.add_argument("--mem-tl-cells", type=int, default=12)
    g.add_argument("--skip-mem", action="store_true", help="no memory children")


def sizes_of(args: argparse.Namespace) -> Sizes:
    return Sizes(
        args.layers, args.d_model, args.heads, args.d_vocab,
        args.prompts or Sizes.prompts, args.positions,
    )  # fmt: skip


def diff_positions(n_pos: int, diff_at: list[int] | None) -> list[int]:
    at = diff_at or [n_pos // 3, 2 * n_pos // 3]
    return sorted({p % n_pos for p in at})


def make_inputs(
    n: int, n_pos: int, d_vocab: int, diff_at: list[int] | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Clean and corrupted token ids ``[n, n_pos]`` differing exactly at ``diff_at``, and the
    metric: logit difference at the last position between the clean and the corrupted token of
    the first differing position, one value per prompt."""
    from interp.metrics import logit_diff

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (n, n_pos), generator=g)
    corrupt = clean.clone()
    at = diff_positions(n_pos, diff_at)
    shift = torch.randint(1, d_vocab, (n, len(at)), generator=g)
    corrupt[:, at] = (clean[:, at] + shift) % d_vocab
    metric = partial(logit_diff, correct=clean[:, at[0]], incorrect=corrupt[:, at[0]])
    return clean, corrupt, metric


def build(backend: str, sizes: Sizes) -> Any:
    from interp.random_models import random_model

    return random_model(backend, **sizes.fields()).eval()


def mechscope_sweep(model: Any, clean: Any, corrupt: Any, metric: Any, site: str, **kw: Any) -> Any:
    from interp.patching import patch_sweep

    return patch_sweep(model, clean, corrupt, metric, site=site, over=SWEEPS[site][0], **kw)


def tl_sweep(
    model: Any, clean: Any, corrupt: Any, metric: Any, site: str, cells: int | None = None
) -> torch.Tensor:
    """TransformerLens's sweep: a clean cache of the patched hooks, then its patching function
    (only its first ``cells`` cells when given; the result is then flat)."""
    import transformer_lens.patching as tlp

    over, fn_name, hook = SWEEPS[site]
    fn = getattr(tlp, fn_name)
    tlp.tqdm = lambda it, **_: it  # type: ignore[attr-defined]  # no progress bar per sweep
    kw: dict[str, Any] = {}
    if cells is not None:
        sizes = {"layer": model.cfg.n_layers, "pos": clean.shape[1], "head": model.cfg.n_heads}
        df = tlp.make_df_from_ranges([sizes[a] for a in over], list(over))
        kw = {"index_axis_names": None, "index_df": df.iloc[:cells]}
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda name: name.endswith(hook))
        return fn(model, corrupt, cache, lambda lg: metric(lg).mean(), **kw).cpu()


def _best(fn: Any, repeats: int) -> tuple[Any, float, list[float]]:
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times), times


# ------------------------------------------------------------------------------------ memory


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    if m is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(m.group(1))


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") <= _status_kb("VmRSS") + 1024
    except OSError:
        return False


class _Sampler:
    def __init__(self, interval: float = 0.01):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def measure_memory(
    backend: str, sizes: dict[str, int], site: str, side: str, *,
    diff_at: list[int] | None = None, tl_cells: int | None = None, threads: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """In this process: build the model and inputs, one plain forward, then the RSS growth of one
    sweep (``side`` ``"mechscope"`` or ``"tl"``) over the RSS before it, in MB."""
    if threads:
        torch.set_num_threads(threads)
    s = Sizes(**sizes)
    model = build(backend, s)
    clean, corrupt, metric = make_inputs(s.prompts, s.positions, s.d_vocab, diff_at)
    with torch.no_grad():
        model(corrupt)
    gc.collect()
    exact = _reset_peak()
    before = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    with _Sampler() as sampled:
        if side == "mechscope":
            mechscope_sweep(model, clean, corrupt, metric, site)
        else:
            tl_sweep(model, clean, corrupt, metric, site, cells=tl_cells)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") * 1024 if exact else sampled.peak
    mb = 2**20
    return {
        "backend": backend, "site": site, "side": side, "prompts": s.prompts,
        "tl_cells": tl_cells if side == "tl" else None, "seconds": round(seconds, 2),
        "rss_before_mb": round(before / mb, 1), "peak_mb": round(peak / mb, 1),
        "growth_mb": round((peak - before) / mb, 1),
        "sampled_growth_mb": round((sampled.peak - before) / mb, 1),
        "peak_exact": exact,
    }  # fmt: skip


_CHILD = (
    "import json, sys\n"
    "from interp.bench.patching_random import measure_memory\n"
    "print(json.dumps(measure_memory(**json.loads(sys.argv[1]))))\n"
)


def _child(params: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(params)], capture_output=True, text=True
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------ the run


def _machine() -> dict[str, Any]:
    from importlib.metadata import version

    import transformers

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(
                ["git", "-C", root, *cmd], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    def cpu_model() -> str:
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            return m.group(1).strip() if m else platform.machine()
        except OSError:
            return platform.processor() or platform.machine()

    dirty = git("status", "--porcelain", "--", "interp/core", "interp/patching")
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": version("transformer_lens"),
        "transformers": transformers.__version__,
        # a snapshot outside git (git archive): MECHSCOPE_BENCH_COMMIT names it
        "git_commit": git("rev-parse", "--short", "HEAD")
        or os.environ.get("MECHSCOPE_BENCH_COMMIT", "?"),
        "patching_code_dirty": None if dirty is None else dirty != "",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def one_backend(backend: str, s: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    """Both sweeps on one backend, side by side: times, speedups, agreement."""
    model = build(backend, s)
    clean, corrupt, metric = make_inputs(s.prompts, s.positions, s.d_vocab, args.diff_at)
    ref_model, tl_on = model, backend
    out: dict[str, Any] = {"backend": backend, "sweeps": {}}
    with torch.no_grad():  # warm-up: one forward, one cell of each side
        model(clean)
    for site in args.sweeps:
        mechscope_sweep(model, clean, corrupt, metric, site, layers=[s.layers - 1])
        if args.skip_tl:
            continue
        try:
            tl_sweep(ref_model, clean, corrupt, metric, site, cells=1)
        except Exception as err:  # TransformerLens's patching on a bridge: say so, use hooked
            if backend != "bridge" or ref_model is not model:
                raise
            out["tl_error_on_bridge"] = f"{type(err).__name__}: {err}"
            print(f"# TransformerLens patching failed on the bridge ({err}); using a "
                  "HookedTransformer of the same weights", file=sys.stderr)  # fmt: skip
            ref_model, tl_on = build("hooked", s), "hooked (same weights)"
            tl_sweep(ref_model, clean, corrupt, metric, site, cells=1)
    out["tl_ran_on"] = tl_on
    for site in args.sweeps:
        t0 = time.perf_counter()
        res, t_ms, ms_times = _best(
            partial(mechscope_sweep, model, clean, corrupt, metric, site), args.repeats
        )
        row: dict[str, Any] = {
            "cells": int(res.mean.numel()),
            "mechscope_s": round(t_ms, 3),
            "mechscope_times_s": [round(t, 3) for t in ms_times],
            "forwards": res.meta.get("forwards"),
            "cells_skipped_unchanged": res.meta.get("cells_skipped_unchanged"),
            "fast": res.meta.get("fast"),
        }
        if site == "resid_pre":  # for reference: the metric's position only
            _, t_last, _ = _best(
                partial(mechscope_sweep, model, clean, corrupt, metric, site, logits_at=-1),
                args.repeats,
            )
            row["mechscope_logits_at_last_s"] = round(t_last, 3)
        if not args.skip_tl:
            ref, t_tl, tl_times = _best(
                partial(tl_sweep, ref_model, clean, corrupt, metric, site), args.tl_repeats
            )
            row.update(
                tl_s=round(t_tl, 3),
                tl_times_s=[round(t, 3) for t in tl_times],
                speedup=round(t_tl / t_ms, 2),
                target_speedup=TARGET_SPEEDUP[site],
                max_abs_diff=float((res.mean - ref).abs().max()),
                metric_range=[float(ref.min()), float(ref.max())],
            )
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        out["sweeps"][site] = row
        print(f"# {backend} {site}: {row}", file=sys.stderr, flush=True)
    return out


def memory(backend: str, s: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    sizes = {**s.__dict__, "prompts": args.mem_prompts}
    out: dict[str, Any] = {}
    for site in args.sweeps:
        common = dict(backend=backend, sizes=sizes, site=site, diff_at=args.diff_at,
                      threads=args.threads)  # fmt: skip
        ms = _child({**common, "side": "mechscope"})
        tl = _child({**common, "side": "tl", "tl_cells": args.mem_tl_cells})
        row: dict[str, Any] = {"mechscope": ms, "tl": tl}
        if "growth_mb" in ms and "growth_mb" in tl:
            row["target_mb"] = round(2 * tl["growth_mb"] + 100, 1)
            row["met"] = ms["growth_mb"] <= row["target_mb"]
        out[site] = row
        print(f"# {backend} {site} memory: {row}", file=sys.stderr, flush=True)
    return out


def _s(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt_mem(m: dict[str, Any] | None) -> str:
    if not m or "growth_mb" not in m:
        return "—" if not m else f"error: {m.get('error')}"
    return f"{m['growth_mb']:.0f} MB"


def table(results: dict[str, Any]) -> str:
    head = ("backend", "sweep", "cells", "TL s", "mechscope s", "speedup (target)",
            "max |diff|", "TL RSS growth", "mechscope RSS growth", "≤ 2×TL+100 MB")  # fmt: skip
    rows = [head]
    for backend, r in results["backends"].items():
        for site, row in r["sweeps"].items():
            mem = results.get("memory", {}).get(backend, {}).get(site, {})
            tl = row.get("tl_s")
            rows.append((
                backend, site, str(row["cells"]),
                "—" if tl is None else _s(tl), _s(row["mechscope_s"]),
                "—" if tl is None else f"{row['speedup']:.2f}× (≥{row['target_speedup']:.0f}×)",
                "—" if tl is None else f"{row['max_abs_diff']:.1e}",
                _fmt_mem(mem.get("tl")), _fmt_mem(mem.get("mechscope")),
                "—" if "met" not in mem else ("yes" if mem["met"] else "NO"),
            ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def run(args: argparse.Namespace) -> int:
    # Scoped, not torch.set_grad_enabled(False): the command also runs inside a test process.
    with torch.no_grad():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    s = sizes_of(args)
    backends = ["hooked", "bridge"] if args.backend == "both" else [args.backend or "hooked"]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "case": "random GPT-2-small-shaped model (issue 18)",
        "sizes": s.__dict__,
        "diff_at": diff_positions(s.positions, args.diff_at),
        "sweeps": list(args.sweeps),
        "repeats": {"mechscope": args.repeats, "tl": args.tl_repeats},
        "threads": torch.get_num_threads(),
        "machine": _machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "backends": {},
    }
    print(f"# {results['case']}: {s}, threads {results['threads']}", file=sys.stderr)
    for backend in backends:
        results["backends"][backend] = one_backend(backend, s, args)
        gc.collect()
    results["timing_wall_s"] = round(time.perf_counter() - started, 1)
    if not args.skip_mem:
        results["memory"] = {b: memory(b, s, args) for b in backends}
        results["memory_prompts"] = args.mem_prompts
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(table(results))
    print(
        f"mechscope best of {args.repeats}, TransformerLens best of {args.tl_repeats}; memory at "
        f"{args.mem_prompts} prompts (TL: first {args.mem_tl_cells} cells); load "
        f"{results['loadavg_before']} -> {results['loadavg_after']}; wall {results['wall_s']} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
