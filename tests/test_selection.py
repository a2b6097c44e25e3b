"""Selection-aware reporting: a cell picked as the largest of many is reported with an interval
that knows it was picked (held-out prompts, family-wise intervals). Synthetic results, no model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from interp.multiple_testing import family_test, split_samples
from interp.patching.result import PatchResult
from interp.steering.sweeps import SteeringSweep


def _result(values: torch.Tensor, corrupt: torch.Tensor) -> PatchResult:
    n, layers, pos = values.shape
    labels = {"layer": [f"L{i}" for i in range(layers)], "pos": [str(p) for p in range(pos)]}
    return PatchResult(
        values, ("layer", "pos"), labels, "ld", "patch_sweep", "resid_pre", "resample",
        "denoise", corrupt + 3.0, corrupt,
    )  # fmt: skip


def _null(g: torch.Generator, n: int = 16) -> PatchResult:
    corrupt = torch.randn(n, generator=g)
    noise = torch.randn(n, 30, 9, generator=g)
    return _result(corrupt[:, None, None] + noise, corrupt)  # no cell differs from the base run


def test_effects_are_paired_with_the_base_run():
    res = _null(torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.effects(), res.values - res.corrupt[:, None, None])
    noising = PatchResult(**{**res.__dict__, "direction": "noise"})
    torch.testing.assert_close(noising.effects(), res.values - res.clean[:, None, None])
    fam = res.family()
    assert fam.method == "maxt" and fam.low.shape == (30, 9) and fam.n_cells == 270


def test_the_top_cell_of_a_null_sweep_is_rarely_called_an_effect():
    """Held-out reporting (the default) at 300 sweeps; the all-prompts family interval is the
    family test itself, simulated at 500 sweeps in test_multiple_testing, so fewer here."""
    g = torch.Generator().manual_seed(5)
    for split, sweeps in ((0.5, 300), (None, 60)):
        excluded = 0
        for i in range(sweeps):
            row = _null(g).top(1, split=split, seed=i)[0]
            base = row["mean"] - row["effect"]
            excluded += row["low"] > base or row["high"] < base
        assert excluded / sweeps <= 0.06, (split, excluded)


def test_ranking_uses_only_its_half_and_reporting_only_the_other():
    res = _null(torch.Generator().manual_seed(1))
    chosen, shown = split_samples(16, 0.5, seed=3)
    assert set(chosen.tolist()).isdisjoint(shown.tolist()) and len(chosen) + len(shown) == 16
    rows = res.top(4, seed=3)
    moved = res.values.clone()
    moved[shown] += torch.randn(moved[shown].shape, generator=torch.Generator().manual_seed(9))
    again = PatchResult(**{**res.__dict__, "values": moved}).top(4, seed=3)
    assert [r["cell"] for r in again] == [r["cell"] for r in rows]  # the report side never ranks
    for r in rows:
        li, pi = r["index"]
        assert r["mean"] == pytest.approx(float(res.values[shown, li, pi].mean()), abs=1e-6)
    assert "ranked on 8 prompts, reported on the other 8" in rows.note


def test_split_none_reports_the_family_interval_of_every_cell():
    g = torch.Generator().manual_seed(2)
    res = _null(g)
    res.values[:, 7, 3] += 2.0
    (row,) = res.top(1, split=None)
    assert row["cell"] == {"layer": "L7", "pos": "3"}
    fam = family_test(res.effects(), seed=0)
    base = float(res.corrupt.mean())
    assert row["low"] == pytest.approx(float(fam.low[7, 3]) + base, abs=1e-5)
    assert row["p_adj"] == pytest.approx(float(fam.p_adjusted[7, 3])) and row["p_adj"] < 0.05
    assert "simultaneous over all 270 cells" in res.top(1, split=None).note


def test_a_split_that_leaves_a_side_too_small_is_refused():
    res = _null(torch.Generator().manual_seed(0), n=3)
    with pytest.raises(ValueError, match="leaves 2 to rank on and 1 to report on"):
        res.top(1)
    with pytest.raises(ValueError, match=r"split must be in \(0, 1\)"):
        res.top(1, split=1.0)
    assert len(res.top(1, split=None)) == 1


def _null_steering(g: torch.Generator, n: int = 16) -> SteeringSweep:
    layers, alphas = list(range(9)), [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    values = {
        "effect": torch.randn(n, 9, 6, generator=g),  # no layer or strength does anything
        "kl": torch.randn(n + 4, 9, 6, generator=g).abs(),  # a measure with prompts of its own
    }
    return SteeringSweep(
        layers, alphas, values, {k: torch.zeros(len(v)) for k, v in values.items()},
        {"effect": "custom", "kl": "kl"}, "effect", "increase",
    )  # fmt: skip


def test_the_best_steering_cell_of_a_null_sweep_is_rarely_called_an_effect():
    g = torch.Generator().manual_seed(6)
    held_out = everywhere = naive = 0
    for i in range(200):
        sw = _null_steering(g)
        held_out += sw.best(seed=i).effect[1] > 0
        everywhere += sw.best(split=None, seed=i).effect[1] > 0
        if i < 60:
            ci = sw.ci("effect", n_resamples=500)  # the raw interval of the maximum, as before
            naive += bool(ci.low.flatten()[sw.values["effect"].mean(0).argmax()] > 0)
    assert held_out / 200 <= 0.06 and everywhere / 200 <= 0.06, (held_out, everywhere)
    assert naive / 60 >= 0.5, naive


def test_best_chooses_on_one_part_and_reports_on_the_other():
    sw = _null_steering(torch.Generator().manual_seed(7))
    chosen, shown = split_samples(16, 0.5, seed=0)
    moved = {**sw.values, "effect": sw.values["effect"].clone()}
    moved["effect"][shown] += 5 * torch.randn(len(shown), 9, 6)
    b, again = sw.best(seed=0), replace(sw, values=moved).best(seed=0)
    assert (b.layer, b.alpha) == (again.layer, again.alpha)
    li, ai = b.layer, sw.alphas.index(b.alpha)
    assert b.effect[0] == pytest.approx(float(sw.values["effect"][shown, li, ai].mean()), abs=1e-6)
    kl_shown = split_samples(20, 0.5, seed=0)[1]
    assert b.side_effects["kl"][0] == pytest.approx(
        float(sw.values["kl"][kl_shown, li, ai].mean()), abs=1e-6
    )
    assert "chosen on 8 of 16 prompts" in b.how and b.how in sw.summary()
    fam = sw.family("kl")
    assert fam.n_cells == 54 and fam.n == 20


def test_best_accuracy_chooses_the_layer_on_one_half_and_reports_the_other():
    """Layer 2 separates the classes on the choosing half of the held-out prompts only: it is
    chosen, and its reported accuracy is the other half's (chance), not the choosing half's."""
    from interp.steering.study import DirectionResult, _accuracy

    g = torch.Generator().manual_seed(0)
    d, n_train, n_held = 8, 20, 20
    axis = torch.zeros(d)
    axis[0] = 1.0
    acts = torch.randn(3, 2 * n_train + 2 * n_held, d, generator=g) * 0.5
    sign = torch.cat(
        [torch.ones(n_train), -torch.ones(n_train), torch.ones(n_held), -torch.ones(n_held)]
    )
    acts[1:, : 2 * n_train] += 3 * sign[: 2 * n_train, None] * axis  # both layers learn the axis
    acts[1, 2 * n_train :] += 0.2 * sign[2 * n_train :, None] * axis  # layer 1: a weak signal
    choose, report = split_samples(n_held, 0.5, 0)
    for half, strength in ((choose, 3.0), (report, 0.0)):  # layer 2: strong, then none
        for offset in (2 * n_train, 2 * n_train + n_held):
            acts[2, offset + half] += strength * sign[offset + half, None] * axis
    full, split = _accuracy(
        acts, (n_train, n_train), (n_held, n_held), [0, 1, 2], ["diff_mean"], True
    )
    res = DirectionResult("toy", {}, full, None, split_accuracy=split)  # type: ignore[arg-type]
    layer, acc = res.best_accuracy()
    assert layer == 2 and float(split["diff_mean"][2][0].accuracy.estimate) == 1.0
    assert acc is split["diff_mean"][2][1] and float(acc.accuracy.estimate) < 0.8
    assert acc.accuracy.n == len(report)
    with pytest.raises(ValueError, match="overstates"):
        DirectionResult("toy", {}, full, None).best_accuracy()  # type: ignore[arg-type]
