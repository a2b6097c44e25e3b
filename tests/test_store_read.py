"""The store reader (issue 18): the same batches as before, only the arrays asked for, each file
mapped and hashed once per open, and a prefetching iterator that never strands its thread."""

import contextlib
import gc
import hashlib
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from test_store import HOOK, write

import interp.store as store_module
from interp.bench.store_read import old_batches
from interp.store import ActivationStore, CorruptShardError, StoreBatch

# What the reader before issue 18 returned on the 60-row, 4-shard store of ``write`` (18, 18, 18
# and 6 rows): batch sizes and the sha256 of the global row order (seq_id * 6 + position), saved
# from that code. The layout, not the model, fixes these, so they hold on every backend.
GOLDEN = [
    ({"batch_size": 7, "seed": 3}, [7] * 8 + [4], "7cac53467909b510"),
    ({"batch_size": 7, "seed": 3, "epochs": 3, "shuffle_shards": 2}, ([7] * 8 + [4]) * 3,
     "93e4417ade24b406"),
    ({"batch_size": 5, "seed": 11, "epochs": 2, "shuffle_shards": 1, "drop_last": True}, [5] * 24,
     "40d782d0a7ccd4ef"),
    ({"batch_size": 8, "seed": 0, "shuffle": False, "epochs": 2}, ([8] * 7 + [4]) * 2,
     "f91a08cfe68a0d15"),
    ({"batch_size": 7, "seed": 5, "epochs": 2, "skip": 11}, [7] * 6 + [4], "6d711e27774e2b5d"),
]  # fmt: skip


_OLDER: set[threading.Thread] = set()  # threads other tests left behind: not this test's


@pytest.fixture(autouse=True)
def _threads_before():
    gc.collect()
    for t in threading.enumerate():  # hashing-ahead threads are finite: let them finish
        if t.name == store_module._VERIFY:
            t.join()
    _OLDER.clear()
    _OLDER.update(threading.enumerate())


def prefetch_threads(names=(store_module._THREAD,)):
    return [t for t in threading.enumerate() if t.name in names and t not in _OLDER]


def join_verify_threads():
    for t in prefetch_threads((store_module._VERIFY,)):
        t.join()


def wait_for_no_thread(timeout=5.0):
    deadline = time.time() + timeout
    while prefetch_threads() and time.time() < deadline:
        gc.collect()
        time.sleep(0.01)
    return prefetch_threads() == []


@pytest.fixture()
def store(tmp_path, tiny_model):
    return write(tmp_path / "s", tiny_model)


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize(("cfg", "sizes", "digest"), GOLDEN)
def test_row_order_is_the_one_saved_from_the_old_reader(store, cfg, sizes, digest, prefetch):
    got = [
        b.seq_ids * 6 + b.positions for b in store.batches(**cfg, with_meta=True, prefetch=prefetch)
    ]
    assert [len(b) for b in got] == sizes
    flat = torch.cat(got).numpy().astype(np.int64)
    assert hashlib.sha256(flat.tobytes()).hexdigest()[:16] == digest


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("cfg", "_sizes", "_digest"), GOLDEN)
def test_batches_are_bit_identical_to_the_old_reader(
    tmp_path, tiny_model, dtype, cfg, _sizes, _digest
):
    store = write(tmp_path / "s", tiny_model, dtype=dtype)
    old = list(old_batches(store, **cfg, with_meta=True))
    for with_meta in (False, True):
        for prefetch in (0, 2):
            new = list(store.batches(**cfg, with_meta=with_meta, prefetch=prefetch))
            assert len(new) == len(old)
            for a, b in zip(old, new, strict=True):
                if not with_meta:  # activations only: a plain tensor, no metadata read
                    assert isinstance(b, torch.Tensor)
                    b = StoreBatch(b, a.token_ids, a.seq_ids, a.positions)
                assert b.acts.dtype == dtype
                assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_rows_equal_the_shuffled_batches(store):
    """Each batch equals random access to the same global rows."""
    for b in store.batches(7, seed=2, epochs=2, with_meta=True):
        again = store.rows(b.seq_ids * 6 + b.positions)
        assert all(torch.equal(x, y) for x, y in zip(b, again, strict=True))


def test_metadata_is_read_only_when_asked_for(store):
    first = next(store.batches(7, seed=1, shuffle_shards=4, prefetch=0))
    assert isinstance(first, torch.Tensor)
    assert {name for _, name in store._maps} == {f"{HOOK}.npy"}  # no token ids, seq ids, positions
    next(store.batches(7, seed=1, with_meta=True, prefetch=0))
    assert {name for _, name in store._maps} == {
        f"{HOOK}.npy", "token_ids.npy", "seq_ids.npy", "positions.npy"
    }  # fmt: skip


def test_each_file_is_mapped_and_hashed_once_per_open(store, monkeypatch):
    loads, hashes = [], []
    real_load, real_hash = np.load, store_module.sha256_file
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(store_module, "sha256_file", lambda p: hashes.append(p) or real_hash(p))
    fresh = ActivationStore(store.path)
    n = sum(1 for _ in fresh.batches(5, seed=0, epochs=3))  # 36 batches over 4 shards
    assert n == 36 and len(loads) == 4 and len(hashes) == 4  # once per shard, not per batch
    list(fresh.batches(5, seed=1, with_meta=True))
    assert len(loads) == len(hashes) == 4 + 4 * 3  # the metadata files, once each
    fresh.verify()  # an explicit verify checks every file again
    assert len(hashes) == 16 + 4 * 5
    list(ActivationStore(store.path).batches(60))  # a new open hashes again
    assert len(hashes) == 36 + 4


def test_a_corrupted_shard_is_caught_when_first_opened(store, monkeypatch):
    f = store.path / "shard_00002" / f"{HOOK}.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    hashes = []
    real_hash = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: hashes.append(p) or real_hash(p))
    fresh = ActivationStore(store.path)
    read = []
    with pytest.raises(
        CorruptShardError, match=r"shard_00002: blocks.1.hook_resid_post.npy does not match"
    ) as err:
        for b in fresh.batches(3, shuffle=False, prefetch=2):  # shards in order: 0, 1, then 2
            read.append(b)
    assert err.value.shards == [2] and len(read) == 12  # shards 0 and 1 were read whole
    assert wait_for_no_thread()
    join_verify_threads()
    # one hash per file, none per batch; the bad file twice: ahead of the reads, then by the reader
    assert Counter(p.parent.name for p in hashes) == {
        "shard_00000": 1, "shard_00001": 1, "shard_00002": 2, "shard_00003": 1
    }  # fmt: skip
    with pytest.raises(CorruptShardError, match="shard_00002"):
        fresh.rows([40])  # still refused: a failed file is never marked verified
    assert torch.equal(fresh.rows([0]).acts, read[0][:1])


def test_files_are_hashed_a_window_ahead_but_not_for_skipped_batches(store, monkeypatch):
    want = store.rows(np.arange(18, 21)).acts
    hashes = []
    real_hash = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: hashes.append(p) or real_hash(p))
    fresh = ActivationStore(store.path)
    it = fresh.batches(3, shuffle=False, shuffle_shards=1, skip=6)  # 6 batches = all of shard 0
    assert torch.equal(next(it), want)
    join_verify_threads()
    assert sorted(p.parent.name for p in hashes) == ["shard_00001", "shard_00002"]
    it.close()


def test_prefetched_batches_equal_plain_ones_and_the_thread_ends(store):
    plain = list(store.batches(4, seed=9, epochs=2, prefetch=0))
    ahead = store.batches(4, seed=9, epochs=2, prefetch=3)
    assert prefetch_threads() == []  # nothing starts before the first next()
    assert all(torch.equal(a, b) for a, b in zip(plain, list(ahead), strict=True))
    assert wait_for_no_thread()  # exhausted: the thread has ended


def test_breaking_early_stops_the_thread(store):
    it = store.batches(2, seed=0, epochs=None, prefetch=2)  # endless
    for i, _ in enumerate(it):
        if i == 3:
            break
    assert len(prefetch_threads()) == 1  # the iterator is still held: it could go on
    del it
    assert wait_for_no_thread()
    with contextlib.closing(store.batches(2, epochs=None)) as it2:
        next(it2)
    assert prefetch_threads() == []  # closed on leaving the block


def test_an_exception_in_the_consumer_stops_the_thread(store):
    def consume():
        for _ in store.batches(2, seed=0, epochs=None):
            raise RuntimeError("training step failed")

    with pytest.raises(RuntimeError, match="training step failed"):
        consume()
    assert wait_for_no_thread()
    it = store.batches(2, epochs=None)
    next(it)
    it.close()  # an explicit close joins the thread at once
    assert prefetch_threads() == []


def test_bounded_open_maps_still_give_the_same_batches(store, monkeypatch):
    want = list(store.batches(5, seed=4, epochs=2))
    monkeypatch.setattr(store_module, "_MAX_OPEN", 2)
    small = ActivationStore(store.path)
    got = list(small.batches(5, seed=4, epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert len(small._maps) <= 2


def test_dtype_conversion_is_done_by_the_reader(store):
    a = list(store.batches(8, seed=1, dtype=torch.float64))
    b = list(store.batches(8, seed=1, prefetch=0))
    assert all(
        x.dtype == torch.float64 and torch.equal(x, y.double()) for x, y in zip(a, b, strict=True)
    )


def test_bad_reader_arguments_are_named(store):
    with pytest.raises(ValueError, match="prefetch must be at least 0; got -1"):
        store.batches(4, prefetch=-1)
    with pytest.raises(TypeError, match="prefetch must be an int"):
        store.batches(4, prefetch=2.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pin_memory=True needs a CUDA GPU"):
            store.batches(4, pin_memory=True)


def test_pinned_memory_by_default_only_where_a_gpu_is_in_use(monkeypatch):
    pin = store_module._pin
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not pin(None, None) and not pin(gpu, None) and not pin(cpu, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert pin(gpu, None) and not pin(None, None) and not pin(cpu, None)  # CUDA not started
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert pin(None, None) and not pin(None, False) and pin(cpu, True)  # a GPU trainer's process


def test_the_bench_runs_and_records_what_it_must(capsys):
    import json

    from interp.bench.__main__ import main

    argv = ["store-read", "--vectors", "1024", "--d", "8", "--batch", "128", "--repeats", "1"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["identical_batches"] and out["d"] == 8 and out["batch"] == 128
    assert out["vectors_per_epoch"] == 1024 and len(out["loadavg_before"]) == 3
    assert set(out["vectors_per_s"]) >= {"old", "new, prefetch=0", "new (prefetch=2)"}
    assert out["ratio_new_over_old"] > 0 and "loadavg_after" in out
