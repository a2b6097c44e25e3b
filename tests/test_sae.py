import pytest
import torch

from saes.config import ConfigError, SAEConfig, TrainConfig, config_from_dict
from saes.losses import aux_k_loss, sae_loss
from saes.sae import SAE, SAELoadError, geometric_median

ACTS = ["topk", "batchtopk", "jumprelu", "relu"]


def make(act="topk", **kw):
    return SAE(SAEConfig(d_in=8, d_sae=32, activation=act, k=4, **kw), seed=0)


def test_init_decoder_is_encoder_transpose_with_unit_rows():
    sae = make()
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))


@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_dense_formula(act):
    sae = make(act)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(16, 8)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    out = sae(x)
    torch.testing.assert_close(out.pre, pre)
    if act == "topk":
        ref = torch.zeros_like(pre)
        v, i = pre.topk(4, dim=-1)
        ref.scatter_(-1, i, v.relu())
        torch.testing.assert_close(out.acts, ref)
        assert ((out.acts != 0).sum(-1) <= 4).all()
    elif act == "batchtopk":
        assert (out.acts != 0).sum() <= 4 * 16
        kept = pre.relu().flatten().topk(64).values.min()
        assert torch.all(out.acts[(pre > kept)] != 0)
    elif act == "jumprelu":
        torch.testing.assert_close(out.acts, pre * (pre > sae.act.threshold))
    else:
        torch.testing.assert_close(out.acts, pre.relu())
    torch.testing.assert_close(out.recon, out.acts @ sae.W_dec + sae.b_dec)


def test_jumprelu_threshold_gradient_is_the_rectangle_kernel_estimate():
    sae = make("jumprelu", jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.2)
    pre = torch.tensor([[0.1, 0.3, 0.05, 2.0]]).repeat(1, 8)
    acts = sae.act(pre)
    acts.sum().backward()
    theta = sae.act.threshold.detach()
    inside = ((pre - theta).abs() < 0.25).float()[0]
    expected = -(theta / 0.5) * inside * theta  # chain rule through theta = exp(log_theta)
    torch.testing.assert_close(sae.act.log_threshold.grad, expected)


def test_batchtopk_uses_its_threshold_at_inference():
    sae = make("batchtopk")
    x = torch.randn(64, 8)
    sae(x)  # training mode: estimates the threshold
    sae.eval()
    out = sae(x)
    torch.testing.assert_close(out.acts, out.pre * (out.pre > sae.act.threshold))
    with pytest.raises(RuntimeError, match="threshold"):
        make("batchtopk").eval()(x)


def test_normalisation_is_folded_at_save(tmp_path):
    sae = make("topk", normalize_activations="expected_norm")
    x = torch.randn(256, 8) * 7 + 3
    sae.init_from_data_(x)
    assert sae.input_scale.item() == pytest.approx(8**0.5 / x.norm(dim=-1).mean().item(), rel=1e-5)
    sae.save(tmp_path)
    loaded = SAE.load(tmp_path)
    assert loaded.cfg.normalize_activations == "none" and loaded.input_scale.item() == 1.0
    torch.testing.assert_close(loaded(x).recon, sae(x).recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)


def test_geometric_median_resists_outliers():
    x = torch.cat([torch.randn(99, 3) * 0.01, torch.full((1, 3), 1000.0)])
    assert geometric_median(x).abs().max() < 0.1
    assert x.mean(0).abs().max() > 9


def test_decoder_projection_keeps_unit_norm():
    sae = make()
    x = torch.randn(32, 8)
    loss, _ = sae_loss(sae, x)
    loss.total.backward()
    sae.remove_parallel_grad_()
    # the remaining gradient is orthogonal to each row
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))


def test_losses_by_activation():
    x = torch.randn(32, 8)
    relu = make("relu")
    loss, out = sae_loss(relu, x, sparsity_coefficient=0.5)
    torch.testing.assert_close(
        loss.sparsity, 0.5 * (out.acts * relu.W_dec.norm(dim=-1)).sum(-1).mean()
    )
    jump = make("jumprelu")
    loss, out = sae_loss(jump, x, sparsity_coefficient=0.1)
    torch.testing.assert_close(loss.sparsity, 0.1 * (out.acts != 0).sum(-1).float().mean())
    topk = make("topk")
    dead = torch.zeros(32, dtype=torch.bool)
    loss, out = sae_loss(topk, x, dead=dead, k_aux=4, aux_coefficient=1.0)
    assert loss.aux.item() == 0.0  # no dead latents, no aux loss
    dead[:10] = True
    aux = aux_k_loss(topk, x, out, dead, 4)
    assert aux.item() > 0
    aux.backward()
    assert topk.W_dec.grad[10:].abs().sum() == 0  # only dead latents are trained by aux-k


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="k must satisfy"):
        SAEConfig(d_in=8, d_sae=32, k=32)
    with pytest.raises(ConfigError, match="did you mean 'topk'"):
        SAEConfig(d_in=8, d_sae=32, activation="topK")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        config_from_dict(TrainConfig, {"batchsize": 3})
    with pytest.raises(ValueError, match="width d_in=8"):
        make()(torch.randn(2, 9))


def test_load_refuses_corrupt_and_foreign_checkpoints(tmp_path):
    make().save(tmp_path / "ok")
    w = tmp_path / "ok" / "sae.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(SAELoadError, match="corrupted"):
        SAE.load(tmp_path / "ok")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "cfg.json").write_text('{"d_in": 8}')
    (tmp_path / "foreign" / "sae.safetensors").write_bytes(b"")
    with pytest.raises(SAELoadError, match="not a mechscope SAE"):
        SAE.load(tmp_path / "foreign")
    with pytest.raises(SAELoadError, match="needs cfg.json"):
        SAE.load(tmp_path / "missing")
