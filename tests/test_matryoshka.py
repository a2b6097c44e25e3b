"""Matryoshka BatchTopK: nested prefix losses (hand-built and against SAELens), training through
the Trainer, save/load, SAELens interop both ways, and bad configs."""

from __future__ import annotations

import math

import pytest
import torch

from saes.config import ConfigError, SAEConfig, TrainConfig
from saes.losses import sae_loss
from saes.matryoshka import prefix_fvu
from saes.sae import SAE
from saes.trainer import Trainer

D_IN, D_SAE, K, WIDTHS = 8, 32, 3, (4, 12, 32)


def _cfg(**kw: object) -> SAEConfig:
    base: dict[str, object] = dict(
        d_in=D_IN, d_sae=D_SAE, activation="matryoshka_batchtopk", k=K, matryoshka_widths=WIDTHS
    )
    return SAEConfig(**{**base, **kw})  # type: ignore[arg-type]


def _random_sae(seed: int = 1) -> SAE:
    """Biases and threshold all non-zero, so a conversion that drops one fails."""
    sae = SAE(_cfg(), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
        sae.act.threshold.fill_(0.7)  # type: ignore[operator]
    return sae


def _x(n: int = 64, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


# ---- the loss --------------------------------------------------------------------------------------
def test_hand_built_nested_losses():
    """Decoder rows e0, e1, e2, −e0; encoder = decoder transposed; no biases. With k=1 and two
    rows the batch keeps the 2 largest codes: 3 (row 0, latent 0) and 2 (row 0, latent 2)."""
    sae = SAE(SAEConfig(d_in=3, d_sae=4, activation="matryoshka_batchtopk", k=1,
                        matryoshka_widths=(2, 4)))  # fmt: skip
    w_dec = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]])
    with torch.no_grad():
        sae.W_dec.copy_(w_dec)
        sae.W_enc.copy_(w_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.tensor([[3.0, 0, 2], [0, 1, 0]])
    loss, out = sae_loss(sae, x)
    assert torch.equal(out.acts, torch.tensor([[3.0, 0, 2, 0], [0, 0, 0, 0]]))
    # Full: row 0 exact, row 1 misses e1 (1); prefix [0, 2): row 0 misses 2·e2 (4), row 1 (1).
    assert loss.mse.item() == pytest.approx(0.5)
    assert loss.extra is not None and loss.extra.item() == pytest.approx(2.5)
    assert loss.total.item() == pytest.approx(3.0)
    prefix = sae.act.prefix_losses(sae, x, out)  # type: ignore[operator]
    assert list(prefix) == [2] and prefix[2].item() == pytest.approx(2.5)


def test_loss_and_gradients_match_saelens():
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import TrainStepInput

    from saes.interop import to_saelens

    ours, x = _random_sae().train(), _x()
    theirs = to_saelens(ours)
    assert isinstance(theirs, sae_lens.MatryoshkaBatchTopKTrainingSAE)
    step = TrainStepInput(
        sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0,
        is_logging_step=False,
    )  # fmt: skip
    out = theirs.training_forward_pass(step)
    loss, _ = sae_loss(ours, x)
    assert loss.total.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert loss.mse.item() == pytest.approx(out.losses["mse_loss"].item(), rel=1e-6)
    inner = sum(out.losses[f"inner_mse_loss_{m}"] for m in WIDTHS[:-1])
    assert loss.extra is not None and loss.extra.item() == pytest.approx(inner.item(), rel=1e-6)
    assert loss.extra.item() > 0.1 * loss.mse.item()  # the inner terms are really there
    out.loss.backward()
    loss.total.backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        g_ours, g_theirs = getattr(ours, name).grad, getattr(theirs, name).grad
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-5, msg=name)


# ---- training, saving, loading -------------------------------------------------------------------------
def _planted(batch: int, seed: int, d_in: int = 16, n_feat: int = 32):
    """Sparse sums of fixed unit directions: 4 frequent features (p 0.25), the rest rare (0.02)."""
    g0 = torch.Generator().manual_seed(0)
    feats = torch.randn(n_feat, d_in, generator=g0)
    feats /= feats.norm(dim=-1, keepdim=True)
    p = torch.full((n_feat,), 0.02)
    p[:4] = 0.25
    g = torch.Generator().manual_seed(seed)
    while True:
        on = (torch.rand(batch, n_feat, generator=g) < p).float()
        yield (on * (1 + torch.rand(batch, n_feat, generator=g))) @ feats


def _train(activation: str, tmp_path=None, steps: int = 300):  # type: ignore[no-untyped-def]
    extra = {"matryoshka_widths": (4, 8, 32)} if activation == "matryoshka_batchtopk" else {}
    cfg = SAEConfig(d_in=16, d_sae=32, activation=activation, k=2, **extra)  # type: ignore[arg-type]
    tcfg = TrainConfig(total_steps=steps, batch_size=128, lr=1e-2, log_every=50,
                       dead_after_tokens=1280, init_batches=1, seed=0)  # fmt: skip
    return Trainer(tcfg, SAE(cfg, seed=0), _planted(128, seed=1), run_dir=tmp_path,
                   progress=False).fit().eval()  # fmt: skip


def test_trainer_trains_saves_and_loads(tmp_path):
    sae = _train("matryoshka_batchtopk", tmp_path, steps=60)
    rows = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line]
    assert '"extra_loss"' in rows[-1] and '"extra_loss": 0.0' not in rows[-1]
    assert float(sae.act.threshold) > 0  # type: ignore[arg-type]
    back = SAE.load(tmp_path / "final")
    assert (
        back.cfg.matryoshka_widths == (4, 8, 32) and back.cfg.activation == "matryoshka_batchtopk"
    )
    x = next(_planted(64, seed=5))
    torch.testing.assert_close(back.eval().encode(x), sae.encode(x))
    assert '"matryoshka_widths": [' in (tmp_path / "final" / "cfg.json").read_text()
    # Other SAEs' cfg.json stays as before (no new key).
    SAE(SAEConfig(d_in=4, d_sae=8, k=2)).save(tmp_path / "plain")
    assert "matryoshka" not in (tmp_path / "plain" / "cfg.json").read_text()


def test_trains_on_the_dense_path_only():
    """The kernels' sparse step trains TopK; BatchTopK's inference threshold (and Matryoshka's
    prefix losses) are computed on the dense path."""
    sae = SAE(_cfg())
    assert sae.sparse_kernel is None
    with pytest.raises(ValueError, match="sparse_path='on' needs a topk SAE"):
        Trainer(TrainConfig(total_steps=1, batch_size=8, sparse_path="on"), sae, iter([]),
                progress=False)  # fmt: skip


@pytest.mark.slow
def test_prefixes_reconstruct_better_than_plain_batchtopk():
    """On the planted problem Matryoshka's prefixes reconstruct at least as well as plain
    BatchTopK's (measured 2026-12-07: FVU at widths 4, 8, 32 = 0.359, 0.245, 0.050 against 0.377,
    0.333, 0.031; the frequent features hold about 64% of the variance, so 0.36 is the best 4
    latents can do). The whole dictionary pays a little for the nesting, as published."""
    x = torch.cat([b for b, _ in zip(_planted(512, seed=9), range(4), strict=False)])
    fvu = {a: prefix_fvu(_train(a), x, (4, 8, 32)) for a in ("matryoshka_batchtopk", "batchtopk")}
    mat, plain = fvu["matryoshka_batchtopk"], fvu["batchtopk"]
    assert mat[4] <= plain[4] + 0.005 and mat[8] < plain[8] - 0.05, fvu
    assert mat[4] < 0.40 and mat[32] < 0.1, fvu  # near the best prefix; the full one learnt


# ---- SAELens interop -------------------------------------------------------------------------------
def test_export_to_saelens_matryoshka_and_back(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from saes.interop import export_to_saelens, import_from_saelens, read_saelens_folder

    ours, x = _random_sae(), _x(256)
    theirs = sae_lens.TrainingSAE.load_from_disk(export_to_saelens(ours, tmp_path / "sl"))
    assert type(theirs).__name__ == "MatryoshkaBatchTopKTrainingSAE"
    assert theirs.cfg.matryoshka_widths == list(WIDTHS) and theirs.cfg.k == K
    assert float(theirs.topk_threshold) == pytest.approx(0.7)
    # SAELens's training class keeps batch top-k at inference: compare with ours in training mode.
    ours.train()
    a_ours, a_theirs = ours.encode(x), theirs.encode(x)
    torch.testing.assert_close(a_ours, a_theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.decode(a_ours), theirs.decode(a_ours), rtol=0, atol=1e-5)
    assert (a_ours != 0).sum().item() == K * x.shape[0]
    back = import_from_saelens(tmp_path / "sl")
    assert back.cfg.matryoshka_widths == WIDTHS and not back.training
    ours = _random_sae().eval()  # training-mode encode moved the threshold: start again
    torch.testing.assert_close(back.encode(x), ours.encode(x), rtol=0, atol=1e-5)
    # SAELens's inference save (JumpReLU at the threshold) computes our eval mode and imports back.
    theirs.save_inference_model(tmp_path / "inf")
    inf = sae_lens.SAE.load_from_disk(tmp_path / "inf")
    a = ours.encode(x)
    assert not torch.equal(a, ours.pre_acts(x).relu())  # the threshold is really compared
    torch.testing.assert_close(inf.encode(x), a, rtol=0, atol=1e-5)
    torch.testing.assert_close(inf.decode(a), ours.decode(a), rtol=0, atol=1e-5)
    again = import_from_saelens(tmp_path / "inf")
    assert again.cfg.activation == "matryoshka_batchtopk" and again.cfg.matryoshka_widths == WIDTHS
    torch.testing.assert_close(again.encode(x), a, rtol=0, atol=1e-5)
    by_format = read_saelens_folder(tmp_path / "inf")  # the TransformerLens 4 lane's reader
    assert by_format.cfg.matryoshka_widths == WIDTHS
    torch.testing.assert_close(by_format.encode(x), a, rtol=0, atol=1e-5)


def test_export_without_sae_lens_is_refused_before_writing(tmp_path, monkeypatch):
    import importlib.util

    from saes import interop

    real = importlib.util.find_spec
    monkeypatch.setattr(
        interop.importlib.util, "find_spec", lambda n, *a: None if n == "sae_lens" else real(n, *a)
    )
    with pytest.raises(interop.InteropError, match="goes through sae_lens"):
        interop.export_to_saelens(_random_sae(), tmp_path / "sl")
    assert not any(tmp_path.iterdir())


def test_import_saelens_trained_matryoshka_with_decoder_norm_rescaling():
    sae_lens = pytest.importorskip("sae_lens")
    from saes.interop import import_from_saelens

    # SAELens's default config rescales codes by decoder norms; the import folds the norms in.
    cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=list(WIDTHS)
    )
    assert cfg.rescale_acts_by_decoder_norm
    sl = sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in sl.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.5))
    x = _x(128)
    ours = import_from_saelens(sl).train()
    a_ours, a_theirs = ours.encode(x), sl.encode(x)
    torch.testing.assert_close(a_ours, a_theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.decode(a_ours), sl.decode(a_theirs), rtol=1e-5, atol=1e-5)


# ---- bad configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"matryoshka_widths": (12, 4, 32)}, "strictly increasing"),
        ({"matryoshka_widths": (4, 4, 32)}, "strictly increasing"),
        ({"matryoshka_widths": (0, 32)}, "positive"),
        ({"matryoshka_widths": (4, 12)}, r"must equal d_sae=32.*append 32"),
        ({"matryoshka_widths": (4, 12, 40)}, "must equal d_sae=32"),
        ({"matryoshka_widths": None}, r"needs matryoshka_widths.*e\.g\. \(8, 32\)"),
        ({"matryoshka_widths": ()}, "needs matryoshka_widths"),
        ({"k": 4}, "k=4 must be below the smallest matryoshka width 4"),
        ({"k": 40}, "k must satisfy"),
        ({"activation": "batchtopk"}, "matryoshka_widths is for activation='matryoshka_batchtopk'"),
        ({"d_out": 8}, "SAELens has no Matryoshka transcoder"),
        ({"matryoshka_widths": (4.0, 32)}, "integers"),
        ({"activation": "matryoshka"}, "did you mean 'matryoshka_batchtopk'"),
    ],
)
def test_bad_configs_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**kw)


def test_widths_from_json_become_a_tuple():
    from saes.config import config_from_dict

    cfg = config_from_dict(SAEConfig, {**_cfg().__dict__, "matryoshka_widths": [4, 12, 32]})
    assert cfg.matryoshka_widths == WIDTHS and cfg == _cfg()
    assert math.isfinite(hash(cfg.matryoshka_widths))


def test_docstring_example_runs():
    import doctest

    import saes.matryoshka

    result = doctest.testmod(saes.matryoshka)
    assert result.attempted > 0 and result.failed == 0
