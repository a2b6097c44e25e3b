"""Exact replay: every artifact kind saved, replayed from its recipe, and found identical; every
way a replay can be impossible refused with the reason (issue 14, item 4)."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch

from interp.__main__ import main
from interp.metrics import logit_diff
from interp.patching import (
    attribution_patch,
    edge_attribution,
    edge_patch,
    patch_sweep,
    path_patch,
)
from interp.random_models import random_model
from interp.recipe import NotReplayableError, decode, encode
from interp.replay import replay
from interp.scrubbing import compare, next_token_loss, scrub
from interp.scrubbing.handbuilt import copy_first_dataset, copy_first_hypotheses, copy_first_model
from interp.store import ActivationStore

FIELDS = dict(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=50, n_ctx=32, seed=3)


@pytest.fixture(scope="module")
def model():
    return random_model(None, **FIELDS)


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50, (6, 7), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3] = (corrupt[:, 3] + 1 + torch.randint(0, 48, (6,), generator=g)) % 50
    return clean, corrupt


def _metric():
    return functools.partial(logit_diff, correct=torch.tensor([1, 2, 3, 4, 5, 6]), incorrect=7)


RUNS = {
    "patch_sweep": lambda m, c, x, f: patch_sweep(m, c, x, f, site="resid_pre"),
    "patch_sweep z, normalised, a layer picked": lambda m, c, x, f: (
        patch_sweep(m, c, x, f, site="z", over=("layer", "head")).normalized().sel(layer="L1")
    ),
    "path_patch": lambda m, c, x, f: path_patch(
        m, c, x, f, senders=["L0H1", "L0H2"], receivers="logits", freeze="heads"
    ),
    "edge_patch": lambda m, c, x, f: edge_patch(m, c, x, f, edges=[("L0H1", "L1H0.q")]),
    "attribution_patch ig": lambda m, c, x, f: attribution_patch(
        m, c, x, f, site="attn_out", method="ig", steps=3
    ),
    "edge_attribution": lambda m, c, x, f: edge_attribution(m, c, x, f, method="eap"),
}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_patching_results_replay_identically(kind, model, pair, tmp_path):
    result = RUNS[kind](model, *pair, _metric())
    result.save(tmp_path / "r")
    report = replay(tmp_path / "r")
    assert report.ok, report.table()
    assert {r.name for r in report.rows} >= {"values", "clean"}
    assert all(r.max_abs_diff == 0 for r in report.rows)  # same machine: bit for bit


def test_replay_notices_a_changed_number(model, pair, tmp_path, capsys):
    patch_sweep(model, *pair, _metric(), site="resid_pre").save(tmp_path / "r")
    assert main(["replay", str(tmp_path / "r")]) == 0
    assert "identical within" in capsys.readouterr().out
    values = np.load(tmp_path / "r" / "values.npy")
    values[0, 1, 2] += 0.01
    np.save(tmp_path / "r" / "values.npy", values)
    assert main(["replay", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "0.01" in out


def test_scrubbing_result_and_comparison_replay(tmp_path):
    model, data = copy_first_model(), copy_first_dataset(12)
    hyps, metric = copy_first_hypotheses(), next_token_loss([2])
    scrub(model, data, hyps["true, deep"], metric, n_samples=40, seed=1).save(tmp_path / "one")
    compare(model, data, [hyps["true"], hyps["wrong"]], metric, n_samples=40).save(tmp_path / "two")
    for d in ("one", "two"):
        report = replay(tmp_path / d)
        assert report.ok, report.table()
        assert any("scrubbed" in r.name for r in report.rows)


def _write_store(model, path, n=12):
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (8,), generator=g) for _ in range(n)]
    return ActivationStore.write(
        path, model, "blocks.1.hook_resid_post", contexts, context_size=8, shard_tokens=32,
        progress=False,
    )  # fmt: skip


def test_store_replays_into_a_fresh_folder(model, tmp_path):
    store = _write_store(model, tmp_path / "store")
    report = replay(store.path)
    assert report.ok, report.table()
    assert len(report.rows) == len(store.shards) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # the rerun left nothing


def test_sae_evaluation_replays(model, tmp_path, capsys):
    from saes.__main__ import main as saes_main

    store = _write_store(model, tmp_path / "store", n=32)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "sae": {"d_sae": 32, "k": 4},
        "train": {"total_steps": 6, "batch_size": 32, "checkpoint_every": 5, "log_every": 2},
        "data": {"store": str(store.path)},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert saes_main(["train", "--config", str(tmp_path / "cfg.json"), "--no-progress"]) == 0
    args = ["eval", str(tmp_path / "run"), "--batches", "2", "--batch-size", "32"]
    assert saes_main([*args, "--ce-contexts", "0"]) == 0
    report = replay(tmp_path / "run" / "eval.json")
    assert report.ok, report.table()
    names = {r.name for r in report.rows}
    assert {"reconstruction.l0", "reconstruction.explained_variance"} <= names
    # The SAE file changed after the evaluation: its weights no longer match the record.
    final = tmp_path / "run" / "final"
    from saes.sae import SAE

    sae = SAE.load(final)
    with torch.no_grad():
        sae.W_dec.mul_(2)
    sae.save(final)
    with pytest.raises(NotReplayableError, match="weights differ"):
        replay(tmp_path / "run" / "eval.json")


# -- what cannot be replayed, and why ----------------------------------------------------------
def test_a_lambda_metric_is_recorded_as_unreplayable(model, pair, tmp_path, capsys):
    patch_sweep(model, *pair, lambda lg: lg[:, -1, 0], site="resid_pre").save(tmp_path / "r")
    with pytest.raises(NotReplayableError, match="metric: a lambda cannot be replayed"):
        replay(tmp_path / "r")
    assert main(["replay", str(tmp_path / "r")]) == 2
    assert "lambda" in capsys.readouterr().err


def test_a_model_built_in_code_needs_the_model_and_checks_it(pair, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.random_models import to_backend

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=4, vocab_size=50, n_positions=32)
    built = to_backend(GPT2LMHeadModel(cfg).eval(), "bridge")
    patch_sweep(built, *pair, _metric(), site="resid_pre").save(tmp_path / "r")
    with pytest.raises(NotReplayableError, match="built in code.*--model"):
        replay(tmp_path / "r")
    assert replay(tmp_path / "r", model=built).ok
    other = to_backend(GPT2LMHeadModel(cfg).eval(), "bridge")  # other random weights
    with pytest.raises(NotReplayableError, match="not the same model"):
        replay(tmp_path / "r", model=other)


def test_an_edited_recipe_is_caught_by_its_hashes(model, pair, tmp_path):
    patch_sweep(model, *pair, _metric(), site="resid_pre").save(tmp_path / "r")
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    run["replay"]["args"]["clean"]["__tensor__"]["data"][0] += 1
    (tmp_path / "r" / "run.json").write_text(json.dumps(run))
    with pytest.raises(NotReplayableError, match="edited after it was written"):
        replay(tmp_path / "r")


def test_a_store_gone_or_rewritten_is_named(model, tmp_path):
    store = _write_store(model, tmp_path / "store")
    rec = encode(store)
    assert decode(rec).path == store.path.resolve()
    manifest = store.path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": true '))
    with pytest.raises(NotReplayableError, match="has changed since it was read"):
        decode(rec)
    shutil.rmtree(store.path)
    with pytest.raises(NotReplayableError, match="is gone"):
        decode(rec)


def test_not_an_artifact(tmp_path, capsys):
    assert main(["replay", str(tmp_path)]) == 2
    assert "not a saved mechscope artifact" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"kind": "old"}))
    with pytest.raises(NotReplayableError, match="holds no recipe"):
        replay(tmp_path)


def test_recipes_round_trip_values():
    from interp.core.positions import real

    values = [
        {
            "a": (1, 2.5, None),
            "b": [torch.arange(6).reshape(2, 3), torch.ones(2, dtype=torch.bfloat16)],
        },
        real(slice(1, None)),
        slice(2, None, 3),
        torch.float16,
    ]
    for v in values:
        back = decode(json.loads(json.dumps(encode(v))))
        assert repr(back) == repr(v)


def test_steering_vectors_and_sweeps_replay(model, tmp_path):
    from interp.steering import extract, save_vectors
    from interp.steering.sweeps import Measure, sweep, word_logit_diff

    tok_model = model
    pos, neg = ["t1 t2 t3", "t4 t5 t2"], ["t6 t7 t8", "t8 t9 t7"]
    vectors = extract(tok_model, pos, neg, layers=[0, 1])
    save_vectors(tmp_path / "v.safetensors", {1: vectors[1]})  # a file may keep some layers
    report = replay(tmp_path / "v.safetensors")
    assert report.ok and {r.name for r in report.rows} >= {"1.vector", "1.threshold"}
    metric = word_logit_diff(tok_model, ["t1"], ["t6"])
    result = sweep(
        tok_model, vectors, layers=[0, 1], alphas=[1.0, 2.0], intended="words",
        measures=[Measure("words", ["t2 t3 t4", "t5 t6 t7", "t8 t9 t1"], metric)], progress=False,
    )  # fmt: skip
    result.save(tmp_path / "sweep")
    report = replay(tmp_path / "sweep")
    assert report.ok, report.table()
    assert any(r.name.startswith("values") for r in report.rows)
