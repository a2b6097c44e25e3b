"""``python -m saes.transcoders``: many layers cached per forward pass, trained one by one."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import torch

from saes.config import ConfigError

LAYERS, CTX = 3, 8


@pytest.fixture(scope="module")
def setup() -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A 3-layer random model on the default backend, 40 training and 8 held-out contexts."""
    from interp.random_models import random_model

    model = random_model(
        n_layers=LAYERS, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", seed=0,
    )  # fmt: skip
    tokens = torch.randint(0, 50, (48, CTX), generator=torch.Generator().manual_seed(0))
    return model, tokens[:40], tokens[40:]


def set_args(**kw: Any) -> argparse.Namespace:
    base = dict(
        model="random", d_sae=32, k=4, epochs=4, batch_size=64, lr=3e-3, context_size=CTX,
        seed=0, forward_tokens=64, progress=False, redo=False, cache_gb=1.0, layers_per_pass=None,
    )  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_one_pass_caches_what_a_full_forward_computes(setup) -> None:
    """Every layer's rows from one pass (several chunks) are the full model's activations,
    cached independently by ``run_with_cache``, and the same bits as a pass for that layer alone."""
    from saes.transcoder import mlp_hooks
    from saes.transcoders import cache_pairs

    model, tokens, _ = setup
    every = cache_pairs(model, range(LAYERS), tokens, max_tokens=64)  # 5 chunks of 8 contexts
    with torch.no_grad():
        _, ref = model.run_with_cache(tokens)
    for layer in range(LAYERS):
        x, y = every[layer]
        assert x.dtype == torch.bfloat16 and x.shape == (40 * CTX, 16)
        for got, hook in zip((x, y), mlp_hooks(layer), strict=True):
            want = ref[hook].flatten(0, 1)
            torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)  # bf16 rounding
        alone = cache_pairs(model, [layer], tokens, max_tokens=64)[layer]
        assert torch.equal(alone[0], x) and torch.equal(alone[1], y)


def test_many_layers_per_pass_train_the_same_transcoders_as_one(tmp_path, setup) -> None:
    """Bit for bit: the cached rows are the same bits (above), and training and evaluation are
    the same seeded computation on them, so the weights and every quality number are equal."""
    from saes.transcoder import load_transcoders
    from saes.transcoders import train_set

    model, train, held = setup
    one = train_set(model, [2, 0, 1], train, held, tmp_path / "one", set_args(layers_per_pass=1))
    many = train_set(model, [2, 0, 1], train, held, tmp_path / "many", set_args())
    a, b = load_transcoders(model, tmp_path / "one"), load_transcoders(model, tmp_path / "many")
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for layer in range(LAYERS):
        sa, sb = a[layer].state_dict(), b[layer].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), layer
        timing = {"wall_s", "cache_s", "train_s", "layers_per_pass"}
        assert {k: v for k, v in one[str(layer)].items() if k not in timing} == {
            k: v for k, v in many[str(layer)].items() if k not in timing
        }
        assert one[str(layer)]["layers_per_pass"] == 1 and many[str(layer)]["layers_per_pass"] == 3
    # position 0 of each context is dropped by default
    assert many["1"]["train_tokens"] == 40 * (CTX - 1) and many["1"]["eval_tokens"] == 8 * (CTX - 1)


@pytest.mark.parametrize("keep", [False, True])
def test_no_position_0_row_reaches_the_trainer(tmp_path, setup, monkeypatch, keep) -> None:
    """Every batch the trainer sees, checked against the model's rows at position 0 (cached
    independently); the CE splice leaves position 0 out too. ``--keep-position-0`` keeps them."""
    import saes.evals
    import saes.transcoders as tcs
    from saes.transcoder import mlp_hooks

    model, train, held = setup
    seen: list[torch.Tensor] = []
    splice: list[Any] = []
    real_shuffled, real_ce = tcs._shuffled, saes.evals.ce_loss_recovered

    def shuffled(*a: Any) -> Any:
        batches = real_shuffled(*a)

        def recorded(skip: int) -> Any:
            for x, y in batches(skip):
                seen.append(x)
                yield x, y

        return recorded

    def ce(*a: Any, **kw: Any) -> Any:
        splice.append(kw["skip_bos"])
        return real_ce(*a, **kw)

    monkeypatch.setattr(tcs, "_shuffled", shuffled)
    monkeypatch.setattr(saes.evals, "ce_loss_recovered", ce)
    table = tcs.train_set(model, [1], train, held, tmp_path, set_args(keep_position_0=keep))
    with torch.no_grad():
        _, ref = model.run_with_cache(train)
    first = ref[mlp_hooks(1)[0]][:, 0].bfloat16().float()  # [40, d]: position 0 of each context
    rows = torch.cat(seen)
    hits = (torch.cdist(rows, first) < 1e-6).any(0)  # each position-0 row: in some batch?
    assert bool(hits.all()) if keep else not bool(hits.any())
    assert splice == [None if keep else True]
    assert table["1"]["eval_tokens"] == 8 * (CTX - (0 if keep else 1))
    with pytest.raises(ConfigError, match="position 0 (kept|dropped).*another --out"):
        tcs.train_set(model, [1], train, held, tmp_path, set_args(keep_position_0=not keep))


def test_a_kill_mid_pass_keeps_finished_layers_and_a_rerun_trains_the_rest(
    tmp_path, setup, monkeypatch
) -> None:
    import saes.transcoders as tcs
    from interp._io import read_json

    model, train, held = setup
    real, trained = tcs.train_layer, list[int]()

    def train_layer(model, layer, *a, **kw):  # type: ignore[no-untyped-def]
        if layer == 2 and not trained[2:]:
            raise KeyboardInterrupt  # the kill, in the middle of the pass that cached 0, 1, 2
        trained.append(layer)
        return real(model, layer, *a, **kw)

    monkeypatch.setattr(tcs, "train_layer", train_layer)
    with pytest.raises(KeyboardInterrupt):
        tcs.train_set(model, [0, 1, 2], train, held, tmp_path, set_args())
    assert sorted(read_json(tmp_path / "quality.json")["layers"]) == ["0", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "layer_00", "layer_01", "quality.json", "quality.md"
    ]  # fmt: skip
    trained.append(-1)  # the next call of layer 2 trains
    table = tcs.train_set(model, [0, 1, 2], train, held, tmp_path, set_args())
    assert trained == [0, 1, -1, 2] and sorted(table) == ["0", "1", "2"]
    assert table["2"]["layers_per_pass"] == 1  # only the unfinished layer was cached
    rows = [line.split(" | ")[0] for line in (tmp_path / "quality.md").read_text().splitlines()]
    assert rows[-3:] == ["| 0", "| 1", "| 2"]


def test_passes_fit_the_memory_bound_or_the_error_says_what_to_change() -> None:
    from saes.transcoders import main, plan_passes

    per_layer = 36_864 * 2 * 576 * 2  # SmolLM2, 32,768 + 4,096 tokens: 85 MB a layer
    assert plan_passes(range(30), 36_864, 576, 4e9) == [list(range(30))]
    assert plan_passes(range(30), 36_864, 576, 10 * per_layer) == [
        list(range(i, i + 10)) for i in (0, 10, 20)
    ]
    assert plan_passes([4, 9, 5], 36_864, 576, 4e9, per_pass=2) == [[4, 9], [5]]
    with pytest.raises(ConfigError, match=r"0\.08 GB .* over --cache-gb 0\.05: raise --cache-gb"):
        plan_passes([0], 36_864, 576, 0.05e9)
    for bad in (["--cache-gb", "0"], ["--layers-per-pass", "0"]):
        with pytest.raises(SystemExit):  # argparse's error, before the model loads
            main(bad)


def test_docstring_examples_run() -> None:
    import doctest

    import saes.transcoders

    result = doctest.testmod(saes.transcoders)
    assert result.attempted > 0 and result.failed == 0
