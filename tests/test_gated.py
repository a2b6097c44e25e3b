"""Gated SAEs: the encoder (hand-built), the loss and its gradients against SAELens's
``GatedTrainingSAE``, training through the Trainer, save/load, and SAELens interop both ways."""

from __future__ import annotations

import pytest
import torch

from saes.config import ConfigError, SAEConfig, TrainConfig
from saes.losses import sae_loss
from saes.sae import SAE
from saes.trainer import Trainer

D_IN, D_SAE = 8, 32


def _random_sae(seed: int = 1) -> SAE:
    """Every gated parameter non-trivial, decoder rows off unit norm (the L1 term reads them)."""
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="gated"), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=g))
        sae.W_dec.mul_(0.5 + torch.rand(D_SAE, 1, generator=g))
        sae.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
        sae.act.r_mag.copy_(0.3 * torch.randn(D_SAE, generator=g))  # type: ignore[operator]
        sae.act.b_mag.copy_(0.5 * torch.randn(D_SAE, generator=g))  # type: ignore[operator]
    return sae


def _x(n: int = 64, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


def test_hand_built_gate_and_magnitude():
    """Latent 0: gate open, magnitude positive -> fires; latent 1: gate closed although the
    magnitude is positive; latent 2: gate open, magnitude negative -> 0."""
    sae = SAE(SAEConfig(d_in=2, d_sae=3, activation="gated"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        sae.b_dec.zero_()
        sae.b_enc.copy_(torch.tensor([0.0, -5.0, 0.0]))  # the gate bias
        sae.act.r_mag.zero_()  # type: ignore[operator]
        sae.act.b_mag.copy_(torch.tensor([1.0, 1.0, -9.0]))  # type: ignore[operator]
    acts = sae.encode(torch.tensor([[2.0, 7.0]]))
    # π_gate = (2, −3, 2); π_mag = 2·exp(0) + b_mag = (3, 3, −7).
    assert torch.equal(acts, torch.tensor([[3.0, 0.0, 0.0]]))
    with pytest.raises(TypeError, match=r"sae.encode\(x\)"):
        sae.act(torch.zeros(1, 3))


def test_loss_and_gradients_match_saelens():
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import TrainStepInput

    ours, x, lam = _random_sae(), _x(), 0.3
    theirs = sae_lens.GatedTrainingSAE(sae_lens.GatedTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_dec"):
            getattr(theirs, name).copy_(getattr(ours, name))
        theirs.b_gate.copy_(ours.b_enc)
        theirs.r_mag.copy_(ours.act.r_mag)  # type: ignore[arg-type]
        theirs.b_mag.copy_(ours.act.b_mag)  # type: ignore[arg-type]
    step = TrainStepInput(
        sae_in=x, coefficients={"l1": lam}, dead_neuron_mask=None, n_training_steps=0,
        is_logging_step=False,
    )  # fmt: skip
    out = theirs.training_forward_pass(step)
    loss, ours_out = sae_loss(ours, x, sparsity_coefficient=lam)
    torch.testing.assert_close(ours_out.acts, out.feature_acts, rtol=0, atol=1e-5)
    assert loss.total.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert loss.mse.item() == pytest.approx(out.losses["mse_loss"].item(), rel=1e-6)
    assert loss.sparsity.item() == pytest.approx(out.losses["l1_loss"].item(), rel=1e-6)
    assert loss.extra is not None
    assert loss.extra.item() == pytest.approx(
        out.losses["auxiliary_reconstruction_loss"].item(), rel=1e-6
    )
    out.loss.backward()
    loss.total.backward()
    pairs = {"W_enc": "W_enc", "W_dec": "W_dec", "b_dec": "b_dec", "b_enc": "b_gate"}
    for ours_name, their_name in pairs.items():
        torch.testing.assert_close(
            getattr(ours, ours_name).grad, getattr(theirs, their_name).grad,
            rtol=1e-4, atol=1e-5, msg=ours_name,
        )  # fmt: skip
    for name in ("r_mag", "b_mag"):
        torch.testing.assert_close(
            getattr(ours.act, name).grad, getattr(theirs, name).grad, rtol=1e-4, atol=1e-5,
            msg=name,
        )  # fmt: skip


def _sparse_data(batch: int = 64, seed: int = 1):
    g0 = torch.Generator().manual_seed(0)
    feats = torch.randn(24, D_IN, generator=g0)
    feats /= feats.norm(dim=-1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    while True:
        on = (torch.rand(batch, 24, generator=g) < 0.1).float()
        yield (on * (1 + torch.rand(batch, 24, generator=g))) @ feats


def test_trains_through_the_trainer_and_saves(tmp_path):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="gated"), seed=0)
    cfg = TrainConfig(total_steps=120, batch_size=64, lr=5e-3, log_every=20,
                      sparsity_coefficient=0.05, init_batches=1)  # fmt: skip
    x = torch.cat([b for b, _ in zip(_sparse_data(seed=7), range(4), strict=False)])
    before, _ = sae_loss(sae, x, sparsity_coefficient=0.05)
    trained = Trainer(cfg, sae, _sparse_data(), run_dir=tmp_path, progress=False).fit().eval()
    after, out = sae_loss(trained, x, sparsity_coefficient=0.05)
    assert after.total.item() < 0.5 * before.total.item()
    assert 0 < (out.acts != 0).sum(-1).float().mean().item() < D_SAE / 2  # sparse, not dead
    assert trained.W_dec.norm(dim=-1).sub(1).abs().max() > 1e-3  # rows left free
    back = SAE.load(tmp_path / "final")
    assert back.cfg.activation == "gated"
    torch.testing.assert_close(back.encode(x), trained.encode(x))


def test_saelens_interop_both_ways(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from saes.interop import export_to_saelens, import_from_saelens, to_saelens

    ours, x = _random_sae().eval(), _x(256)
    a = ours.encode(x)
    assert 0 < (a != 0).float().mean() < 0.9
    for theirs in (to_saelens(ours), sae_lens.SAE.load_from_disk(
        export_to_saelens(ours, tmp_path / "sl"))):  # fmt: skip
        assert type(theirs).__name__ == "GatedSAE"
        torch.testing.assert_close(theirs.encode(x), a, rtol=0, atol=1e-5)
        torch.testing.assert_close(theirs.decode(a), ours.decode(a), rtol=0, atol=1e-5)
    back = import_from_saelens(tmp_path / "sl")
    torch.testing.assert_close(back.encode(x), a, rtol=0, atol=1e-5)
    # A SAELens gated SAE that does not subtract b_dec first: compensated in both biases.
    sl = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                   apply_b_dec_to_input=False))  # fmt: skip
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in sl.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.5))
    imported = import_from_saelens(sl)
    torch.testing.assert_close(imported.encode(x), sl.encode(x), rtol=1e-5, atol=1e-5)
    assert (sl.encode(x) != 0).any()


def test_read_by_format_without_sae_lens(tmp_path):
    """What the TransformerLens 4 lane does: the folder read by format, no sae_lens."""
    from saes.interop import export_to_saelens, read_saelens_folder

    ours, x = _random_sae().eval(), _x(128)
    back = read_saelens_folder(export_to_saelens(ours, tmp_path / "sl"))
    torch.testing.assert_close(back.encode(x), ours.encode(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(back.act.r_mag, ours.act.r_mag)  # type: ignore[arg-type]


def test_gated_transcoder_is_refused():
    with pytest.raises(ConfigError, match="SAELens has no gated transcoder"):
        SAEConfig(d_in=4, d_sae=8, activation="gated", d_out=4)


def test_docstring_example_runs():
    import doctest

    import saes.gated

    result = doctest.testmod(saes.gated)
    assert result.attempted > 0 and result.failed == 0
