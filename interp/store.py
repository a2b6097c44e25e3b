"""``ActivationStore``: activations of one or more hooks over a token corpus, on disk.

A store directory holds ``manifest.json`` (hooks and widths, dtype, model and data identity, the
shard index with each file's sha256), ``run.json`` and one ``shard_NNNNN/`` per shard: per hook
``<hook name>.npy`` ``[rows, d]`` (bfloat16 as raw uint16 bits), and ``token_ids.npy``,
``seq_ids.npy``, ``positions.npy`` ``[rows]`` and ``contexts.npy`` ``[seqs, context_size]``
(docs/store.md). A shard holds whole contexts: shard ``i`` always holds contexts
``[i*S, (i+1)*S)``, so a killed write resumes by writing exactly the shards the manifest does not
list. Shards are written into a temporary directory, checksummed, flushed and renamed; the manifest
is replaced atomically after each. Reads are memory-mapped, each file mapped once and checked
against its sha256 the first time this object reads it (never per batch);
:meth:`ActivationStore.batches` reads only the arrays asked for, ahead of the consumer in a
background thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import warnings
from collections import OrderedDict
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from interp._io import read_json, sha256_file
from interp.store_format import (
    DTYPES,
    FORMAT,
    MANIFEST,
    VERSION,
    CorruptShardError,
    StoreError,
    StoreMismatchError,
    hook_filename,
    shard_dirname,
)
from interp.validate import check_device, check_dtype, check_int, did_you_mean

__all__ = ["ActivationStore", "CorruptShardError", "StoreBatch", "StoreError", "StoreMismatchError"]

_META = ("token_ids", "seq_ids", "positions")
_CHUNK = 256  # rows per gather step: the staging buffer stays in the L2 cache
_MAX_OPEN = 128  # memory-mapped files kept open per store (each holds a file descriptor)
_THREAD = "mechscope-store-prefetch"
_VERIFY = "mechscope-store-verify"


class StoreBatch(NamedTuple):
    """One batch of rows: activations plus where each row came from."""

    acts: Tensor  # [batch, d]
    token_ids: Tensor  # [batch] int64
    seq_ids: Tensor  # [batch] int64
    positions: Tensor  # [batch] int64


class ActivationStore:
    """A read-only view of a store directory. Create one with :meth:`write`.

    >>> store = ActivationStore.write("runs/l15", model, "blocks.15.hook_resid_post", shakespeare())
    >>> for batch in store.batches(4096, seed=0):
    ...     train_step(batch)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise StoreError(f"{self.path} is not an activation store: it has no {MANIFEST}")
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{manifest_path} is not a mechscope activation store manifest")
        if self.manifest.get("version") != VERSION:
            raise StoreError(
                f"{manifest_path} has store format version {self.manifest.get('version')}; this mechscope reads {VERSION}"
            )
        self.shards: list[dict[str, Any]] = sorted(
            self.manifest["shards"], key=lambda s: s["index"]
        )
        self._offsets = np.cumsum([0] + [s["rows"] for s in self.shards])
        self._verified: set[tuple[int, str]] = set()  # (shard position, file) hashed so far
        self._maps: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[tuple[int, str], threading.Lock] = {}  # one per file being opened
        self._warming: set[tuple[int, str]] = set()  # files whose hashing has been started ahead

    # ---- writing -------------------------------------------------------------------------------
    @classmethod
    def write(
        cls, path: str | os.PathLike[str], model: Any, hooks: Any, corpus: Any, **kwargs: Any
    ) -> ActivationStore:
        """Write (or resume writing) a store; see :func:`interp.store_writer.write_store`."""
        from interp.store_writer import write_store

        return cls(write_store(path, model, hooks, corpus, **kwargs))

    # ---- description ---------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["dtype"]]

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def d(self, hook: str | None = None) -> int:
        return int(self.manifest["hooks"][self._hook(hook)]["d"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, hooks={self.hooks}, rows={len(self)}, "
            f"shards={len(self.shards)}, dtype={self.manifest['dtype']}, complete={self.complete})"
        )

    def _hook(self, hook: str | None) -> str:
        hooks = self.hooks
        if hook is None:
            if len(hooks) != 1:
                raise ValueError(f"this store holds several hooks {hooks}: name one with hook=")
            return hooks[0]
        if hook not in hooks:
            raise KeyError(
                f"hook {hook!r} is not in this store (it holds {hooks}){did_you_mean(hook, hooks)}"
            )
        return hook

    # ---- integrity -----------------------------------------------------------------------------
    def verify(self, shards: list[int] | None = None) -> None:
        """Check every file of the given shards (default: all) against its sha256."""
        positions = range(len(self.shards)) if shards is None else shards
        self._raise_if_bad([(pos, self._check_shard(pos)) for pos in positions], shards is None)

    def _check_shard(self, pos: int, names: list[str] | None = None) -> str | None:
        files = self.shards[pos]["files"]
        for name in files if names is None else names:
            if name not in files:
                return f"{name} is not listed in the manifest"
            f = self._file(pos, name)
            if not f.exists():
                return f"{name} is missing"
            if sha256_file(f) != files[name]:
                return f"{name} does not match its sha256"
            self._verified.add((pos, name))
        return None

    def _raise_if_bad(self, found: list[tuple[int, str | None]], everything: bool) -> None:
        bad = [(self.shards[pos]["index"], problem) for pos, problem in found if problem]
        if not bad:
            return
        raise CorruptShardError(
            f"corrupted shards in {self.path}: "
            + "; ".join(f"{shard_dirname(i)}: {p}" for i, p in bad)
            + (". The other shards are intact." if everything else " (store.verify() checks all).")
            + " Delete the bad shard directories and run ActivationStore.write again with the same "
            "arguments to rewrite only those.",
            [i for i, _ in bad],
        )

    def _file(self, pos: int, name: str) -> Path:
        return self.path / shard_dirname(self.shards[pos]["index"]) / name

    def _array(self, pos: int, name: str) -> np.ndarray:
        """One shard file, memory-mapped. Hashed the first time this object opens it, never per
        batch; kept open (up to _MAX_OPEN files, each holds a descriptor) because a fresh mapping
        page-faults on every page it touches."""
        key = (pos, name)
        with self._lock:  # the reading threads and the caller may all ask at once
            if (arr := self._mapped(key)) is not None:
                return arr
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one thread hashes and maps a file; the others wait for that file only
            with self._lock:
                if (arr := self._mapped(key)) is not None:
                    return arr
            if key not in self._verified:
                self._raise_if_bad([(pos, self._check_shard(pos, [name]))], everything=False)
            arr = np.load(self._file(pos, name), mmap_mode="r")
            with self._lock:
                self._maps[key] = arr
                if len(self._maps) > _MAX_OPEN:
                    self._maps.popitem(last=False)
        return arr

    def _mapped(self, key: tuple[int, str]) -> np.ndarray | None:
        arr = self._maps.get(key)
        if arr is not None:
            self._maps.move_to_end(key)
        return arr

    def _warm(self, positions: np.ndarray, names: list[str]) -> None:
        """Hash and map these shards' files in background threads (hashlib releases the GIL), so
        that where cores are free a first pass need not stop at each new shard for its sha256."""
        for key in ((int(p), n) for p in positions for n in names):
            if key not in self._warming:
                self._warming.add(key)
                threading.Thread(target=self._try_open, args=key, name=_VERIFY, daemon=True).start()

    def _try_open(self, pos: int, name: str) -> None:
        with contextlib.suppress(StoreError):  # the reader meets the error itself, at its batch
            self._array(pos, name)

    # ---- reading -------------------------------------------------------------------------------
    def shard_activations(self, shard: int, hook: str | None = None) -> Tensor:
        """All activations of one shard (position ``shard`` in the index), read into memory."""
        arr = np.array(self._array(shard, hook_filename(self._hook(hook))))
        t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if self.manifest["dtype"] == "bfloat16" else t

    def rows(self, index: Tensor | np.ndarray | list[int], hook: str | None = None) -> StoreBatch:
        """Rows by global index (0 .. len-1), in the order given, with their token ids, context ids
        and positions."""
        raw = np.asarray(index.cpu() if isinstance(index, Tensor) else index)
        if raw.size and raw.dtype.kind not in "iu":
            raise TypeError(f"row indices must be integers; got dtype {raw.dtype}")
        idx = raw.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(
                f"row indices must be in [0, {len(self)}); got {idx.min()}..{idx.max()}"
            )
        shard_pos = np.searchsorted(self._offsets, idx, side="right") - 1
        batch = self._gather(shard_pos, idx - self._offsets[shard_pos], self._hook(hook), True)
        return cast(StoreBatch, batch)

    def context(self, seq_id: int) -> Tensor:
        """The full token context ``[context_size]`` with global index ``seq_id``."""
        check_int(seq_id, "seq_id")
        for pos, shard in enumerate(self.shards):
            start, end = shard["sequences"]
            if start <= seq_id < end:
                return torch.from_numpy(
                    np.array(self._array(pos, "contexts.npy")[seq_id - start])
                ).long()
        raise IndexError(f"context {seq_id} is not in this store")

    def _gather(
        self, shard_pos: np.ndarray, local: np.ndarray, hook: str, meta: bool, pin: bool = False,
        parallel: bool = True,
    ) -> Tensor | StoreBatch:  # fmt: skip
        """Rows ``local[i]`` of shards ``shard_pos[i]``, in that order; metadata only if asked.

        ``parallel`` gathers with torch's index ops, which use every core (1.8x numpy's one-core
        ``take`` on 2 cores); a background reader passes False and leaves the other cores to the
        consumer (torch's pools in two threads spun against each other: 1.12 -> 0.79 M rows/s)."""
        acts, out = self._empty(len(local), self.d(hook), pin)
        ids = {k: np.empty(len(local), dtype=np.int64) for k in _META} if meta else {}
        dst = _raw(out)
        stage = torch.empty((min(_CHUNK, len(local)), out.shape[1]), dtype=dst.dtype)
        stage_np = stage.numpy()
        for pos in np.unique(shard_pos):
            sel = torch.from_numpy(np.flatnonzero(shard_pos == pos))
            rows = torch.from_numpy(local[sel.numpy()])  # unsorted: sorting cost 5% here
            src = _raw(self._array(int(pos), hook_filename(hook)))
            for a in range(0, len(rows), _CHUNK):
                n = min(_CHUNK, len(rows) - a)
                # gather into a small staging buffer, then scatter: both copies stay in cache;
                # torch's index ops use every core, numpy's take one (1.8x measured on 2 cores)
                if parallel:
                    torch.index_select(src, 0, rows[a : a + n], out=stage[:n])
                    dst.index_copy_(0, sel[a : a + n], stage[:n])
                else:
                    # "clip": with the default "raise" numpy buffers `out` (rows are in range)
                    idx = rows[a : a + n].numpy()
                    np.take(src.numpy(), idx, axis=0, out=stage_np[:n], mode="clip")
                    out.view(stage_np.dtype)[sel[a : a + n].numpy()] = stage_np[:n]
            for k, arr in ids.items():
                arr[sel.numpy()] = self._array(int(pos), f"{k}.npy")[rows.numpy()]
        return StoreBatch(acts, *(torch.from_numpy(ids[k]) for k in _META)) if meta else acts

    def _empty(self, n: int, d: int, pin: bool) -> tuple[Tensor, np.ndarray]:
        """A batch's tensor and a numpy view to gather into (raw uint16 bits for bfloat16)."""
        bf16 = self.dtype == torch.bfloat16
        if pin:  # torch's pinned-memory cache hands the same blocks back: no page faults
            acts = torch.empty((n, d), dtype=self.dtype, pin_memory=True)
            return acts, (acts.view(torch.int16).numpy().view(np.uint16) if bf16 else acts.numpy())
        # numpy asks for huge pages: a fresh 9 MB batch took 82 page faults here, torch.empty 1,105
        out = np.empty((n, d), dtype=np.uint16 if bf16 else np.dtype(self.manifest["dtype"]))
        acts = torch.from_numpy(out)
        return (acts.view(torch.bfloat16) if bf16 else acts), out

    def batches(
        self, batch_size: int, *, hook: str | None = None, seed: int = 0, shuffle: bool = True,
        epochs: int | None = 1, shuffle_shards: int = 4, drop_last: bool = False,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
        with_meta: bool = False, skip: int = 0, prefetch: int = 2, pin_memory: bool | None = None,
    ) -> Iterator[Tensor] | Iterator[StoreBatch]:  # fmt: skip
        """Batches of activation rows ``[batch_size, d]``, seeded and shuffled.

        Shuffling is two-level so memory stays bounded whatever the store's size: each epoch takes
        the shards in a seeded random order, ``shuffle_shards`` at a time, and draws rows from that
        window in a seeded random order. The same seed gives the same batches. ``epochs=None``
        repeats forever. With ``with_meta`` each batch is a :class:`StoreBatch` carrying the token
        ids, context ids and positions of its rows (read only then). ``skip`` passes over the first
        batches without reading them (a resumed training run continues the same sequence).

        ``prefetch`` batches are read ahead in a background thread (0: read in the caller's thread);
        the thread starts at the first ``next()`` and stops when the iterator is closed, exhausted
        or dropped; short-lived threads hash and map the files of this shard window and the next
        ahead of it. ``pin_memory`` (default: when ``device`` is a GPU, or is None in a process
        that has initialised CUDA, as a GPU trainer's) reads into page-locked memory so the copy to
        the GPU is asynchronous.
        """
        if check_int(batch_size, "batch_size") < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        check_int(skip, "skip", minimum=0)
        check_int(prefetch, "prefetch", minimum=0)
        dev = check_device(device)
        check_dtype(dtype)
        hook = self._hook(hook)
        if not self.shards:
            raise StoreError(f"{self.path} has no shards yet: nothing to read")
        pin = _pin(dev, pin_memory)
        on_cpu = dev is None or dev.type == "cpu"
        plan = itertools.islice(
            self._schedule(batch_size, seed, shuffle, epochs, shuffle_shards, drop_last), skip, None
        )
        # Everything above is checked when called; the reads start at the first next().
        files = [hook_filename(hook)] + ([f"{k}.npy" for k in _META] if with_meta else [])
        reads = (  # a dtype conversion on the CPU is done here, in the reading thread
            _move(
                self._gather(pos, local, hook, with_meta, pin, parallel=not prefetch),
                None,
                dtype if on_cpu else None,
            )
            for pos, local in self._warming_up(plan, files if prefetch else [])
        )
        return _deliver(reads, prefetch, None if on_cpu else dev, dtype)

    def _schedule(
        self, batch_size: int, seed: int, shuffle: bool, epochs: int | None, shuffle_shards: int,
        drop_last: bool,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
        """(shard position, row in shard) of each batch, in order, and the shards of this window
        and the next; reads nothing."""
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
            pending_pos = np.empty(0, dtype=np.int64)
            pending_local = np.empty(0, dtype=np.int64)
            for w in range(0, len(order), max(1, shuffle_shards)):
                window = order[w : w + max(1, shuffle_shards)]
                upcoming = order[w : w + 2 * max(1, shuffle_shards)]
                sizes = [self.shards[p]["rows"] for p in window]
                pos = np.repeat(np.asarray(window, dtype=np.int64), sizes)
                local = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
                perm = rng.permutation(len(pos)) if shuffle else np.arange(len(pos))
                pending_pos = np.concatenate([pending_pos, pos[perm]])
                pending_local = np.concatenate([pending_local, local[perm]])
                n_full = len(pending_pos) // batch_size
                for b in range(n_full):
                    s = slice(b * batch_size, (b + 1) * batch_size)
                    yield pending_pos[s], pending_local[s], upcoming
                pending_pos = pending_pos[n_full * batch_size :]
                pending_local = pending_local[n_full * batch_size :]
            if len(pending_pos) and not drop_last:
                yield pending_pos, pending_local, upcoming
            epoch += 1

    def _warming_up(self, plan: Iterator[Any], files: list[str]) -> Iterator[Any]:
        """The batches' (shard, row) arrays; each read first starts the hashing of its window's
        and the next window's files (the skipped batches of a resumed run start none)."""
        for pos, local, upcoming in plan:
            if files:
                self._warm(upcoming, files)
            yield pos, local


def _pin(device: torch.device | None, pin_memory: bool | None) -> bool:
    if pin_memory is None:
        if not torch.cuda.is_available():
            return False
        return device.type == "cuda" if device is not None else torch.cuda.is_initialized()
    if pin_memory and not torch.cuda.is_available():
        raise ValueError("pin_memory=True needs a CUDA GPU and torch sees none; leave it None")
    return bool(pin_memory)


def _move(batch: Any, device: Any, dtype: torch.dtype | None, non_blocking: bool = False) -> Any:
    if isinstance(batch, StoreBatch):
        return batch._replace(acts=_move(batch.acts, device, dtype, non_blocking))
    return batch.to(device=device, dtype=dtype, non_blocking=non_blocking)


def _deliver(
    reads: Generator[Any, None, None], prefetch: int, device: Any, dtype: torch.dtype | None
) -> Iterator[Any]:
    """The batches, read ahead by a thread if ``prefetch``; moved to ``device`` (a GPU) here, in
    the consumer's thread, so the copy is queued on the consumer's CUDA stream."""
    source = _ahead(reads, prefetch) if prefetch else reads
    try:
        for batch in source:
            yield batch if device is None else _move(batch, device, dtype, True)
    finally:  # on exhaustion, an error, close(), or when the caller drops the iterator
        source.close()


def _ahead(reads: Generator[Any, None, None], depth: int) -> Generator[Any, None, None]:
    """``reads`` run in a daemon thread, at most ``depth`` batches ahead; its errors are raised
    here. The thread holds no reference to this generator, so dropping it stops the thread."""
    out: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(reads, out, stop), name=_THREAD, daemon=True)
    thread.start()
    try:
        while (msg := out.get())[0] == "batch":
            yield msg[1]
        if msg[0] == "error":
            raise msg[1]
    finally:
        stop.set()
        if thread is not threading.current_thread():  # (a garbage collection run there)
            thread.join()


def _produce(
    source: Generator[Any, None, None], out: queue.Queue[tuple[str, Any]], stop: threading.Event
) -> None:
    try:
        for item in source:
            if not _put(out, stop, ("batch", item)):
                return
        _put(out, stop, ("end", None))
    except BaseException as e:  # handed to the consumer and raised there
        _put(out, stop, ("error", e))
    finally:
        source.close()


def _put(out: queue.Queue[tuple[str, Any]], stop: threading.Event, msg: tuple[str, Any]) -> bool:
    while not stop.is_set():  # a bounded wait, so a closed consumer never strands the thread
        with contextlib.suppress(queue.Full):
            out.put(msg, timeout=0.05)
            return True
    return False


if __name__ == "__main__":  # python -m interp.store write | info | verify ...
    from interp.store_cli import main

    raise SystemExit(main())


def _raw(arr: np.ndarray) -> Tensor:
    """A tensor over ``arr``'s memory, without a copy (bfloat16's uint16 bits as int16, which
    torch's index ops support). Read-only maps are only ever read here."""
    if arr.dtype == np.uint16:
        arr = arr.view(np.int16)
    with warnings.catch_warnings():  # torch warns that a read-only array is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)
