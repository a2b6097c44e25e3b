import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from saes.config import ConfigError, SAEConfig, TrainConfig, config_from_dict
from saes.losses import aux_k_loss, sae_loss
from saes.sae import SAE, SAELoadError, geometric_median

ACTS = ["topk", "batchtopk", "jumprelu", "relu"]


def make(act="topk", **kw):
    return SAE(SAEConfig(d_in=8, d_sae=32, activation=act, k=4, **kw), seed=0)


def test_init_encoder_is_scaled_decoder_transpose_with_unit_rows():
    sae = make()
    torch.testing.assert_close(sae.W_enc, 0.01 * sae.W_dec.T)  # SAELens's initial function
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))
    torch.testing.assert_close(make(encoder_init_norm=1.0).W_enc, sae.W_dec.T)
    relu = make("relu")  # free decoder norms: the penalty reads them; unscaled as before
    torch.testing.assert_close(relu.W_enc, relu.W_dec.T)
    jump = make("jumprelu")  # its own default, chosen for synthetic feature recovery
    torch.testing.assert_close(jump.W_enc, 0.1 * jump.W_dec.T)
    torch.testing.assert_close(make("jumprelu", encoder_init_norm=0.01).W_enc, 0.01 * jump.W_dec.T)
    with pytest.raises(ConfigError, match="encoder_init_norm"):
        make(encoder_init_norm=0.0)


def test_init_computes_saelens_initial_function():
    # SAELens's TopK SAE at its defaults (decoder rows of norm 0.1, encoder = decoder transpose,
    # codes rescaled by decoder norms) with our unit directions computes what ours computes.
    sl = pytest.importorskip("sae_lens")
    ours = make()
    theirs = sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(d_in=8, d_sae=32, k=4))
    with torch.no_grad():
        theirs.W_dec.copy_(0.1 * ours.W_dec)
        theirs.W_enc.copy_(theirs.W_dec.T)
    x = torch.randn(16, 8)
    torch.testing.assert_close(theirs(x), ours(x).recon)


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


def test_encoder_gradients_equal_plain_autograd():
    sae = make("relu")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(16, 8, generator=g).requires_grad_()
    up = torch.randn(16, 32, generator=g)
    params = [x, sae.W_enc, sae.b_enc, sae.b_dec]
    want = torch.autograd.grad(
        (torch.nn.functional.linear(x - sae.b_dec, sae.W_enc.T, sae.b_enc) * up).sum(), params
    )
    got = torch.autograd.grad((sae.pre_acts(x) * up).sum(), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # training data needs no ∂x: the b_dec gradient comes without it
    (no_x,) = torch.autograd.grad((sae.pre_acts(x.detach()) * up).sum(), [sae.b_dec])
    torch.testing.assert_close(no_x, want[3])


def test_jumprelu_threshold_gradient_is_the_rectangle_kernel_estimate():
    sae = make(
        "jumprelu", jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.2,
        jumprelu_threshold_param="log",
    )  # fmt: skip
    pre = torch.tensor([[0.1, 0.3, 0.05, 2.0]]).repeat(1, 8)
    acts = sae.act(pre)
    acts.sum().backward()
    theta = sae.act.threshold.detach()
    inside = ((pre - theta).abs() < 0.25).float()[0]
    expected = -(theta / 0.5) * inside * theta  # chain rule through theta = exp(log_theta)
    torch.testing.assert_close(sae.act.log_threshold.grad, expected)


def test_jumprelu_direct_threshold_gradient_is_the_log_one_without_the_chain_rule():
    # θ = exp(u): dL/du = θ · dL/dθ, so the two parameterisations agree on everything else.
    pre = torch.tensor([[0.1, 0.3, 0.05, 2.0]]).repeat(1, 8)
    grads = {}
    for param in ("log", "direct"):
        sae = make(
            "jumprelu", jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.2,
            jumprelu_threshold_param=param,
        )  # fmt: skip
        (sae.act(pre).sum() + sae.act.l0(pre)).backward()
        p = sae.act.log_threshold if param == "log" else sae.act.threshold_param
        grads[param] = p.grad
    torch.testing.assert_close(grads["log"], 0.2 * grads["direct"])
    assert grads["direct"].abs().sum() > 0


def test_jumprelu_direct_threshold_is_projected_to_nonnegative_and_saved(tmp_path):
    sae = make("jumprelu")  # direct is the default
    with torch.no_grad():
        sae.act.threshold_param[:4] = -1.0
    sae(torch.randn(3, 8))  # a training forward projects θ ≥ 0
    assert float(sae.act.threshold.detach().min()) == 0.0
    loaded = SAE.load(sae.save(tmp_path / "s"))
    assert loaded.cfg.jumprelu_threshold_param == "direct"
    torch.testing.assert_close(loaded.act.threshold, sae.act.threshold)
    with pytest.raises(ConfigError, match="jumprelu_threshold_param"):
        make("jumprelu", jumprelu_threshold_param="exp")


def _random_jumprelu(param):
    sae = make("jumprelu", jumprelu_threshold_param=param)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.act.set_threshold_(torch.rand(32, generator=g))
    return sae.eval()


def test_jumprelu_trains_its_threshold_directly_by_default():
    cfg = SAEConfig(d_in=8, d_sae=32, activation="jumprelu")
    assert cfg.jumprelu_threshold_param == "direct"
    names = [n for n, _ in SAE(cfg).named_parameters() if n.startswith("act.")]
    assert names == ["act.threshold_param"]


@pytest.mark.parametrize("param", ["direct", "log"])
def test_jumprelu_save_load_is_bit_identical(tmp_path, param):
    sae = _random_jumprelu(param)
    path = sae.save(tmp_path / "s")
    saved = json.loads((path / "cfg.json").read_text())
    # "log" is left out, as every file written before the field existed did
    assert saved.get("jumprelu_threshold_param") == (None if param == "log" else "direct")
    loaded = SAE.load(path)
    assert loaded.cfg == sae.cfg
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    codes = sae.encode(x)
    assert 0 < int((codes != 0).sum()) < codes.numel()
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), sae.decode(codes))


def test_a_jumprelu_saved_before_direct_was_the_default_loads_as_it_was(tmp_path):
    # The old format: no jumprelu_threshold_param in cfg.json, the weights hold log θ.
    old = _random_jumprelu("log")
    path = old.save(tmp_path / "old")
    raw = json.loads((path / "cfg.json").read_text())
    raw.pop("jumprelu_threshold_param", None)
    (path / "cfg.json").write_text(json.dumps(raw))
    assert "act.log_threshold" in load_file(path / "sae.safetensors")
    loaded = SAE.load(path)
    assert loaded.cfg.jumprelu_threshold_param == "log"
    assert torch.equal(loaded.act.log_threshold, old.act.log_threshold)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.encode(x), old.encode(x))


@pytest.mark.parametrize("param", ["direct", "log"])
def test_set_threshold_writes_theta_into_either_parameter(param):
    sae = make("jumprelu", jumprelu_threshold_param=param)
    theta = torch.linspace(-0.5, 2.0, 32)
    sae.act.set_threshold_(theta)
    got = sae.act.threshold.detach()
    # θ ≤ 0 gates z·[z > θ] like a ReLU only at the smallest threshold ours can hold
    floor = 0.0 if param == "direct" else torch.finfo(torch.float32).tiny
    torch.testing.assert_close(got, theta.clamp_min(floor), rtol=1e-5, atol=0)  # exp(log θ)
    assert param == "log" or torch.equal(got, theta.clamp_min(0.0))  # direct: θ as given


@pytest.mark.parametrize("shift", [0.0, -2.5])  # -2.5: fewer positives than k·rows (zeros kept)
def test_batchtopk_codes_and_gradient_equal_plain_autograd(shift):
    sae = make("batchtopk")
    g = torch.Generator().manual_seed(3)
    for first in (True, False):  # the first batch searches everything, the next within a bound
        pre = (torch.randn(64, 32, generator=g) + shift).requires_grad_()
        up = torch.randn(64, 32, generator=g)
        flat = pre.relu().flatten()
        values, indices = flat.topk(4 * 64)
        ref = torch.zeros(64 * 32).scatter(0, indices, values).view(64, 32)
        (want,) = torch.autograd.grad((ref * up).sum(), pre)
        acts = sae.act(pre)
        (got,) = torch.autograd.grad((acts * up).sum(), pre)
        assert torch.equal(acts, ref) and torch.equal(got, want), first
        assert int((got != 0).sum()) == int((values > 0).sum()) > 0


def test_jumprelu_l0_reads_the_forward_masks_only_for_the_same_pre_activations():
    sae = make("jumprelu", jumprelu_init_threshold=0.3)
    a, b = torch.randn(16, 32), torch.randn(16, 32) + 1.0
    sae.act(a)
    assert float(sae.act.l0(b).detach()) == float((b > 0.3).sum(-1).float().mean())
    sae.act(b)
    assert float(sae.act.l0(b).detach()) == float((b > 0.3).sum(-1).float().mean())
    assert float(sae.act.l0(a).detach()) == float((a > 0.3).sum(-1).float().mean())
    sae(torch.randn(4, 8))  # a training forward, its L0 never read: the module still copies
    copy.deepcopy(sae)


def test_batchtopk_calibration_keeps_k_per_row_on_the_rows_given():
    sae = make("batchtopk")
    pre = torch.randn(50, 32)
    sae.act.calibrate_(pre)
    kept = pre.relu().flatten().topk(4 * 50).values
    assert float(sae.act.threshold) == float(kept.min())
    assert int((pre > sae.act.threshold).sum()) == 4 * 50 - 1  # the threshold itself is off


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])  # next batch: bound above / at / below
def test_batchtopk_selection_bounded_by_the_last_batch_equals_a_full_top_k(scale):
    sae = make("batchtopk")
    pre = torch.randn(64, 32)
    sae.act(pre)  # a first batch sets the search bound (0.8 of its smallest kept value)
    full = (scale * pre).relu().flatten().topk(4 * 64)
    values, indices = sae.act._kept(scale * pre)
    assert torch.equal(indices.sort().values, full.indices.sort().values)
    assert torch.equal(values.sort().values, full.values.sort().values)


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
    with pytest.raises(ConfigError, match="calibration_batches must be 0 or more"):
        TrainConfig(calibration_batches=-1)
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
