import pytest
import torch
from transformer_lens.utilities.lm_utils import lm_cross_entropy_loss

from interp.metrics import kl_div, logit_diff, loss, normalized, prob
from interp.stats import OnePromptWarning, bootstrap_ci, paired_difference_ci


@pytest.fixture()
def logits():
    return torch.randn(4, 6, 11, generator=torch.Generator().manual_seed(0))


def test_logit_diff_and_prob(logits):
    torch.testing.assert_close(logit_diff(logits, 3, 5), logits[:, -1, 3] - logits[:, -1, 5])
    pos = torch.tensor([5, 2, 0, 3])
    correct, wrong = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 0, 0, 0])
    want = torch.stack([logits[b, pos[b], correct[b]] - logits[b, pos[b], 0] for b in range(4)])
    torch.testing.assert_close(logit_diff(logits, correct, wrong, pos=pos), want)
    torch.testing.assert_close(prob(logits, 7, pos=2), logits[:, 2].softmax(-1)[:, 7])


def test_kl_matches_torch(logits):
    other = logits + torch.randn_like(logits) * 0.3
    ref = torch.nn.functional.kl_div(
        other[:, -1].log_softmax(-1),
        logits[:, -1].log_softmax(-1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    torch.testing.assert_close(kl_div(logits, other), ref)
    assert kl_div(logits, logits, pos=None).abs().max() < 1e-6
    assert (kl_div(logits, other, pos=None) > 0).all()


def test_loss_matches_transformer_lens(logits):
    tokens = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    ref = lm_cross_entropy_loss(logits, tokens, per_token=True).mean(-1)
    torch.testing.assert_close(loss(logits, tokens), ref)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[0, 4:] = 0  # right padding: only the first 3 predictions of prompt 0 count
    per_token = lm_cross_entropy_loss(logits, tokens, per_token=True)
    torch.testing.assert_close(
        loss(logits, tokens, attention_mask=mask)[0], per_token[0, :3].mean()
    )


def test_normalized():
    torch.testing.assert_close(
        normalized(torch.tensor([2.0, 4.0, 3.0]), 4.0, 2.0), torch.tensor([0.0, 1.0, 0.5])
    )
    with pytest.raises(ValueError, match="undefined"):
        normalized(torch.tensor(1.0), 2.0, 2.0)


def test_bad_positions(logits):
    with pytest.raises(IndexError):
        logit_diff(logits, 0, 1, pos=6)
    with pytest.raises(ValueError, match=r"\[batch=4\]"):
        logit_diff(logits, 0, 1, pos=torch.tensor([0, 1]))


def test_bootstrap_ci_basic_properties():
    ci = bootstrap_ci(torch.full((20, 3), 2.5))
    assert torch.all(ci.low == 2.5) and torch.all(ci.high == 2.5) and ci.n == 20
    x = torch.randn(50, 2, 3, generator=torch.Generator().manual_seed(0))
    ci = bootstrap_ci(x, seed=1)
    assert ci.estimate.shape == (2, 3) and torch.allclose(ci.estimate, x.double().mean(0))
    assert torch.all(ci.low < ci.estimate) and torch.all(ci.estimate < ci.high)
    again = bootstrap_ci(x, seed=1)
    assert torch.equal(again.low, ci.low)
    # width shrinks like 1/sqrt(n)
    wide = bootstrap_ci(x[:12, 0, 0], seed=1)
    assert (wide.high - wide.low) > (ci.high - ci.low)[0, 0]


def test_bootstrap_coverage_is_near_nominal():
    g = torch.Generator().manual_seed(2)
    trials = torch.randn(300, 40, generator=g) + 1.0  # true mean 1
    hits = 0
    for t in trials:
        ci = bootstrap_ci(t, level=0.9, n_resamples=800, seed=int(t[0].abs() * 1e6) % 2**31)
        hits += int(ci.low <= 1.0 <= ci.high)
    assert 0.84 <= hits / 300 <= 0.95


def test_paired_difference_and_errors():
    a = torch.randn(30, generator=torch.Generator().manual_seed(3))
    ci = paired_difference_ci(a + 1.0, a)
    assert torch.allclose(ci.low, torch.tensor(1.0, dtype=torch.float64))  # pairs cancel the noise
    with pytest.raises(ValueError, match="same shape"):
        paired_difference_ci(a, a[:5])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(a, level=1.5)


def test_one_prompt_interval_warns_instead_of_looking_certain():
    with pytest.warns(OnePromptWarning, match="one prompt"):
        ci = bootstrap_ci(torch.tensor([[0.7, -0.2]]))
    assert torch.equal(ci.low, ci.high)  # still returned: the warning says what it means
    with pytest.warns(OnePromptWarning):
        paired_difference_ci(torch.tensor([1.0]), torch.tensor([0.5]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", OnePromptWarning)
        bootstrap_ci(torch.tensor([1.0, 2.0]))  # two prompts: no warning


def test_small_samples_are_warned_about_once_without_a_machine_path():
    import warnings

    from interp.stats import SMALL_SAMPLE, SmallSampleWarning

    with pytest.warns(SmallSampleWarning, match="over 8 prompts is too narrow") as rec:
        bootstrap_ci(torch.randn(8, 3))
    assert rec[0].filename == "interp/stats.py"  # stored notebooks show no machine path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bootstrap_ci(torch.randn(SMALL_SAMPLE, 3))  # 20 prompts: no warning
