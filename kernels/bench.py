"""``python -m kernels.bench``: tokens per second of a full TopK SAE training step, kernels vs the
dense PyTorch path, with the GEMM and copy ceilings measured in the same run.

A step is what ``saes.trainer`` does: forward and loss (mse + aux-k, α = 1/32, k_aux = d_in/2,
1/16 of the latents dead), backward, decoder-parallel gradient removal, Adam, decoder renorm.
Precision, both paths alike: fp32 parameters and Adam state (``Adam(fused=True)`` for every
path), bf16 autocast on GPU (the trainer's ``mixed_precision``). Paths: ``dense`` (``saes.SAE`` +
``saes.losses.sae_loss``), ``kernels`` (``kernels.sparse_sae_loss``, Triton backend, torch.topk
selection) and ``kernels+topk kernel`` (selection by the Triton top-k kernel). The kernel paths
get n_dead from the host (as a trainer caching its dead count would), so they make no device
sync. Without a GPU: the full step at (576, 4608, 32, 4096) on CPU, dense vs the reference
backend, interleaved, medians. ``--profile`` adds a torch.profiler summary per path (GPU).
Prints tables, then one ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kernels.autograd import sparse_sae_loss
from kernels.dispatch import REFERENCE, Backend, backend_choice, get_backend
from saes.config import SAEConfig
from saes.losses import sae_loss
from saes.sae import SAE

CONFIGS = [(768, 24576, 32, 4096), (2304, 65536, 64, 4096)]  # (d_in, d_sae, k, batch)
CPU_CONFIG = (576, 4608, 32, 4096)
AUX = 1 / 32  # aux-k coefficient, the trainer's default


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], None], device: torch.device, iters: int, warmup: int) -> dict:
    """Mean ms per step over ``iters`` (after ``warmup``, which includes Triton compiles)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / iters
        return {"ms": ms, "peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return {"ms": (time.perf_counter() - t0) * 1e3 / iters, "peak_mib": None}


def make_step(
    path: str, cfg: tuple[int, int, int, int], device: torch.device, backend: Backend | None
) -> Callable[[], None]:
    d_in, d_sae, k, batch = cfg
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, activation="topk"), seed=0).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, d_in, device=device, generator=gen)
    dead = torch.arange(d_sae, device=device) % 16 == 0
    n_dead = len(range(0, d_sae, 16))
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if path == "dense":
                total = sae_loss(sae, x, dead=dead, k_aux=d_in // 2, aux_coefficient=AUX)[0].total
            else:
                total = sparse_sae_loss(
                    x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k,
                    dead_mask=dead, k_aux=d_in // 2, aux_coefficient=AUX, n_dead=n_dead,
                    backend=backend,
                )[0].total  # fmt: skip
        opt.zero_grad(set_to_none=True)
        total.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalize_decoder_()

    return step


def bench_steps(
    cfg: tuple[int, int, int, int],
    device: torch.device,
    paths: dict[str, Backend | None],
    iters: int,
    warmup: int,
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path, backend in paths.items():
        try:
            r = time_steps(make_step(path, cfg, device, backend), device, iters, warmup)
            r["tokens_per_s"] = cfg[3] / (r["ms"] / 1e3)
            out[path] = r
        except Exception as err:  # keep going: one broken path must not lose the whole run
            out[path] = {"error": f"{type(err).__name__}: {err}"[:500]}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def saelens_step(
    cfg: tuple[int, int, int, int], device: torch.device, iters: int, warmup: int
) -> dict:
    """SAELens's TopK training step (forward, loss with aux, backward, Adam), if it imports."""
    try:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
    except Exception as err:
        return {"skipped": f"sae_lens not importable ({type(err).__name__}: {err})"[:300]}
    d_in, d_sae, k, batch = cfg
    try:
        sae = TopKTrainingSAE(
            TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device=str(device))
        )
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        x = torch.randn(batch, d_in, device=device)
        dead = torch.arange(d_sae, device=device) % 16 == 0
        amp = device.type == "cuda"

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                inp = TrainStepInput(
                    sae_in=x,
                    coefficients={},
                    dead_neuron_mask=dead,
                    n_training_steps=0,
                    is_logging_step=False,
                )
                loss = sae.training_forward_pass(inp).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        r = time_steps(step, device, iters, warmup)
        r["tokens_per_s"] = batch / (r["ms"] / 1e3)
        return r
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"[:500]}


def print_steps(cfg: tuple[int, int, int, int], steps: dict[str, dict]) -> None:
    print(f"\nfull training step  d_in={cfg[0]} d_sae={cfg[1]} k={cfg[2]} batch={cfg[3]}")
    print(f"  {'path':<22}{'ms/step':>10}{'tokens/s':>14}{'peak MiB':>11}{'vs dense':>10}")
    base = steps.get("dense", {}).get("ms")
    for path, r in steps.items():
        if "ms" not in r:
            print(f"  {path:<22}{r.get('error') or r.get('skipped')}")
            continue
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-"
        speed = f"{base / r['ms']:.2f}x" if base else "-"
        print(f"  {path:<22}{r['ms']:>10.3f}{r['tokens_per_s']:>14,.0f}{peak:>11}{speed:>10}")


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    threads = torch.get_num_threads()
    print(f"NO GPU: the full step on CPU ({threads} threads), dense vs the reference backend")
    device = torch.device("cpu")
    cfg = CPU_CONFIG
    steps = {
        "dense": make_step("dense", cfg, device, None),
        "kernels(reference)": make_step("kernels", cfg, device, REFERENCE),
    }
    times: dict[str, list[float]] = {p: [] for p in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.cpu_iters):  # interleaved: load from other processes hits both alike
        for p, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[p].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, dict] = {}
    for p, ts in times.items():
        ms = statistics.median(ts)
        out[p] = {"ms": ms, "ms_all": [round(t, 1) for t in ts], "tokens_per_s": cfg[3] / ms * 1e3,
                  "peak_mib": None}  # fmt: skip
    print_steps(cfg, out)
    ratio = out["dense"]["ms"] / out["kernels(reference)"]["ms"]
    print(f"  kernels(reference) vs dense: {ratio:.2f}x (medians of {args.cpu_iters})")
    return {
        "device": "cpu",
        "threads": threads,
        "note": "no GPU: reference backend on CPU; Adam(fused=True) for both paths",
        "configs": [dict(zip(("d_in", "d_sae", "k", "batch"), cfg, strict=True), steps=out)],
        "speedup": ratio,
    }


def profile_steps(
    cfg: tuple[int, int, int, int], paths: dict[str, Backend | None], n_steps: int = 5
) -> dict[str, Any]:
    """torch.profiler over ``n_steps`` of each path: the top CUDA kernels by total time, the
    GPU-busy time per step against the wall time, and the host syncs seen."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    out: dict[str, Any] = {}
    for path, backend in paths.items():
        try:
            step = make_step(path, cfg, device, backend)
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(n_steps):
                    step()
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) * 1e3 / n_steps
            kernels: dict[str, list[float]] = {}
            syncs = launches = 0
            for ev in prof.events():
                name = ev.name
                if ev.device_type == torch.autograd.DeviceType.CUDA:
                    tot = kernels.setdefault(name, [0.0, 0])
                    tot[0] += ev.time_range.elapsed_us()
                    tot[1] += 1
                elif "Synchronize" in name or name in ("cudaMemcpyAsync", "aten::item"):
                    syncs += name != "aten::item"
                elif name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"):
                    launches += 1
            busy = sum(v[0] for v in kernels.values()) / 1e3 / n_steps
            top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:15]
            out[path] = {
                "wall_ms_per_step (profiled)": wall,
                "gpu_busy_ms_per_step": busy,
                "launches_per_step": launches / n_steps,
                "sync_calls_per_step": syncs / n_steps,
                "top": [(nm[:90], v[0] / 1e3 / n_steps, v[1] // n_steps) for nm, v in top],
            }
        except Exception as err:  # a profiler problem must not lose the rest of the bench
            out[path] = {"error": f"{type(err).__name__}: {err}"[:400]}
        gc.collect()
        torch.cuda.empty_cache()
    for path, r in out.items():
        if "error" in r:
            print(f"\nprofile {path}: {r['error']}")
            continue
        print(
            f"\nprofile {path}: wall {r['wall_ms_per_step (profiled)']:.3f} ms/step, GPU busy "
            f"{r['gpu_busy_ms_per_step']:.3f} ms/step, {r['launches_per_step']:.0f} launches, "
            f"{r['sync_calls_per_step']:.1f} sync/memcpy calls per step"
        )
        for nm, ms, calls in r["top"]:
            print(f"  {ms:8.3f} ms {calls:4d}x  {nm}")
    return out


def run_cuda(args: argparse.Namespace) -> dict[str, Any]:
    from kernels import _bench_ops as ops_bench

    t0 = time.perf_counter()
    device = torch.device("cuda")
    triton_backend = get_backend(device)
    name, reason = backend_choice(device)
    print(
        f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
        f"backend: {name} ({reason})"
    )
    print("precision: fp32 parameters and Adam state, bf16 autocast (both paths)")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "backend": [name, reason],
        "configs": [],
        "precision": "fp32 params + Adam, bf16 autocast",
    }
    result["triton"] = ops_bench.triton_version()
    from kernels import triton_ops

    paths: dict[str, Backend | None] = {
        "dense": None,
        "kernels": triton_backend,
        "kernels+topk kernel": dataclasses.replace(
            triton_backend, topk_with_aux=functools.partial(triton_ops.topk_with_aux, kernel=True)
        ),
        # the other weight-gradient implementation than the dispatch default (see dispatch.py)
        "kernels+by-latent dW kernel": dataclasses.replace(
            triton_backend,
            sparse_t_dense=triton_ops.sparse_t_dense,
            sparse_t_dense_and_sums=triton_ops.sparse_t_dense_and_sums,
        ),
    }
    if args.profile:
        result["profile"] = profile_steps(CONFIGS[0], {p: paths[p] for p in ("dense", "kernels")})
    configs = CONFIGS[:1] if args.quick else CONFIGS
    for cfg in configs:
        if time.perf_counter() - t0 > args.budget_s:
            print(f"\nskipping d_sae={cfg[1]}: past the {args.budget_s:.0f} s budget")
            continue
        entry: dict[str, Any] = dict(zip(("d_in", "d_sae", "k", "batch"), cfg, strict=True))
        entry["ceilings"] = ops_bench.ceilings(cfg)
        entry["ops"] = ops_bench.bench_ops(cfg, triton_backend)
        steps = bench_steps(cfg, device, paths, args.iters, args.warmup)
        if not args.no_saelens:
            steps["saelens"] = saelens_step(cfg, device, args.iters, args.warmup)
        entry["steps"] = steps
        ops_bench.print_ops(cfg, entry["ceilings"], entry["ops"])
        print_steps(cfg, steps)
        print("BENCH_JSON_CONFIG " + json.dumps(entry, default=str), flush=True)  # if cut short
        result["configs"].append(entry)
    if args.no_sweep or time.perf_counter() - t0 > args.budget_s:
        print("\ntile sweep skipped" + ("" if args.no_sweep else " (past the time budget)"))
    else:
        result["tile_sweep"] = ops_bench.tile_sweep(CONFIGS[0])
        ops_bench.print_sweep(result["tile_sweep"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=20, help="timed steps per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiles)")
    p.add_argument("--quick", action="store_true", help="only the first size")
    p.add_argument(
        "--budget-s", type=float, default=200, help="skip remaining parts after this many seconds"
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the tile-size sweep")
    p.add_argument("--no-saelens", action="store_true", help="skip the SAELens step")
    p.add_argument("--profile", action="store_true", help="torch.profiler summary (first size)")
    p.add_argument("--cpu-iters", type=int, default=5, help="timed steps per path on CPU")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = run_cuda(args) if torch.cuda.is_available() else run_cpu(args)
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n(bench took {result['bench_seconds']} s)")
    print("BENCH_JSON " + json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
