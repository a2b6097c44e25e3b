"""The aux-k loss against a dense computation written from its formula (Gao et al. 2024, §A.2)."""

from __future__ import annotations

import pytest
import torch

from kernels.autograd import sparse_sae_loss
from kernels.dispatch import REFERENCE
from saes.config import SAEConfig
from saes.losses import aux_k_loss
from saes.sae import SAE

K_AUX = 8


def make_sae() -> SAE:
    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=4, activation="topk"), seed=0)
    with torch.no_grad():
        sae.b_enc.add_(0.5)  # most pre-activations positive, so every dead latent can contribute
    return sae


def dense_aux(sae: SAE, x: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """α-free aux-k: min(n_dead/k_aux, 1) · ‖ê − e‖² / ‖e − mean e‖², all in the SAE's space."""
    n_dead = int(dead.sum())
    xs = x * sae.input_scale
    out = sae(x)
    err = xs - out.recon * sae.input_scale
    pre = out.pre.masked_fill(~dead, float("-inf"))
    top = pre.topk(min(k_aux, n_dead), dim=-1)
    acts = torch.zeros_like(out.pre).scatter(-1, top.indices, top.values.relu())
    err_hat = acts @ sae.W_dec
    var = (err - err.mean(0)).pow(2).sum()
    return min(n_dead / k_aux, 1.0) * (err_hat - err).pow(2).sum() / var


@pytest.mark.parametrize("n_dead, scale", [(2, 0.25), (4, 0.5), (8, 1.0), (32, 1.0)])
def test_aux_k_scale_follows_dead_count(n_dead: int, scale: float) -> None:
    sae = make_sae()
    x = torch.randn(10, 16, generator=torch.Generator().manual_seed(1))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64, generator=torch.Generator().manual_seed(n_dead))[:n_dead]] = True
    want = dense_aux(sae, x, dead, K_AUX)
    unscaled = want / scale
    got = aux_k_loss(sae, x, sae(x), dead, K_AUX)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float((got / unscaled).detach()) == pytest.approx(scale, rel=1e-5)
    # The sparse (kernel) path, reference backend, in the normalised space it takes.
    xs = x * sae.input_scale
    loss, _ = sparse_sae_loss(
        xs, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, 4,
        dead_mask=dead, k_aux=K_AUX, aux_coefficient=1.0, backend=REFERENCE,
    )  # fmt: skip
    torch.testing.assert_close(loss.aux, want, rtol=1e-5, atol=1e-6)


def test_jumprelu_loss_and_gradients_match_saelens_direct_threshold() -> None:
    # SAELens 6's JumpReLUTrainingSAE ("step" L0 loss, threshold trained directly) on the same
    # weights: same loss, same gradient for every parameter, θ included.
    sl = pytest.importorskip("sae_lens")
    from saes.losses import sae_loss

    cfg = SAEConfig(
        d_in=16, d_sae=64, activation="jumprelu", jumprelu_threshold_param="direct",
        jumprelu_init_threshold=0.05, jumprelu_bandwidth=0.1,
    )  # fmt: skip
    ours = SAE(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ours.W_enc.copy_(torch.randn(16, 64, generator=g) * 0.1)
        ours.b_enc.copy_(torch.randn(64, generator=g) * 0.05)
        ours.b_dec.copy_(torch.randn(16, generator=g) * 0.1)
        ours.act.threshold_param.uniform_(0.0, 0.1, generator=g)
    theirs = sl.JumpReLUTrainingSAE(
        sl.JumpReLUTrainingSAEConfig(
            d_in=16, d_sae=64, jumprelu_bandwidth=0.1, l0_coefficient=0.3, dtype="float32"
        )
    )
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(theirs, name).copy_(getattr(ours, name))
        theirs.threshold.copy_(ours.act.threshold_param)
    x = torch.randn(128, 16, generator=g)
    loss, _ = sae_loss(ours, x, sparsity_coefficient=0.3)
    loss.total.backward()
    step = sl.saes.sae.TrainStepInput(
        sae_in=x,
        coefficients={"l0": 0.3},
        dead_neuron_mask=None,
        n_training_steps=0,
        is_logging_step=False,
    )
    out = theirs.training_forward_pass(step)
    out.loss.backward()
    torch.testing.assert_close(loss.total, out.loss)
    torch.testing.assert_close(loss.sparsity, out.losses["l0_loss"])
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad)
    torch.testing.assert_close(ours.act.threshold_param.grad, theirs.threshold.grad)
    assert ours.act.threshold_param.grad.abs().sum() > 0


def test_sparse_step_stats_equal_the_dense_ones() -> None:
    from saes.losses import step_loss

    sae = make_sae()
    with torch.no_grad():
        sae.b_enc[:40] = -5.0  # most rows leave these latents out (or keep them at 0)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    _, sparse = step_loss(sae, x, sparse=True)
    _, dense = step_loss(sae, x, sparse=False)
    assert torch.equal(sparse.fired, dense.fired)
    assert 0 < int(sparse.fired.sum()) < 64
    assert sparse.l0 is not None and dense.l0 is not None
    torch.testing.assert_close(sparse.l0, dense.l0)


def _each_registered_sae(param: str = "direct") -> list[SAE]:
    from saes.activations import ACTIVATIONS

    saes = []
    for name in sorted(ACTIVATIONS):
        extra = {"matryoshka_widths": [16, 64]} if name.startswith("matryoshka") else {}
        cfg = SAEConfig(d_in=16, d_sae=64, k=4, activation=name, jumprelu_init_threshold=0.05,
                        jumprelu_threshold_param=param, **extra)  # fmt: skip
        saes.append(SAE(cfg, seed=0))
    return saes


@pytest.mark.parametrize("param", ["direct", "log"])
def test_activations_marked_nonnegative_never_give_a_negative_code(param: str) -> None:
    """The flag lets the trainer count firing from the column maximum alone; it must be true of
    the codes, even with the activation's own parameters pushed below zero (a JumpReLU θ < 0
    would pass codes in (θ, 0) if the training forward did not project it)."""
    from saes.activations import architecture
    from saes.losses import sae_loss

    x = torch.randn(256, 16) * 3
    for sae in _each_registered_sae(param):
        sae.train()
        opt = torch.optim.SGD(sae.parameters(), lr=5.0)  # large steps: θ and biases go negative
        with torch.no_grad():
            for p in sae.act.parameters():
                p.sub_(2.0)
        for _ in range(3):
            loss, out = sae_loss(sae, x, sparsity_coefficient=1.0)
            opt.zero_grad()
            loss.total.backward()
            opt.step()
            if architecture(sae.act).nonnegative:
                assert out.acts.min() >= 0, sae.cfg.activation


def test_dense_stats_counts_a_latent_that_fires_only_negatively_unless_codes_are_nonnegative():
    from saes.losses import dense_stats
    from saes.sae import SAEOutput

    acts = torch.zeros(4, 3)
    acts[1, 0], acts[2, 2] = 2.0, -1.0
    out = SAEOutput(torch.zeros(4, 2), acts, acts)
    assert dense_stats(out).fired.tolist() == [True, False, True]
    assert dense_stats(out, nonnegative=True).fired.tolist() == [True, False, False]
