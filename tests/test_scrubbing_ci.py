"""Scrubbing intervals over dataset rows: coverage of a known population value on the hand-built
model, the row jackknife against brute force, partner draws that leave the parent out."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from interp.scrubbing import Hypothesis, ScrubResult, claim, compare, next_token_loss
from interp.scrubbing.handbuilt import V, copy_first_hypotheses, copy_first_model
from interp.scrubbing.hypothesis import class_sampler, other_rows
from interp.scrubbing.resampling import RowDraws, jackknife, t_quantile

METRIC = next_token_loss(2)
POPULATION = torch.tensor([[a, b, c, a] for a, b, c in itertools.product(range(V), repeat=3)])


def _parity(x):
    return int(x[0]) % 2


_parity.__name__ = "parity of token 0"


def _hypotheses():
    h = copy_first_hypotheses()
    coarse = Hypothesis("coarse", claim("logits", None, claim("L0H0", _parity)))
    return [coarse, h["wrong"], h["wrong, deep"]]


@pytest.fixture(scope="module")
def model():
    return copy_first_model()


@pytest.mark.slow
def test_intervals_cover_the_population_value_at_12_and_200_rows(model):
    """The task: [a, b, c, a] with a, b, c uniform over the 6 tokens. Its value is scrub on ten
    copies of every input (so a partner can be the same input as the reference, as an
    independent draw from the task can, though never the same row) with many samples. Data sets
    of 12 and 200 rows are drawn from the task, 200 of each."""
    hyps = _hypotheses()
    task = POPULATION.repeat(10, 1)
    truth = [r.recovered for r in compare(model, task, hyps, METRIC, n_samples=200_000).results]
    for n_rows in (12, 200):
        covered, by_samples = np.zeros(3), np.zeros(3)
        for rep in range(200):
            g = torch.Generator().manual_seed(1000 + rep)
            data = POPULATION[torch.randint(0, len(POPULATION), (n_rows,), generator=g)]
            comp = compare(model, data, hyps, METRIC, n_samples=1000, seed=rep)
            for j, r in enumerate(comp.results):
                rc = r.recovered_ci()
                assert rc.unit == "dataset rows" and rc.n == n_rows
                covered[j] += rc.low <= truth[j] <= rc.high
                naive = ScrubResult(**{**r.__dict__, "rows": None, "meta": {}})
                nc = naive.recovered_ci(n_resamples=500)  # samples as independent (as before)
                by_samples[j] += nc.low <= truth[j] <= nc.high
        assert (covered / 200 >= 0.9).all(), (n_rows, covered)
        if n_rows == 12:
            assert (by_samples / 200 <= 0.5).all(), by_samples  # the defect this fixes


def _ratio(m):
    return (m["random"] - m["a"]) / (m["random"] - m["clean"])


def test_without_shared_rows_beyond_the_reference_it_is_the_plain_row_jackknife():
    """Terms that read only their reference: leaving a row out drops exactly its samples, the
    excess is zero, and the interval is the textbook jackknife of the ratio over rows."""
    g = torch.Generator().manual_seed(3)
    ref = torch.randint(0, 10, (300,), generator=g)
    losses = {
        k: torch.rand(300, generator=g) + o for k, o in (("clean", 0), ("a", 1), ("random", 2))
    }
    none = torch.empty(300, 0, dtype=torch.long)
    draws = RowDraws(10, ref, {k: none for k in losses})
    est, low, high = jackknife(losses, draws, _ratio)
    loo = torch.tensor(
        [
            float(_ratio({k: v[ref != r].double().mean() for k, v in losses.items()}))
            for r in range(10)
        ],
        dtype=torch.float64,
    )
    se = math.sqrt(9 / 10 * float(((loo - loo.mean()) ** 2).sum()))
    assert float(high - est) == pytest.approx(t_quantile(0.975, 9) * se, rel=1e-9)


def test_samples_that_share_no_rows_get_the_independent_samples_interval():
    """Every sample reads 4 rows of its own: the jackknife counts each sample's noise 4 times;
    after the correction the width is that of samples as independent units (delta method)."""
    g = torch.Generator().manual_seed(4)
    n = 2000
    rows = torch.arange(4 * n).reshape(n, 4)
    losses = {"clean": torch.rand(n, generator=g), "a": 1 + torch.rand(n, generator=g)}
    losses["random"] = losses["a"] + 1 + torch.rand(n, generator=g)
    draws = RowDraws(
        4 * n, rows[:, 0], {"clean": rows[:, 1:2], "a": rows[:, 1:3], "random": rows[:, 1:]}
    )
    est, low, high = jackknife(losses, draws, _ratio)
    m = {k: v.double().mean() for k, v in losses.items()}
    span = m["random"] - m["clean"]
    infl = (-(losses["a"] - m["a"]) + (1 - float(_ratio(m))) * (losses["random"] - m["random"])
            + float(_ratio(m)) * (losses["clean"] - m["clean"])) / span  # fmt: skip
    se = float(infl.double().std()) / math.sqrt(n)
    assert float(high - est) == pytest.approx(t_quantile(0.975, 4 * n - 1) * se, rel=0.02)


def test_partners_leave_the_parent_out_unless_it_is_alone():
    ids = np.array([0, 0, 0, 1, 1, 2])  # row 5 is alone in its class
    sample = class_sampler(ids)
    parents = torch.tensor([0, 1, 2, 3, 4, 5]).repeat(4000)
    got = sample(parents, torch.Generator().manual_seed(0))
    assert (ids[got.numpy()] == ids[parents.numpy()]).all()  # same class
    assert (got[parents != 5] != parents[parents != 5]).all() and (got[parents == 5] == 5).all()
    from_0 = got[parents == 0]
    share = [(from_0 == k).double().mean().item() for k in (1, 2)]
    assert share == pytest.approx([0.5, 0.5], abs=0.03)  # uniform over the others
    rows = torch.randint(0, 7, (5000,), generator=torch.Generator().manual_seed(1))
    other = other_rows(rows, 7, torch.Generator().manual_seed(2))
    assert (other != rows).all() and set(other.tolist()) == set(range(7))


def test_rows_survive_save_and_load_and_old_results_are_refused(model, tmp_path):
    data = POPULATION[:12]
    r = compare(model, data, _hypotheses()[:1], METRIC, n_samples=100, seed=0).results[0]
    back = ScrubResult.load(r.save(tmp_path / "r"))
    assert torch.equal(back.rows, r.rows) and torch.equal(back.scrubbed_from, r.scrubbed_from)
    assert back.recovered_ci() == r.recovered_ci()
    old = ScrubResult(**{**r.__dict__, "rows": None, "scrubbed_from": None, "random_from": None})
    with pytest.raises(ValueError, match="100 samples drawn from 12 dataset rows.*run scrub again"):
        old.recovered_ci()
    assert "rows unknown" in repr(old)


def test_t_quantile():
    exact = {1: 12.7062, 2: 4.3027, 3: 3.1824, 5: 2.5706, 11: 2.2010, 30: 2.0423, 199: 1.9720}
    for dof, t in exact.items():
        assert t_quantile(0.975, dof) == pytest.approx(t, rel=0.0075), dof
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
