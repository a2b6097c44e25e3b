import copy
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from interp import store_writer
from interp.cache import cache_activations
from interp.manifest import read_run_manifest
from interp.store import ActivationStore, CorruptShardError, StoreError, StoreMismatchError

HOOK = "blocks.1.hook_resid_post"


def contexts(n=10, ctx=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50, (ctx,), generator=g) for _ in range(n)]


def write(path, model, hooks=HOOK, n=10, **kw):
    kw.setdefault("context_size", 6)
    kw.setdefault("shard_tokens", 18)  # 3 contexts a shard
    kw.setdefault("forward_max_tokens", 12)  # 2 contexts a forward
    return ActivationStore.write(path, model, hooks, contexts(n), **kw)


def shard_hashes(store):
    return {s["index"]: s["files"] for s in store.shards}


def test_rows_equal_a_direct_forward(tmp_path, tiny_model):
    store = write(tmp_path / "s", tiny_model, hooks=[HOOK, "blocks.0.hook_mlp_out"])
    assert store.complete and len(store.shards) == 4  # 3 + 3 + 3 + 1 contexts
    assert len(store) == 10 * 6  # raw token contexts have no BOS, so nothing is dropped
    toks = torch.stack(contexts(10))
    ref = cache_activations(tiny_model, toks, [HOOK, "blocks.0.hook_mlp_out"])
    batch = store.rows(np.arange(len(store)), hook=HOOK)
    torch.testing.assert_close(
        batch.acts, ref[HOOK].reshape(-1, 16)
    )  # batching changes the last bits
    torch.testing.assert_close(
        store.rows([7], hook="blocks.0.hook_mlp_out").acts[0], ref["blocks.0.hook_mlp_out"][1, 1]
    )
    # every row knows its token, context and position
    assert torch.equal(batch.token_ids, toks.reshape(-1))
    assert torch.equal(batch.seq_ids, torch.arange(10).repeat_interleave(6))
    assert torch.equal(batch.positions, torch.arange(6).repeat(10))
    assert torch.equal(store.context(4), toks[4])
    run = read_run_manifest(store.path)
    assert run["kind"] == "activation-store" and run["packages"]["torch"]
    assert store.manifest["model"]["fingerprint"]


def test_batches_are_seeded_shuffled_and_cover_every_row_once(tmp_path, tiny_model):
    store = write(tmp_path / "s", tiny_model)
    a = [b.clone() for b in store.batches(7, seed=3)]
    b = [b.clone() for b in store.batches(7, seed=3)]
    c = [b.clone() for b in store.batches(7, seed=4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert [len(x) for x in a] == [7] * 8 + [4]
    seen = torch.cat(
        [(m.seq_ids * 100 + m.positions) for m in store.batches(7, seed=3, with_meta=True)]
    )
    assert sorted(seen.tolist()) == sorted((s * 100 + p) for s in range(10) for p in range(6))
    ordered = torch.cat(list(store.batches(60, shuffle=False)))
    torch.testing.assert_close(ordered, store.rows(np.arange(60)).acts)
    assert [len(x) for x in store.batches(7, drop_last=True)] == [7] * 8
    assert len(list(store.batches(10, epochs=3))) == 18


def test_rows_do_not_depend_on_the_forward_batching(tmp_path, tiny_model):
    one = write(tmp_path / "a", tiny_model, forward_max_tokens=1)  # a context a forward
    many = write(tmp_path / "b", tiny_model, forward_max_tokens=60)  # a whole shard a forward
    rows = np.arange(len(one))
    torch.testing.assert_close(one.rows(rows).acts, many.rows(rows).acts)
    assert read_run_manifest(many.path)["config"]["forward_max_tokens"] == 60


def test_bfloat16_storage(tmp_path, tiny_model):
    f32 = write(tmp_path / "a", tiny_model)
    bf16 = write(tmp_path / "b", tiny_model, dtype=torch.bfloat16)
    rows = np.arange(len(f32))
    assert bf16.rows(rows).acts.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.rows(rows).acts, f32.rows(rows).acts.bfloat16(), rtol=0, atol=0)


def test_resume_after_crash_between_rename_and_manifest(tmp_path, tiny_model, monkeypatch):
    whole = write(tmp_path / "whole", tiny_model)
    real = store_writer.atomic_write_json
    calls = {"n": 0}

    def crash_on_third(path, obj):
        calls["n"] += 1
        if calls["n"] == 3:  # create + shard 0 committed; shard 1 renamed but never listed
            raise KeyboardInterrupt("killed")
        real(path, obj)

    monkeypatch.setattr(store_writer, "atomic_write_json", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "s", tiny_model)
    monkeypatch.setattr(store_writer, "atomic_write_json", real)
    partial = ActivationStore(tmp_path / "s")
    assert not partial.complete and [s["index"] for s in partial.shards] == [0]
    assert (tmp_path / "s" / "shard_00001").exists()  # orphan that must not be trusted
    (tmp_path / "s" / ".tmp-shard_00002-dead").mkdir()
    resumed = write(tmp_path / "s", tiny_model)
    assert resumed.complete and shard_hashes(resumed) == shard_hashes(whole)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "s").iterdir())
    ranges = [s["sequences"] for s in resumed.shards]
    assert ranges == [[0, 3], [3, 6], [6, 9], [9, 10]]  # no gaps, no duplicates


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {os.getcwd()!r})
        from interp import store_writer
        from interp.random_models import random_model
        from interp.store import ActivationStore
        model = random_model(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32,
                             d_vocab=50, act_fn="gelu", seed=0)
        g = torch.Generator().manual_seed(1)
        ctx = [torch.randint(0, 50, (6,), generator=g) for _ in range(40)]
        slow = sys.argv[2] == "slow"
        real = store_writer._write_shard
        def paced(*a, **k):
            out = real(*a, **k)
            if slow:
                time.sleep(0.3)
            return out
        store_writer._write_shard = paced
        ActivationStore.write(sys.argv[1], model, "blocks.1.hook_resid_post", ctx, context_size=6,
                              shard_tokens=12, forward_max_tokens=12)
    """)
    (tmp_path / "w.py").write_text(script)
    full = tmp_path / "full"
    subprocess.run([sys.executable, str(tmp_path / "w.py"), str(full), "fast"], check=True)
    target = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "w.py"), str(target), "slow"])
    deadline = time.time() + 120
    while time.time() < deadline:
        m = target / "manifest.json"
        if m.exists() and '"index": 3' in m.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = ActivationStore(target)
    assert not killed.complete and 3 <= len(killed.shards) < 20
    subprocess.run([sys.executable, str(tmp_path / "w.py"), str(target), "fast"], check=True)
    assert shard_hashes(ActivationStore(target)) == shard_hashes(ActivationStore(full))


def test_mismatched_rewrite_is_refused(tmp_path, tiny_model):
    write(tmp_path / "s", tiny_model)
    with pytest.raises(StoreMismatchError, match="hooks"):
        write(tmp_path / "s", tiny_model, hooks="blocks.0.hook_resid_post")
    with pytest.raises(StoreMismatchError, match="dtype"):
        write(tmp_path / "s", tiny_model, dtype=torch.float16)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3  # same architecture, one weight differs
    with pytest.raises(StoreMismatchError, match="model"):
        write(tmp_path / "s", other)
    # the same tokens are checked too: a changed corpus is caught on resume
    (tmp_path / "s" / "manifest.json").write_text(
        (tmp_path / "s" / "manifest.json")
        .read_text()
        .replace('"complete": true', '"complete": false')
    )
    with pytest.raises(StoreMismatchError, match="different tokens"):
        ActivationStore.write(
            tmp_path / "s",
            tiny_model,
            HOOK,
            contexts(10, seed=9),
            context_size=6,
            shard_tokens=18,
            forward_max_tokens=12,
        )


def test_corrupted_shard_is_named_and_repairable(tmp_path, tiny_model):
    store = write(tmp_path / "s", tiny_model)
    before = shard_hashes(store)
    f = tmp_path / "s" / "shard_00001" / f"{HOOK}.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    fresh = ActivationStore(tmp_path / "s")
    with pytest.raises(CorruptShardError, match="shard_00001") as err:
        fresh.verify()
    assert err.value.shards == [1]
    fresh.shard_activations(0)  # other shards still read
    with pytest.raises(CorruptShardError, match="shard_00001"):
        list(ActivationStore(tmp_path / "s").batches(5, seed=0))
    assert shard_hashes(ActivationStore(tmp_path / "s")) == before  # nothing else touched
    # repair: drop the shard from disk and the index, then write again
    import json
    import shutil

    shutil.rmtree(tmp_path / "s" / "shard_00001")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["shards"] = [s for s in m["shards"] if s["index"] != 1]
    m["complete"] = False
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    repaired = write(tmp_path / "s", tiny_model)
    repaired.verify()
    assert shard_hashes(repaired) == before


def test_bad_input(tmp_path, tiny_model):
    store = write(tmp_path / "s", tiny_model)
    with pytest.raises(KeyError, match="did you mean"):
        store.shard_activations(0, hook="blocks.1.hook_resid_pots")
    with pytest.raises(IndexError):
        store.rows([len(store)])
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        ActivationStore.write(
            tmp_path / "t", tiny_model, HOOK, [torch.zeros(5, dtype=torch.long)], context_size=6
        )
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "shard_00000").mkdir()
    with pytest.raises(StoreError, match="refusing"):
        write(tmp_path / "u", tiny_model)


def test_skip_continues_the_same_sequence_of_batches(tmp_path, tiny_model):
    store = write(tmp_path / "s", tiny_model)
    full = list(store.batches(7, seed=5, epochs=2))
    rest = list(store.batches(7, seed=5, epochs=2, skip=11))
    assert len(rest) == len(full) - 11
    assert all(torch.equal(a, b) for a, b in zip(full[11:], rest, strict=True))


def test_context_longer_than_the_model_is_refused_before_any_forward(tmp_path, tiny_model):
    calls = []
    tiny_model.blocks[0].hook_resid_pre.add_hook(lambda x, hook: calls.append(1))
    with pytest.raises(ValueError, match=r"context_size is 40 positions.*n_ctx=32"):
        ActivationStore.write(tmp_path / "s", tiny_model, HOOK, contexts(2, 40), context_size=40)
    assert calls == [] and not (tmp_path / "s").exists()


def test_write_shows_progress_in_tokens(tmp_path, tiny_model, capsys):
    write(tmp_path / "s", tiny_model, max_tokens=60)
    err = capsys.readouterr().err
    assert "store s" in err and "100%" in err and "60.0/60.0" in err  # 10 contexts x 6 tokens
