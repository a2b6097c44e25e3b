"""``ActivationStore``: activations of one or more hooks over a token corpus, on disk.

Layout of a store directory::

    manifest.json            format, hooks and widths, dtype, model and data identity, shard index
    run.json                 the run manifest (config, seed, package versions, git commit, data hashes)
    shard_00000/
        <hook name>.npy      [rows, d] activations (bfloat16 is kept as its raw uint16 bits)
        token_ids.npy        [rows] int32    the token at each row
        seq_ids.npy          [rows] int64    the global index of the context the row came from
        positions.npy        [rows] int32    the row's position in that context
        contexts.npy         [seqs, context_size] int32: the shard's full token contexts

A shard holds whole contexts: shard ``i`` always holds contexts ``[i*S, (i+1)*S)``, so a killed
write resumes by writing exactly the shards the manifest does not list. Shards are written into a
temporary directory, checksummed, flushed and renamed; the manifest is replaced atomically after
each. Reads are memory-mapped; each shard's checksums are verified the first time it is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

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
        self._verified: set[int] = set()

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
        bad: list[tuple[int, str]] = []
        for pos in range(len(self.shards)) if shards is None else shards:
            problem = self._check_shard(pos)
            if problem:
                bad.append((self.shards[pos]["index"], problem))
        if bad:
            raise CorruptShardError(
                "corrupted shards in "
                + str(self.path)
                + ": "
                + "; ".join(f"{shard_dirname(i)}: {p}" for i, p in bad)
                + ". The other shards are intact. Delete the bad shard directories and run "
                "ActivationStore.write again with the same arguments to rewrite only those.",
                [i for i, _ in bad],
            )

    def _check_shard(self, pos: int) -> str | None:
        shard = self.shards[pos]
        folder = self.path / shard_dirname(shard["index"])
        for name, digest in shard["files"].items():
            f = folder / name
            if not f.exists():
                return f"{name} is missing"
            if sha256_file(f) != digest:
                return f"{name} does not match its sha256"
        self._verified.add(pos)
        return None

    def _array(self, pos: int, name: str) -> np.ndarray:
        if pos not in self._verified:
            self.verify([pos])
        return np.load(self.path / shard_dirname(self.shards[pos]["index"]) / name, mmap_mode="r")

    def _to_tensor(self, arr: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.view(torch.bfloat16) if self.manifest["dtype"] == "bfloat16" else t

    # ---- reading -------------------------------------------------------------------------------
    def shard_activations(self, shard: int, hook: str | None = None) -> Tensor:
        """All activations of one shard (position ``shard`` in the index), read into memory."""
        return self._to_tensor(np.array(self._array(shard, hook_filename(self._hook(hook)))))

    def rows(self, index: Tensor | np.ndarray | list[int], hook: str | None = None) -> StoreBatch:
        """Rows by global index (0 .. len-1), in the order given."""
        raw = np.asarray(index.cpu() if isinstance(index, Tensor) else index)
        if raw.size and raw.dtype.kind not in "iu":
            raise TypeError(f"row indices must be integers; got dtype {raw.dtype}")
        idx = raw.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(
                f"row indices must be in [0, {len(self)}); got {idx.min()}..{idx.max()}"
            )
        shard_pos = np.searchsorted(self._offsets, idx, side="right") - 1
        return self._gather(shard_pos, idx - self._offsets[shard_pos], self._hook(hook))

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

    def _gather(self, shard_pos: np.ndarray, local: np.ndarray, hook: str) -> StoreBatch:
        n = len(local)
        d = self.d(hook)
        np_dtype = (
            np.uint16 if self.manifest["dtype"] == "bfloat16" else np.dtype(self.manifest["dtype"])
        )
        acts = np.empty((n, d), dtype=np_dtype)
        meta = {k: np.empty(n, dtype=np.int64) for k in ("token_ids", "seq_ids", "positions")}
        for pos in np.unique(shard_pos):
            sel = np.nonzero(shard_pos == pos)[0]
            rows = local[sel]
            order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
            sorted_rows = rows[order]
            acts[sel[order]] = self._array(int(pos), hook_filename(hook))[sorted_rows]
            for k in meta:
                meta[k][sel[order]] = self._array(int(pos), f"{k}.npy")[sorted_rows]
        return StoreBatch(
            self._to_tensor(acts),
            *(torch.from_numpy(meta[k]) for k in ("token_ids", "seq_ids", "positions")),
        )

    def batches(
        self,
        batch_size: int,
        *,
        hook: str | None = None,
        seed: int = 0,
        shuffle: bool = True,
        epochs: int | None = 1,
        shuffle_shards: int = 4,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        with_meta: bool = False,
        skip: int = 0,
    ) -> Iterator[Tensor] | Iterator[StoreBatch]:
        """Batches of activation rows ``[batch_size, d]``, seeded and shuffled.

        Shuffling is two-level so memory stays bounded whatever the store's size: each epoch takes
        the shards in a seeded random order, ``shuffle_shards`` at a time, and draws rows from that
        window in a seeded random order. The same seed gives the same batches. ``epochs=None``
        repeats forever. With ``with_meta`` each batch is a :class:`StoreBatch` carrying the token
        ids, context ids and positions of its rows. ``skip`` passes over the first batches without
        reading them (a resumed training run continues the same sequence of batches).
        """
        if check_int(batch_size, "batch_size") < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        check_int(skip, "skip", minimum=0)
        check_device(device)
        check_dtype(dtype)
        hook = self._hook(hook)
        if not self.shards:
            raise StoreError(f"{self.path} has no shards yet: nothing to read")
        # Checked above when called, not at the first next(): the batches come from an inner loop.
        return self._batches(
            batch_size, hook, seed, shuffle, epochs, shuffle_shards, drop_last, device, dtype,
            with_meta, skip,
        )  # fmt: skip

    def _batches(
        self,
        batch_size: int,
        hook: str,
        seed: int,
        shuffle: bool,
        epochs: int | None,
        shuffle_shards: int,
        drop_last: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        with_meta: bool,
        skip: int,
    ) -> Iterator[Any]:
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
            pending_pos = np.empty(0, dtype=np.int64)
            pending_local = np.empty(0, dtype=np.int64)
            for w in range(0, len(order), max(1, shuffle_shards)):
                window = order[w : w + max(1, shuffle_shards)]
                pos = np.concatenate(
                    [np.full(self.shards[p]["rows"], p, dtype=np.int64) for p in window]
                )
                local = np.concatenate(
                    [np.arange(self.shards[p]["rows"], dtype=np.int64) for p in window]
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
                    yield self._emit(
                        pending_pos[s], pending_local[s], hook, device, dtype, with_meta
                    )
                pending_pos = pending_pos[n_full * batch_size :]
                pending_local = pending_local[n_full * batch_size :]
            if len(pending_pos) and not drop_last:
                if skip:
                    skip -= 1
                    epoch += 1
                    continue
                yield self._emit(pending_pos, pending_local, hook, device, dtype, with_meta)
            epoch += 1

    def _emit(
        self,
        pos: np.ndarray,
        local: np.ndarray,
        hook: str,
        device: Any,
        dtype: Any,
        with_meta: bool,
    ) -> Any:
        batch = self._gather(pos, local, hook)
        acts = batch.acts.to(device=device, dtype=dtype)
        if not with_meta:
            return acts
        return batch._replace(acts=acts)


if __name__ == "__main__":  # python -m interp.store write | info | verify ...
    from interp.store_cli import main

    raise SystemExit(main())
