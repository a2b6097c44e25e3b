"""Writing an :class:`~interp.store.ActivationStore`: one pass over a corpus, resumable, crash-safe.

Use it through :meth:`ActivationStore.write <interp.store.ActivationStore.write>`, which opens the
directory :func:`write_store` returns; this module imports only the format, never the reader.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp._io import atomic_write_json, fsync_dir, read_json, remove_tree, sha256_file
from interp.cache import cache_activations
from interp.core.forward import rows_for
from interp.corpus import Corpus, token_sequences
from interp.hooks import HookSpec, TLModel, resolve_hooks
from interp.manifest import write_run_manifest
from interp.recipe import recipe
from interp.store_format import (
    FORMAT,
    MANIFEST,
    VERSION,
    StoreError,
    StoreMismatchError,
    dtype_name,
    hook_filename,
    shard_dirname,
)
from interp.validate import check_context, check_int

__all__ = ["write_store"]

log = logging.getLogger(__name__)

# Fields that must agree for a resumed write to continue an existing store.
_IDENTITY = (
    "hooks",
    "dtype",
    "context_size",
    "sequences_per_shard",
    "prepend_bos",
    "drop_bos",
    "max_sequences",
    "model",
    "data",
    "tokenizer",
)


_STORE_CLASS = "interp.store:ActivationStore"


def write_store(
    path: str | os.PathLike[str],
    model: TLModel,
    hooks: HookSpec,
    corpus: Corpus | Iterable[Tensor],
    *,
    context_size: int = 128,
    max_tokens: int | None = None,
    forward_max_tokens: int = 1024,
    shard_tokens: int = 65536,
    dtype: torch.dtype = torch.float32,
    drop_bos: bool = True,
    device: torch.device | str | None = None,
    model_name: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the activations of ``hooks`` over ``corpus`` into a store at ``path``, or resume one.

    Args:
        corpus: a :class:`~interp.corpus.Corpus` (tokenized with the model's tokenizer into contexts
            of ``context_size``), or an iterable of ready token contexts (1-D tensors).
        max_tokens: stop after this many tokens (whole contexts; rounded up).
        forward_max_tokens: the batching knob, tokens per forward pass: ``forward_max_tokens //
            context_size`` contexts (at least one). Named apart from ``max_tokens``, the total.
        shard_tokens: target tokens per shard; a shard holds ``shard_tokens // context_size`` contexts.
        dtype: storage dtype (float32, float16, bfloat16).
        drop_bos: leave out position 0 when contexts start with BOS (its activations are outliers
            that no SAE should train on).
        model_name: recorded in the manifest (default: ``model.cfg.model_name``).
        progress: a tqdm bar over tokens written (resumed shards count at once).

    Calling it again with the same arguments on a killed store writes only the missing shards; on
    a complete store it returns at once. Different arguments raise :class:`StoreMismatchError`.
    Returns the store's directory.
    """
    # Every argument, before any is consumed: what `python -m interp replay PATH` reruns.
    rec = recipe(write_store, (), dict(locals())) | {"load": _STORE_CLASS, "output": "path"}
    path = Path(path)
    check_int(forward_max_tokens, "forward_max_tokens", minimum=1)
    names = resolve_hooks(model, hooks)
    prepend_bos = isinstance(corpus, Corpus)
    spec = _store_spec(
        model,
        names,
        corpus,
        context_size,
        max_tokens,
        shard_tokens,
        dtype,
        drop_bos and prepend_bos,
        prepend_bos,
        model_name,
    )
    path.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):
        manifest = _open_or_create(path, spec)
        if manifest["complete"]:
            return path
        _discard_uncommitted(path, manifest)
        done = {s["index"]: s for s in manifest["shards"]}
        seqs = _sequences(model, corpus, context_size, prepend_bos, spec["max_sequences"])
        n_seq = 0
        bar = _progress_bar(progress, spec, path)
        try:
            for index, chunk in _chunks(seqs, spec["sequences_per_shard"]):
                n_seq += len(chunk)
                if index in done:
                    _check_same_tokens(path, done[index], chunk)
                    bar.update(len(chunk) * context_size)
                    continue
                entry = _write_shard(
                    path, model, names, index, chunk, spec, forward_max_tokens, dtype, device
                )
                manifest["shards"].append(entry)
                manifest["shards"].sort(key=lambda s: s["index"])
                atomic_write_json(path / MANIFEST, manifest)
                bar.update(len(chunk) * context_size)
                bar.set_postfix_str(f"{len(manifest['shards'])} shards")
        finally:
            bar.close()
        manifest["complete"] = True
        manifest["n_sequences"] = n_seq
        manifest["n_rows"] = sum(s["rows"] for s in manifest["shards"])
        if isinstance(corpus, Corpus):  # the documents actually read, and their hash
            manifest["data"]["documents_read"] = corpus.documents_read
            manifest["data"]["sha256"] = corpus.sha256
        atomic_write_json(path / MANIFEST, manifest)
        write_run_manifest(
            path,
            kind="activation-store",
            seed=seed,
            config={k: spec[k] for k in _IDENTITY if k not in ("model", "data")}
            | {"forward_max_tokens": forward_max_tokens},
            data={"corpus": manifest["data"], "model": spec["model"]},
            extra={"replay": rec},
        )
    return path


def _progress_bar(progress: bool, spec: dict[str, Any], path: Path) -> Any:
    from tqdm.auto import tqdm

    n = spec["max_sequences"]
    total = None if n is None else n * spec["context_size"]
    return tqdm(
        total=total, desc=f"store {path.name}", unit="tok", unit_scale=True, disable=not progress
    )


def _store_spec(
    model: TLModel,
    names: list[str],
    corpus: Any,
    context_size: int,
    max_tokens: int | None,
    shard_tokens: int,
    dtype: torch.dtype,
    drop_bos: bool,
    prepend_bos: bool,
    model_name: str | None,
) -> dict[str, Any]:
    from interp.models import model_fingerprint

    if context_size < 2 or shard_tokens < context_size:
        raise ValueError(
            f"need 2 <= context_size <= shard_tokens; got {context_size} and {shard_tokens}"
        )
    check_context(context_size, model.cfg.n_ctx, what="context_size")
    widths = _hook_widths(model, names, context_size)
    tok = getattr(model, "tokenizer", None)
    return {
        "hooks": {n: {"d": d} for n, d in widths.items()},
        "dtype": dtype_name(dtype),
        "context_size": context_size,
        "sequences_per_shard": shard_tokens // context_size,
        "prepend_bos": prepend_bos,
        "drop_bos": drop_bos,
        "max_sequences": None if max_tokens is None else math.ceil(max_tokens / context_size),
        "model": {
            "name": model_name or getattr(model.cfg, "model_name", None),
            "fingerprint": model_fingerprint(model),
        },
        "data": corpus.describe() if isinstance(corpus, Corpus) else {"name": "token-contexts"},
        "tokenizer": None
        if tok is None
        else {"name": getattr(tok, "name_or_path", None), "vocab_size": len(tok)},
    }


def _hook_widths(model: TLModel, names: list[str], context_size: int) -> dict[str, int]:
    """Width of each hook's activation per position, from one tiny forward pass."""
    probe = torch.zeros((1, min(context_size, 4)), dtype=torch.long, device=model.cfg.device)
    cache = cache_activations(model, probe, names)
    widths = {}
    for n in names:
        act = cache[n]
        if act.ndim < 2 or act.shape[1] != probe.shape[1]:
            raise ValueError(
                f"hook {n} has shape {tuple(act.shape)}: a store needs [batch, pos, ...] activations"
            )
        widths[n] = int(np.prod(act.shape[2:])) if act.ndim > 2 else 1
    return widths


def _open_or_create(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not mpath.exists():
        if any(p.name.startswith("shard_") for p in path.iterdir()):
            raise StoreError(
                f"{path} holds shards but no {MANIFEST}: refusing to overwrite it; choose an empty directory"
            )
        manifest = {"format": FORMAT, "version": VERSION, **spec, "complete": False, "shards": []}
        atomic_write_json(mpath, manifest)
        return manifest
    manifest = read_json(mpath)
    if manifest.get("format") != FORMAT:
        raise StoreError(
            f"{mpath} is not a mechscope activation store manifest; choose another directory"
        )
    diffs = []
    for key in _IDENTITY:
        old, new = manifest.get(key), spec[key]
        if key == "data" and isinstance(old, dict):
            old = {k: v for k, v in old.items() if k not in ("sha256", "documents_read")}
        if old != new:
            diffs.append(f"{key}: the store has {_short(old)}, this call asks for {_short(new)}")
    if diffs:
        raise StoreMismatchError(
            f"{path} was written with different settings, so it cannot be continued:\n  - "
            + "\n  - ".join(diffs)
            + "\nWrite to a new directory, or call again with the store's settings."
        )
    return manifest


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 160 else text[:157] + "..."


def _discard_uncommitted(path: Path, manifest: dict[str, Any]) -> None:
    """Remove temporary shard directories and shards renamed but never entered in the manifest."""
    committed = {shard_dirname(s["index"]) for s in manifest["shards"]}
    for p in path.iterdir():
        if p.is_dir() and (
            p.name.startswith(".tmp-") or (p.name.startswith("shard_") and p.name not in committed)
        ):
            log.info("discarding uncommitted %s", p.name)
            remove_tree(p)


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    with open(path / ".write.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another process is writing {path}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sequences(
    model: TLModel, corpus: Any, context_size: int, prepend_bos: bool, max_sequences: int | None
) -> Iterator[Tensor]:
    if isinstance(corpus, Corpus):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise ValueError(
                "the model has no tokenizer: pass token contexts instead of a text corpus"
            )
        source: Iterable[Tensor] = token_sequences(
            corpus, tok, context_size, prepend_bos=prepend_bos
        )
    else:
        source = corpus
    for i, seq in enumerate(source):
        if max_sequences is not None and i >= max_sequences:
            return
        seq = torch.as_tensor(seq)
        if seq.shape != (context_size,):
            raise ValueError(
                f"token context {i} has shape {tuple(seq.shape)}; expected ({context_size},)"
            )
        yield seq


def _chunks(seqs: Iterator[Tensor], size: int) -> Iterator[tuple[int, list[Tensor]]]:
    chunk: list[Tensor] = []
    index = 0
    for s in seqs:
        chunk.append(s)
        if len(chunk) == size:
            yield index, chunk
            index, chunk = index + 1, []
    if chunk:
        yield index, chunk


def _check_same_tokens(path: Path, entry: dict[str, Any], chunk: list[Tensor]) -> None:
    stored = np.load(path / shard_dirname(entry["index"]) / "contexts.npy", mmap_mode="r")
    if stored.shape[0] != len(chunk) or not np.array_equal(stored, torch.stack(chunk).numpy()):
        raise StoreMismatchError(
            f"{shard_dirname(entry['index'])} of {path} was written from different tokens than this corpus "
            "yields now: the data changed. Write to a new directory."
        )


def _write_shard(
    path: Path,
    model: TLModel,
    names: list[str],
    index: int,
    chunk: list[Tensor],
    spec: dict[str, Any],
    max_tokens: int,
    dtype: torch.dtype,
    device: Any,
) -> dict[str, Any]:
    contexts = torch.stack(chunk)  # [seqs, context_size]
    first = 1 if spec["drop_bos"] else 0
    per_seq = spec["context_size"] - first
    n_rows = len(chunk) * per_seq
    np_dtype = np.uint16 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
    acts = {n: np.empty((n_rows, spec["hooks"][n]["d"]), dtype=np_dtype) for n in names}
    model_device = model.cfg.device
    size = rows_for(max_tokens, spec["context_size"])
    for start in range(0, len(chunk), size):
        toks = contexts[start : start + size].to(model_device)
        cache = cache_activations(
            model, toks, names, positions=slice(first, None), dtype=dtype, device="cpu"
        )
        rows = slice(start * per_seq, (start + len(toks)) * per_seq)
        for n in names:
            a = cache[n].reshape(len(toks) * per_seq, -1)
            acts[n][rows] = (a.view(torch.uint16) if dtype == torch.bfloat16 else a).numpy()
    seq_start = index * spec["sequences_per_shard"]
    positions = np.tile(np.arange(first, spec["context_size"], dtype=np.int32), len(chunk))
    meta: dict[str, np.ndarray] = {
        "token_ids.npy": contexts[:, first:].reshape(-1).numpy().astype(np.int32),
        "seq_ids.npy": np.repeat(
            np.arange(seq_start, seq_start + len(chunk), dtype=np.int64), per_seq
        ),
        "positions.npy": positions,
        "contexts.npy": contexts.numpy().astype(np.int32),
    }
    tmp = path / f".tmp-{shard_dirname(index)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    files = {}
    arrays: list[tuple[str, np.ndarray]] = [
        *((hook_filename(n), a) for n, a in acts.items()),
        *meta.items(),
    ]
    for name, arr in arrays:
        with open(tmp / name, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        files[name] = sha256_file(tmp / name)
    fsync_dir(tmp)
    os.rename(tmp, path / shard_dirname(index))
    fsync_dir(path)
    return {
        "index": index,
        "sequences": [seq_start, seq_start + len(chunk)],
        "rows": n_rows,
        "files": files,
    }
