"""SAELens's SAE folder format, written and read by mechscope itself: it works without sae_lens
(TransformerLens 4 environments), and where SAELens is installed its files equal SAELens's own."""

import json

import pytest
import torch
from safetensors.torch import load_file

from saes.config import SAEConfig
from saes.interop import InteropError, export_to_saelens, import_from_saelens, read_saelens_folder
from saes.sae import SAE

D_IN, D_SAE, K = 12, 40, 5
ACTIVATIONS = ["topk", "batchtopk", "jumprelu", "relu"]


def _sae(activation: str, input_scale: float = 1.0) -> SAE:
    """Random, with biases and thresholds that all matter (a conversion that drops one fails)."""
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K,  # type: ignore[arg-type]
                        metadata={"hook_name": "blocks.1.hook_resid_post"}), seed=2)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.W_enc.add_(0.2 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
        sae.input_scale.fill_(input_scale)
        if activation == "jumprelu":
            sae.act.set_threshold_(torch.empty(D_SAE).uniform_(-1.0, 1.0, generator=g).exp())
        if activation == "batchtopk":
            sae.act.threshold.fill_(1.5)
    return sae.eval()


def _x() -> torch.Tensor:
    return torch.randn(200, D_IN, generator=torch.Generator().manual_seed(4)) * 3


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_export_then_read_by_format_computes_the_same(tmp_path, activation):
    ours = _sae(activation, input_scale=0.5)
    back = read_saelens_folder(export_to_saelens(ours, tmp_path / "sl"))
    x = _x()
    codes = ours.encode(x)
    assert 0 < (codes != 0).sum(-1).float().mean() < D_SAE  # a non-trivial code
    torch.testing.assert_close(back.encode(x), codes, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(back.decode(codes), ours.decode(codes), atol=2e-5, rtol=1e-5)
    assert back.cfg.activation == activation  # batchtopk comes back from its JumpReLU form


@pytest.mark.parametrize("param", ["direct", "log"])
def test_jumprelu_round_trip_by_format_is_bit_identical(tmp_path, param):
    ours = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="jumprelu",
                         jumprelu_threshold_param=param), seed=2)  # fmt: skip
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ours.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        ours.act.set_threshold_(torch.rand(D_SAE, generator=g))
    ours.eval()
    back = read_saelens_folder(export_to_saelens(ours, tmp_path / "sl"))
    assert back.cfg.jumprelu_threshold_param == "direct"  # SAELens's θ, copied as it is
    assert torch.equal(back.act.threshold, ours.act.threshold)
    x = _x()
    codes = ours.encode(x)
    assert 0 < int((codes != 0).sum()) < codes.numel()
    assert torch.equal(back.encode(x), codes)


def test_a_folder_that_is_not_saelens_is_refused_clearly(tmp_path):
    with pytest.raises(InteropError, match="needs cfg.json and sae_weights.safetensors"):
        read_saelens_folder(tmp_path)
    out = export_to_saelens(_sae("relu"), tmp_path / "sl")
    cfg = json.loads((out / "cfg.json").read_text())
    del cfg["architecture"]
    (out / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InteropError, match=r"lacks \['architecture'\]"):
        read_saelens_folder(out)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_files_equal_what_saelens_writes_and_saelens_loads_them(tmp_path, activation):
    sae_lens = pytest.importorskip("sae_lens")
    from saes.interop import to_saelens

    ours = _sae(activation, input_scale=0.5)
    mine = export_to_saelens(ours, tmp_path / "mine")
    to_saelens(ours).save_model(tmp_path / "theirs")  # SAELens's own writer
    assert json.loads((mine / "cfg.json").read_text()) == json.loads(
        (tmp_path / "theirs" / "cfg.json").read_text()
    )
    a, b = (
        load_file(mine / "sae_weights.safetensors"),
        load_file(tmp_path / "theirs" / "sae_weights.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = sae_lens.SAE.load_from_disk(mine)
    x = _x()
    torch.testing.assert_close(loaded.encode(x), ours.encode(x), atol=2e-5, rtol=1e-5)
    # Reading by format equals reading through SAELens.
    via_sl, by_format = import_from_saelens(mine), read_saelens_folder(mine)
    torch.testing.assert_close(by_format.encode(x), via_sl.encode(x), atol=0, rtol=0)
