"""Tests for saes.absorption, saes.probing and saes.offline_metrics on hand-built SAEs and
synthetic activations with known answers."""

import pytest
import torch

from saes.absorption import absorption_scores, first_letter_words, main_latents, spelling_prompt
from saes.config import SAEConfig
from saes.offline_metrics import resolve_sae, summarize_seeds
from saes.probing import fit_probe, k_sparse_probe, mean_diff_ranking
from saes.sae import SAE


def absorbing_sae() -> SAE:
    """Latent 0 is "starts with A" (reads e0 − e1, writes e0); latent 1 absorbs it on some words
    (reads e1, writes (e0 + e1)/√2); latent 2 is another letter (e2). Bias −0.1 everywhere."""
    sae = SAE(SAEConfig(d_in=6, d_sae=3, activation="relu"))
    e = torch.eye(6)
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([e[0] - e[1], e[1], e[2]], 1))
        sae.W_dec.copy_(torch.stack([e[0], (e[0] + e[1]) / 2**0.5, e[2]]))
        sae.b_enc.fill_(-0.1)
        sae.b_dec.zero_()
    return sae


def a_words(n: int, absorbed: list[int]) -> torch.Tensor:
    """A-words: e0 plus word-specific noise on dims no latent reads; absorbed ones add e1."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 6)
    x[:, 0] = 1.0
    x[:, 4:] = 0.05 * torch.randn(n, 2, generator=g)
    x[absorbed, 1] = 1.0
    return x


def test_absorption_rate_equals_the_suppressed_fraction():
    sae, absorbed = absorbing_sae(), [1, 4, 7, 8, 13]
    x = a_words(20, absorbed)
    with torch.no_grad():
        f = sae.encode(x)
    assert (f[absorbed, 0] == 0).all() and (f[:, 0] > 0).sum() == 15  # the construction holds
    frac, full = absorption_scores(x, f, sae.W_dec, torch.eye(6)[0], [0])
    expect = torch.zeros(20, dtype=torch.bool)
    expect[absorbed] = True
    assert torch.equal(full, expect)
    assert torch.equal(frac, expect.float())
    assert frac.mean().item() == pytest.approx(5 / 20)


def test_partial_absorption_fraction_matches_hand_computation():
    # The main latent fires weakly, the absorber carries most: a/(a+M) by hand.
    sae = absorbing_sae()
    x = torch.tensor([[1.0, 0.8, 0, 0, 0, 0]])
    with torch.no_grad():
        f = sae.encode(x)  # latent 0: 1 − 0.8 − 0.1 = 0.1; latent 1: 0.8 − 0.1 = 0.7
    m, a, p = 0.1, 0.7 / 2**0.5, 1.0
    frac, full = absorption_scores(x, f, sae.W_dec, torch.eye(6)[0], [0])
    assert a / p >= 0.4 and m < p
    assert frac.item() == pytest.approx(min(a, p - m) / (min(a, p - m) + m), abs=1e-6)
    assert not full.item()  # the main latent fired


def test_absorber_off_probe_direction_is_not_absorption():
    sae = absorbing_sae()
    with torch.no_grad():
        sae.W_dec[1] = torch.eye(6)[3]  # the absorber now writes orthogonally to the probe
    x = a_words(10, [0, 1, 2])
    frac, full = absorption_scores(x, sae.encode(x).detach(), sae.W_dec, torch.eye(6)[0], [0])
    assert frac.sum() == 0 and not full.any()


def test_main_latents_finds_the_planted_letter_latent():
    g = torch.Generator().manual_seed(1)
    y = (torch.arange(300) % 4 == 0).long()
    f = torch.rand(300, 40, generator=g) * (torch.rand(300, 40, generator=g) < 0.1)
    f[:, 17] = 2.0 * y
    main, f1s = main_latents(f[:200], y[:200], f[200:], y[200:])
    assert main == [17] and f1s[0] == 1.0


def test_k_sparse_probe_recovers_a_planted_latent():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (600,), generator=g)
    acts = torch.relu(torch.randn(600, 200, generator=g))
    acts[:, 123] += 4.0 * y
    r = k_sparse_probe(acts[:300], y[:300], acts[300:], y[300:], ks=(1, 5))
    assert r.latents[1] == [123]
    assert r.accuracy[1] >= 0.99 and r.accuracy[5] >= 0.99


def test_k_sparse_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(2)
    acts = torch.relu(torch.randn(2600, 100, generator=g))
    y = torch.randint(0, 2, (2600,), generator=g)
    r = k_sparse_probe(acts[:600], y[:600], acts[600:], y[600:], ks=(1, 2, 5, 20))
    for k, acc in r.accuracy.items():
        assert abs(acc - 0.5) < 0.06, (k, acc)  # 2,000 test rows: sd 0.011


def test_probe_matches_a_dense_reference_on_separable_classes():
    # Three Gaussian blobs: the softmax probe classifies held-out points like the true means do.
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 10, generator=g) * 3
    y = torch.randint(0, 3, (900,), generator=g)
    x = means[y] + torch.randn(900, 10, generator=g)
    probe = fit_probe(x[:600], y[:600])
    nearest = torch.cdist(x[600:], means).argmin(-1)
    assert (probe.predict(x[600:]) == nearest).float().mean() > 0.97


def test_mean_diff_ranking_orders_by_absolute_difference():
    acts = torch.tensor([[0.0, 1.0, 5.0], [0.0, 3.0, 0.0], [2.0, 0.0, 5.0], [2.0, 0.0, 0.0]])
    y = torch.tensor([1, 1, 0, 0])
    assert mean_diff_ranking(acts, y).tolist() == [0, 1, 2]  # |−2|, |2|, |0|: stable order


def test_bad_inputs_fail_clearly():
    acts, y = torch.rand(20, 8), torch.arange(20) % 2
    with pytest.raises(ValueError, match=r"k must be in 1\.\.8"):
        k_sparse_probe(acts, y, acts, y, ks=(1, 9))
    with pytest.raises(ValueError, match="single class"):
        k_sparse_probe(acts, torch.zeros(20, dtype=torch.long), acts, y, ks=(1,))
    with pytest.raises(ValueError, match="single class"):
        fit_probe(acts, torch.ones(20, dtype=torch.long))
    with pytest.raises(ValueError, match="binary"):
        k_sparse_probe(acts, y * 2, acts, y, ks=(1,))
    with pytest.raises(ValueError, match="at least one"):
        absorption_scores(acts[:, :6], acts[:, :3], torch.rand(3, 6), torch.rand(6), [])
    with pytest.raises(FileNotFoundError, match="final/sae.safetensors"):
        resolve_sae("/nonexistent/run")


def test_unknown_token_property_suggests_the_close_name():
    from saes.probing import token_property_rows

    with pytest.raises(ValueError, match="did you mean 'capitalised'"):
        token_property_rows(None, "blocks.0.hook_resid_post", ["x"], "capitalized")


def test_cli_rejects_one_play_before_loading_anything(tmp_path, capsys):
    from saes.offline_metrics import main

    absorbing_sae().save(tmp_path / "sae")
    with pytest.raises(SystemExit):
        main(["--sae", str(tmp_path / "sae"), "--plays", "3"])
    assert "2 to 5 plays" in capsys.readouterr().err


class _Tok:
    vocab = {"a": 0, "Ġcat": 1, "Ġdog": 2, "Ġx1": 3, "ĠAnt": 4, "Ġa": 5, "Ġé": 6}
    text = {0: "a", 1: " cat", 2: " dog", 3: " x1", 4: " Ant", 5: " a", 6: " é"}

    def get_vocab(self):
        return self.vocab

    def decode(self, ids):
        return self.text[ids[0]]


def test_vocabulary_words_and_prompt():
    words = first_letter_words(_Tok())
    assert (
        words["a"] == [(4, " Ant")] and words["c"] == [(1, " cat")] and words["d"] == [(2, " dog")]
    )
    assert sum(map(len, words.values())) == 3  # "a", " x1", " a", " é" are not words
    assert spelling_prompt(" cat", [" dog", " Ant"]).endswith(
        "\n dog has the first letter: D\n Ant has the first letter: A\n cat has the first letter:"
    )


def test_seed_summary_uses_the_sweep_interval():
    pytest.importorskip("scipy")  # saes.sweep's t quantiles; the TransformerLens 4 lane lacks it
    s = summarize_seeds([0.2, 0.3, 0.4])
    assert s["mean"] == pytest.approx(0.3) and s["low"] < 0.3 < s["high"]


@pytest.mark.slow
def test_word_activations_match_a_plain_forward_on_smollm2(smollm2):
    from saes.absorption import word_activations

    hook, tok = "blocks.3.hook_resid_post", smollm2.tokenizer
    words = [" cat", " dog", " Ant"]
    ids = [tok(w)["input_ids"][-1] for w in words]
    prompts = [spelling_prompt(w, [" bird"] * (i + 1)) for i, w in enumerate(words)]  # 3 lengths
    x = word_activations(smollm2, hook, prompts, ids, batch=2)
    for row, prompt in zip(x, prompts, strict=True):
        _, cache = smollm2.run_with_cache(
            torch.tensor([tok(prompt)["input_ids"]]), names_filter=hook
        )
        torch.testing.assert_close(row, cache[hook][0, -6], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="is not at position -6"):
        word_activations(smollm2, hook, [spelling_prompt(" Zanzibarian", [])], [ids[0]], batch=1)


@pytest.mark.parametrize("module", ["saes.probing", "saes.absorption", "saes.offline_metrics"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    if module == "saes.offline_metrics":
        pytest.importorskip("scipy")
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
