"""interp.multiple_testing: error rates over a family of cells, against brute force, statsmodels
and simulations with no effect (and one planted effect) where the truth is known."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from interp.multiple_testing import adjust_p, family_test
from interp.stats import bootstrap_ci

SHAPE = (30, 9)  # the review's sweep: 30 layers x 9 positions
N_PROMPTS = 16
PLANTED = 1.5  # effect in per-prompt standard deviations (docs/methods.md)


def _sweep(g: torch.Generator, n: int = N_PROMPTS, rho: float = 0.5) -> torch.Tensor:
    """Per-prompt effects with no effect anywhere; cells of one prompt share a component
    (correlation rho), as cells of one prompt do in a real sweep."""
    shared = torch.randn(n, 1, 1, generator=g)
    return rho**0.5 * shared + (1 - rho) ** 0.5 * torch.randn(n, *SHAPE, generator=g)


def test_exact_test_equals_brute_force_enumeration():
    d = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)).double()
    d[:, 1] += 1.5
    fam = family_test(d, n_flips=64)
    assert fam.exact and fam.n_flips == 64

    def t(x):
        return x.mean(0) / (x.std(0) / math.sqrt(len(x)))

    obs = t(d).abs()
    flips = [torch.tensor(s, dtype=torch.float64) for s in itertools.product([1, -1], repeat=6)]
    null = torch.stack([t(d * s[:, None]).abs() for s in flips])  # [64, cells]
    torch.testing.assert_close(
        fam.p_raw.double(), (null >= obs).double().mean(0), rtol=0, atol=1e-7
    )
    p_max = torch.stack([(null.amax(1) >= o).double().mean() for o in obs])
    torch.testing.assert_close(fam.p_adjusted.double(), p_max, rtol=0, atol=1e-7)
    centred = torch.stack([t((d - d.mean(0)) * s[:, None]).abs().amax() for s in flips])
    q = torch.quantile(centred, 0.95)
    se = d.std(0) / math.sqrt(6)
    torch.testing.assert_close(fam.low.double(), d.mean(0) - q * se, rtol=0, atol=1e-6)


def test_holm_and_bh_equal_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = torch.rand(40, generator=torch.Generator().manual_seed(3)) ** 3
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        ref = multitest.multipletests(p.numpy(), method=theirs)[1]
        torch.testing.assert_close(adjust_p(p, ours), torch.as_tensor(ref), rtol=0, atol=1e-12)


def test_holm_and_bh_by_hand():
    p = torch.tensor([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted .005 .01 .03 .04 times 4 3 2 1 -> .02 .03 .06 .04, running max -> .06 for .04
    torch.testing.assert_close(adjust_p(p, "holm"), torch.tensor([0.03, 0.06, 0.06, 0.02]).double())
    # BH: m p / k = .02 .02 .04 .04, running min from the top
    torch.testing.assert_close(adjust_p(p, "bh"), torch.tensor([0.02, 0.04, 0.04, 0.02]).double())


def test_no_effect_anywhere_is_called_significant_at_most_six_percent_of_sweeps():
    g = torch.Generator().manual_seed(1)
    sweeps = 500
    any_maxt = any_holm = naive_top = 0
    for i in range(sweeps):
        x = _sweep(g)
        any_maxt += bool(family_test(x, n_flips=1000, seed=i).significant.any())
        any_holm += bool(family_test(x, method="holm", n_flips=1000, seed=i).significant.any())
        if i < 50:  # the defect: the top cell's own CI, chosen as the maximum of 270
            ci = bootstrap_ci(x, n_resamples=500, seed=i)
            top = x.mean(0).abs().argmax()
            naive_top += bool(ci.low.flatten()[top] > 0 or ci.high.flatten()[top] < 0)
    assert any_maxt / sweeps <= 0.06, any_maxt
    assert any_holm / sweeps <= 0.06, any_holm
    assert naive_top >= 45  # the raw interval of a selected cell excludes 0 nearly always


def test_a_planted_effect_is_found_in_at_least_80_percent_of_sweeps():
    g = torch.Generator().manual_seed(2)
    sweeps, found, elsewhere = 500, 0, 0
    for i in range(sweeps):
        x = _sweep(g)
        x[:, 4, 2] += PLANTED
        sig = family_test(x, n_flips=1000, seed=i).significant
        found += bool(sig[4, 2])
        sig[4, 2] = False
        elsewhere += bool(sig.any())
    assert found / sweeps >= 0.8, found
    assert elsewhere / sweeps <= 0.06, elsewhere


def test_simultaneous_intervals_cover_every_cell_together():
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(*SHAPE, generator=g)  # every cell has an effect of its own
    covered = 0
    for i in range(200):
        fam = family_test(_sweep(g) + truth, n_flips=1000, seed=i)
        covered += bool(((fam.low <= truth) & (truth <= fam.high)).all())
    assert covered / 200 >= 0.93, covered


def test_cells_without_spread():
    d = torch.zeros(8, 3)
    d[:, 1] = 0.7  # the same effect on every prompt
    d[:, 2] = torch.randn(8, generator=torch.Generator().manual_seed(0))
    fam = family_test(d)
    assert fam.exact and fam.n_flips == 256
    assert fam.p_raw[0] == 1 and not fam.significant[0]  # a skipped cell: exactly no effect
    assert fam.p_raw[1] == pytest.approx(2 / 256)  # only the identity and all-minus reach it
    assert fam.low[1] == fam.high[1] == pytest.approx(0.7)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.zeros(1, 4),), {}, "n_prompts >= 2"),
        ((torch.zeros(4, 2),), {"method": "bonf"}, "method"),
        ((torch.zeros(4, 2),), {"alpha": 1.5}, "alpha"),
        ((torch.full((4, 2), float("nan")),), {}, "non-finite"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        family_test(*args, **kwargs)


def test_no_p_value_is_below_one_over_the_flips():
    """The identity is one of the flips, so it always reaches the observed statistic."""
    g = torch.Generator().manual_seed(8)
    for n in (8, 16, 40):
        d = torch.randn(n, 50, generator=g) + torch.linspace(0, 3, 50)
        fam = family_test(d, n_flips=500)
        assert float(fam.p_adjusted.min()) >= 1 / fam.n_flips - 1e-12
        assert float(fam.p_raw.min()) >= 1 / fam.n_flips - 1e-12
