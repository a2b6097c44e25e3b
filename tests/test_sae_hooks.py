"""Dictionaries as interventions: hook points on the latents and the error, the spliced forward.

The spliced output is recons + error with the error computed from the unhooked reconstruction, so
with no hook it is the target, and a hook on the latents moves it by exactly the decoder's change.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from saes.activations import Activation
from saes.config import SAEConfig
from saes.losses import sae_loss
from saes.sae import HOOK_NAMES, SAE
from saes.transcoder import Transcoder

ACTS = ["topk", "batchtopk", "jumprelu", "relu"]
D, D_SAE, D_OUT = 8, 32, 6


def make(act: str = "topk", *, transcoder: bool = False) -> SAE:
    """A trained-looking dictionary in eval mode: biases set so that latents fire and the
    reconstruction is far from the target (so the error term matters)."""
    if transcoder:
        cfg = SAEConfig(d_in=D, d_sae=D_SAE, activation=act, k=4, d_out=D_OUT, skip_connection=True)  # type: ignore[arg-type]
        sae: SAE = Transcoder(cfg, seed=0)
    else:
        sae = SAE(SAEConfig(d_in=D, d_sae=D_SAE, activation=act, k=4), seed=0)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.rand(D_SAE, generator=g) * 0.3)
        sae.b_dec.normal_(generator=g)
        if transcoder:
            sae.W_skip.normal_(generator=g)  # type: ignore[operator]
    if act == "batchtopk":
        sae(torch.randn(64, D, generator=g))  # training mode: sets the inference threshold
    return sae.eval()


def inputs(
    transcoder: bool, shape: tuple[int, ...] = (16,)
) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, D, generator=g) * 2
    y = torch.randn(*shape, D_OUT, generator=g) if transcoder else None
    return x, y


def a_firing_latent(acts: torch.Tensor) -> int:
    counts = (acts.reshape(-1, acts.shape[-1]) != 0).sum(0)
    return int(counts.argmax())


@pytest.mark.parametrize("transcoder", [False, True], ids=["sae", "transcoder"])
@pytest.mark.parametrize("act", ACTS)
def test_spliced_output_is_the_target_with_no_hooks(act: str, transcoder: bool) -> None:
    sae = make(act, transcoder=transcoder)
    x, y = inputs(transcoder)
    target = x if y is None else y
    recon = sae(x, y).recon
    assert (recon - target).abs().max() > 0.1  # the error term is doing real work
    torch.testing.assert_close(sae.spliced(x, y), target, rtol=0, atol=1e-5)
    torch.testing.assert_close(sae.spliced(x, y, with_error=False), recon)
    out = sae(x, y)
    assert out.error is not None
    torch.testing.assert_close(out.error, target - out.recon)


@pytest.mark.parametrize("transcoder", [False, True], ids=["sae", "transcoder"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(16,), (3, 5)], ids=["rows", "batch-pos"])
def test_ablating_a_latent_moves_the_output_by_its_decoder_row(
    act: str, transcoder: bool, shape: tuple[int, ...]
) -> None:
    sae = make(act, transcoder=transcoder)
    x, y = inputs(transcoder, shape)
    acts = sae(x).acts
    i = a_firing_latent(acts)
    assert (acts[..., i] != 0).sum() >= 2

    def zero_latent(a: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        assert hook.name == "hook_sae_acts_post" and a.shape == (*shape, D_SAE)
        a = a.clone()
        a[..., i] = 0
        return a

    clean = sae.spliced(x, y)
    with sae.hooks([("hook_sae_acts_post", zero_latent)]):
        ablated = sae.spliced(x, y)
    want = -acts[..., i, None] * sae.W_dec[i]
    torch.testing.assert_close(ablated - clean, want, rtol=1e-5, atol=1e-5)
    assert (ablated - clean).abs().max() > 0.01
    # the hook is gone after the block
    torch.testing.assert_close(sae.spliced(x, y), clean)


@pytest.mark.parametrize("transcoder", [False, True], ids=["sae", "transcoder"])
def test_the_error_term_stays_fixed_while_latents_and_input_are_patched(transcoder: bool) -> None:
    sae = make("topk", transcoder=transcoder)
    x, y = inputs(transcoder)
    target = x if y is None else y
    seen: dict[str, torch.Tensor] = {}

    def record(t: torch.Tensor, hook: HookPoint) -> None:
        seen[hook.name] = t.detach().clone()  # type: ignore[index]

    def double(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return t * 2

    def shift(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return t + 1.0

    with sae.hooks([("hook_sae_error", record), ("hook_sae_recons", record)]):
        sae.spliced(x, y)
    clean_error, clean_recon = seen["hook_sae_error"], seen["hook_sae_recons"]
    torch.testing.assert_close(clean_error, target - clean_recon)
    for patch in ("hook_sae_acts_post", "hook_sae_acts_pre", "hook_sae_input"):
        fn = double if patch != "hook_sae_input" else shift
        with sae.hooks([(patch, fn), ("hook_sae_error", record), ("hook_sae_recons", record)]):
            out = sae.spliced(x, y)
        assert not torch.allclose(seen["hook_sae_recons"], clean_recon), patch
        torch.testing.assert_close(seen["hook_sae_error"], clean_error, msg=patch)
        torch.testing.assert_close(out, seen["hook_sae_recons"] + clean_error, msg=patch)

    def zero(t: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return torch.zeros_like(t)

    with sae.hooks([("hook_sae_error", zero)]):  # error ablated: the replacement's output
        torch.testing.assert_close(sae.spliced(x, y), sae(x).recon)


def test_hook_points_names_and_nodes() -> None:
    sae = make()
    tc = make(transcoder=True)
    assert (
        sae.hook_names()
        == HOOK_NAMES
        == (
            "hook_sae_input",
            "hook_sae_acts_pre",
            "hook_sae_acts_post",
            "hook_sae_recons",
            "hook_sae_error",
            "hook_sae_output",
        )
    )
    points = sae.hook_dict
    assert list(points) == list(HOOK_NAMES)
    assert all(isinstance(hp, HookPoint) and hp.name == n for n, hp in points.items())
    assert sae.hook_sae_acts_post is points["hook_sae_acts_post"]
    assert sae.node_hooks() == {
        "input": "hook_sae_input",
        "latent": "hook_sae_acts_post",
        "error": "hook_sae_error",
        "output": "hook_sae_output",
    }
    assert sae.node_widths() == {"input": D, "latent": D_SAE, "error": D, "output": D}
    assert tc.node_widths() == {"input": D, "latent": D_SAE, "error": D_OUT, "output": D_OUT}
    assert (sae.kind, tc.kind) == ("sae", "transcoder")
    assert set(sae.state_dict()) == {"W_dec", "W_enc", "b_enc", "b_dec", "input_scale"}
    with (
        pytest.raises(ValueError, match="did you mean 'hook_sae_acts_post'"),
        sae.hooks([("hook_sae_act_post", lambda t, hook: t)]),
    ):
        pass
    assert not any(hp.fwd_hooks for hp in points.values())  # a bad name attached nothing


def test_interp_hooks_drive_a_dictionary_like_a_model() -> None:
    from interp.hooks import hooks

    sae = make()
    x, _ = inputs(False)
    i = a_firing_latent(sae(x).acts)

    def zero_latent(a: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        a = a.clone()
        a[:, i] = 0
        return a

    with sae.hooks([("hook_sae_acts_post", zero_latent)]):
        want = sae.spliced(x)
    with hooks(sae, fwd=[("hook_sae_acts_post", zero_latent)]):
        got = sae.spliced(x)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, sae.spliced(x))


def test_training_runs_without_the_hook_points() -> None:
    sae = make("relu")
    x, _ = inputs(False)
    want, _ = sae_loss(sae, x, sparsity_coefficient=0.5)

    def wreck(a: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return a * 0 + 100.0

    with sae.hooks([(name, wreck) for name in HOOK_NAMES]):
        got, out = sae_loss(sae, x, sparsity_coefficient=0.5)
        assert not torch.allclose(sae(x).recon, out.recon)  # the hooks are live for forward
    assert got == want


def test_importing_and_training_need_no_transformer_lens() -> None:
    code = textwrap.dedent("""
        import sys, torch
        from saes import SAE, SAEConfig, Transcoder
        from saes.losses import sae_loss
        sae = SAE(SAEConfig(d_in=8, d_sae=32, k=4), seed=0)
        x = torch.randn(16, 8)
        sae_loss(sae, x)[0].total.backward()
        torch.testing.assert_close(sae.eval().spliced(x), x)
        tc = Transcoder(SAEConfig(d_in=8, d_sae=32, k=4, d_out=4), seed=0)
        tc.spliced(x, torch.randn(16, 4))
        assert "transformer_lens" not in sys.modules, "TransformerLens was imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_losses_come_from_the_activation_object() -> None:
    """The loss asks the activation for its terms: a new architecture needs no loss branches."""

    class SquaredReLU(Activation):
        def forward(self, pre: torch.Tensor) -> torch.Tensor:
            return pre.relu()

        def sparsity_loss(self, sae, out, coefficient):  # type: ignore[no-untyped-def]
            return coefficient * out.acts.pow(2).sum(-1).mean()

        def aux_loss(self, sae, target, out, dead, k_aux, coefficient):  # type: ignore[no-untyped-def]
            return coefficient * out.pre.abs().mean()

    sae = SAE(SAEConfig(d_in=D, d_sae=D_SAE, activation="relu"), seed=0)
    sae.act = SquaredReLU()
    x, _ = inputs(False)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    loss, out = sae_loss(sae, x, sparsity_coefficient=0.3, dead=dead, aux_coefficient=0.2)
    torch.testing.assert_close(loss.sparsity, 0.3 * out.acts.pow(2).sum(-1).mean())
    torch.testing.assert_close(loss.aux, 0.2 * out.pre.abs().mean())
    torch.testing.assert_close(loss.total, loss.mse + loss.sparsity + loss.aux)
    assert sae.unit_norm_decoder and sae.sparse_kernel is None
