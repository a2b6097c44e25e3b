"""Activation-store read throughput: the reader before issue 18 against the current one, one run.

The store is read whole, page-cache warm, in shuffled batches (the default two-level shuffle:
4 shards a window), one epoch per timing, the same seed each time so both readers read the same
rows. The old reader is kept below verbatim (``_old_*``): per batch it memory-maps the hook file and
the three metadata files of every shard in the batch afresh (``np.load(mmap_mode="r")``, 16 maps for
a 4-shard window), and gathers the metadata even when only activations are asked for. Each round
times old, new (read in the caller's thread, ``prefetch=0``), new with the default prefetch thread,
and new ``with_meta=True``, interleaved so drift in machine speed hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.store_format import hook_filename, shard_dirname


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", type=Path, default=None, help="an existing store (default: build one)"
    )
    p.add_argument("--vectors", type=int, default=524_288, help="rows of the store built")
    p.add_argument("--d", type=int, default=576, help="width of the store built (SmolLM2-135M's)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5, help="rounds of one epoch per reader")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--step-ms", type=float, default=3.0,
        help="a busy consumer's time per batch (sleeping, as a GPU trainer's host thread waits)",
    )  # fmt: skip


# ---- the reader before issue 18, verbatim but for `self` -> `store` ----------------------------
def _old_array(store: Any, verified: set[int], pos: int, name: str) -> np.ndarray:
    if pos not in verified:
        store.verify([pos])
        verified.add(pos)
    return np.load(store.path / shard_dirname(store.shards[pos]["index"]) / name, mmap_mode="r")


def _old_to_tensor(store: Any, arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.view(torch.bfloat16) if store.manifest["dtype"] == "bfloat16" else t


def _old_gather(
    store: Any, verified: set[int], shard_pos: np.ndarray, local: np.ndarray, hook: str
) -> Any:
    from interp.store import StoreBatch

    n = len(local)
    d = store.d(hook)
    np_dtype = (
        np.uint16 if store.manifest["dtype"] == "bfloat16" else np.dtype(store.manifest["dtype"])
    )
    acts = np.empty((n, d), dtype=np_dtype)
    meta = {k: np.empty(n, dtype=np.int64) for k in ("token_ids", "seq_ids", "positions")}
    for pos in np.unique(shard_pos):
        sel = np.nonzero(shard_pos == pos)[0]
        rows = local[sel]
        order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
        sorted_rows = rows[order]
        acts[sel[order]] = _old_array(store, verified, int(pos), hook_filename(hook))[sorted_rows]
        for k in meta:
            meta[k][sel[order]] = _old_array(store, verified, int(pos), f"{k}.npy")[sorted_rows]
    return StoreBatch(
        _old_to_tensor(store, acts),
        *(torch.from_numpy(meta[k]) for k in ("token_ids", "seq_ids", "positions")),
    )


def _old_emit(
    store: Any, verified: set[int], pos: np.ndarray, local: np.ndarray, hook: str, with_meta: bool
) -> Any:
    batch = _old_gather(store, verified, pos, local, hook)
    acts = batch.acts.to(device=None, dtype=None)
    if not with_meta:
        return acts
    return batch._replace(acts=acts)


def old_batches(
    store: Any,
    batch_size: int,
    *,
    hook: str | None = None,
    seed: int = 0,
    shuffle: bool = True,
    epochs: int | None = 1,
    shuffle_shards: int = 4,
    drop_last: bool = False,
    with_meta: bool = False,
    skip: int = 0,
    verified: set[int] | None = None,
) -> Iterator[Any]:
    """The old ``ActivationStore.batches`` on the CPU (its ``_batches``; device and dtype None)."""
    hook, verified = store._hook(hook), set() if verified is None else verified
    epoch = 0
    while epochs is None or epoch < epochs:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(store.shards)) if shuffle else np.arange(len(store.shards))
        pending_pos = np.empty(0, dtype=np.int64)
        pending_local = np.empty(0, dtype=np.int64)
        for w in range(0, len(order), max(1, shuffle_shards)):
            window = order[w : w + max(1, shuffle_shards)]
            pos = np.concatenate(
                [np.full(store.shards[p]["rows"], p, dtype=np.int64) for p in window]
            )
            local = np.concatenate(
                [np.arange(store.shards[p]["rows"], dtype=np.int64) for p in window]
            )
            perm = rng.permutation(len(pos)) if shuffle else np.arange(len(pos))
            pending_pos = np.concatenate([pending_pos, pos[perm]])
            pending_local = np.concatenate([pending_local, local[perm]])
            n_full = len(pending_pos) // batch_size
            for b in range(n_full):
                if skip:
                    skip -= 1
                    continue
                s = slice(b * batch_size, (b + 1) * batch_size)
                yield _old_emit(store, verified, pending_pos[s], pending_local[s], hook, with_meta)
            pending_pos = pending_pos[n_full * batch_size :]
            pending_local = pending_local[n_full * batch_size :]
        if len(pending_pos) and not drop_last:
            if skip:
                skip -= 1
                epoch += 1
                continue
            yield _old_emit(store, verified, pending_pos, pending_local, hook, with_meta)
        epoch += 1


# ---- the measurement ---------------------------------------------------------------------------
def build_store(path: Path, vectors: int, d: int, dtype: str) -> Any:
    """A store of ``vectors`` rows of width ``d`` (``hook_embed`` of a random model: the bytes, not
    their meaning, are what a read costs), 65,536 rows a shard."""
    from interp.random_models import random_model
    from interp.store import ActivationStore

    model = random_model(
        n_layers=1, d_model=d, n_heads=1, d_head=d, d_mlp=8, d_vocab=4096, n_ctx=128
    )
    gen = torch.Generator().manual_seed(0)
    contexts = (torch.randint(0, 4096, (128,), generator=gen) for _ in range(-(-vectors // 128)))
    return ActivationStore.write(
        path, model, "hook_embed", contexts, context_size=128, shard_tokens=65_536,
        dtype=getattr(torch, dtype), progress=False,
    )  # fmt: skip


def _epoch(batches: Iterator[Any]) -> tuple[float, int, float]:
    """Wall seconds, vectors, and CPU seconds of this process (all its threads)."""
    t, cpu, n = time.perf_counter(), time.process_time(), 0
    for b in batches:
        n += len(b if isinstance(b, torch.Tensor) else b.acts)
    return time.perf_counter() - t, n, time.process_time() - cpu


def _busy(store: Any, args: argparse.Namespace, prefetch: int) -> dict[str, float]:
    """A consumer that spends ``--step-ms`` on each batch: how long its ``next()`` waits."""
    it = store.batches(args.batch, seed=args.seed, prefetch=prefetch)
    waits, t0 = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        if next(it, None) is None:
            break
        waits.append(time.perf_counter() - t)
        time.sleep(args.step_ms / 1e3)
    seconds = time.perf_counter() - t0
    return {  # the first next() always waits: the thread starts there
        "wait_ms_per_batch": 1e3 * statistics.mean(waits[1:] or waits),
        "vectors_per_s": len(store) / seconds,
    }


def _readers(old: Any, new: Any, args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    kw = {"seed": args.seed}
    verified: set[int] = set()
    return {
        "old": lambda: old_batches(old, args.batch, verified=verified, **kw),
        "new, prefetch=0": lambda: new.batches(args.batch, prefetch=0, **kw),
        "new (prefetch=2)": lambda: new.batches(args.batch, **kw),
        "new, with_meta": lambda: new.batches(args.batch, with_meta=True, prefetch=0, **kw),
    }


def _first_epochs(path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Vectors/s of each reader's first epoch on a freshly opened store: the sha256 of every file
    it reads included (inline for the old reader and prefetch=0, ahead in threads otherwise)."""
    from interp.store import ActivationStore

    rates = {}
    for k in ("old", "new, prefetch=0", "new (prefetch=2)"):
        store = ActivationStore(path)
        seconds, n, _ = _epoch(_readers(store, store, args)[k]())
        rates[k] = n / seconds
    return rates


def measure(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from interp.store import ActivationStore

    first = _first_epochs(path, args)
    old, new = ActivationStore(path), ActivationStore(path)
    readers = _readers(old, new, args)
    same = all(  # also hashes and maps every file for the timed epochs that follow
        torch.equal(a, b)
        for a, b in zip(readers["old"](), readers["new, prefetch=0"](), strict=True)
    )
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in readers}
    cpu: dict[str, list[float]] = {k: [] for k in readers}
    vectors = 0
    for _ in range(args.repeats):
        for k, make in readers.items():
            seconds, vectors, cpu_seconds = _epoch(make())
            times[k].append(seconds)
            cpu[k].append(cpu_seconds)
    busy = {p: [_busy(new, args, p) for _ in range(args.repeats)] for p in (0, 2)}
    load_after = os.getloadavg()
    rate = {k: vectors / statistics.median(v) for k, v in times.items()}
    consumer = {
        f"prefetch={p}": {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for p, runs in busy.items()
    }
    return {
        "store": str(path), "rows": len(new), "shards": len(new.shards), "d": new.d(),
        "dtype": new.manifest["dtype"], "batch": args.batch, "vectors_per_epoch": vectors,
        "repeats": args.repeats, "identical_batches": same,
        "first_epoch_vectors_per_s": first,
        "vectors_per_s": rate,
        "vectors_per_cpu_s": {k: vectors / statistics.median(v) for k, v in cpu.items()}, "ratio_new_over_old": rate["new, prefetch=0"] / rate["old"],
        "ratio_per_round": [o / n for o, n in zip(times["old"], times["new, prefetch=0"], strict=True)],
        "busy_consumer": {"step_ms": args.step_ms, **consumer},
        "loadavg_before": load_before, "loadavg_after": load_after,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip


def _report(r: dict[str, Any]) -> None:
    print(
        f"# interp.bench store-read: {r['rows']:,} rows x d {r['d']} {r['dtype']} in {r['shards']} "
        f"shards, batches of {r['batch']}, {r['vectors_per_epoch']:,} vectors an epoch, median of "
        f"{r['repeats']} epochs each; {r['cpus']} CPUs, torch threads {r['torch_threads']}"
    )
    print(f"load average before {_load(r['loadavg_before'])}, after {_load(r['loadavg_after'])}")
    for k, v in r["vectors_per_s"].items():
        per_cpu = r["vectors_per_cpu_s"][k] / 1e6
        print(f"{k:<20} {v / 1e6:6.2f} M vectors/s   ({per_cpu:.2f} M per CPU-second)")
    rounds = r["ratio_per_round"]
    print(
        f"new / old            {r['ratio_new_over_old']:6.2f} x  (per round {min(rounds):.2f}..{max(rounds):.2f})"
    )
    first = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in r["first_epoch_vectors_per_s"].items())
    print(f"first epoch after open (sha256 of the files read included): {first} M vectors/s")
    print(f"old and new batches bit-identical: {r['identical_batches']}")
    busy = r["busy_consumer"]
    for k in ("prefetch=0", "prefetch=2"):
        print(
            f"consumer busy {busy['step_ms']:g} ms a batch, {k}: waits {busy[k]['wait_ms_per_batch']:.2f} "
            f"ms a batch in next(), {busy[k]['vectors_per_s'] / 1e6:.2f} M vectors/s"
        )


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


def run(args: argparse.Namespace) -> int:
    if min(args.vectors, args.d, args.batch, args.repeats) < 1:
        raise SystemExit("--vectors, --d, --batch and --repeats must be positive")
    if args.store is not None:
        result = measure(args.store, args)
    else:
        with tempfile.TemporaryDirectory(prefix="store-read-") as tmp:
            t = time.perf_counter()
            build_store(Path(tmp) / "store", args.vectors, args.d, args.dtype)
            print(f"built a {args.vectors:,}-row store in {time.perf_counter() - t:.1f} s")
            result = measure(Path(tmp) / "store", args)
    _report(result)
    print(json.dumps(result))
    return 0
