"""SAELens interop: exports load in SAELens and imports compute the same encode/decode."""

from __future__ import annotations

import os

import pytest
import torch

from saes.config import SAEConfig
from saes.interop import (
    InteropError,
    UnsupportedArchitectureError,
    export_to_saelens,
    from_saelens,
    import_from_saelens,
    to_saelens,
)
from saes.sae import SAE

D_IN, D_SAE, K = 16, 64, 6
ATOL = 1e-5  # relative to the largest output magnitude (1e-5 absolute for outputs of size ≤ 1)

sae_lens = pytest.importorskip(
    "sae_lens", reason="needs sae_lens, which requires transformer-lens<4"
)


def _inputs(n: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g) * 3 + torch.linspace(-1, 1, D_IN)


def _ours(activation: str, **cfg: object) -> SAE:
    """A random SAE whose biases and thresholds all matter (a conversion that drops one fails)."""
    sae = SAE(
        SAEConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            activation=activation,  # type: ignore[arg-type]
            k=K,
            metadata={"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"},
            **cfg,  # type: ignore[arg-type]
        ),
        seed=3,
    )
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        sae.W_enc.add_(0.2 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
        if activation == "jumprelu":
            sae.act.set_threshold_(torch.empty(D_SAE).uniform_(-1.0, 1.0, generator=g).exp())
        if activation == "batchtopk":
            sae.act.threshold.fill_(1.5)
    return sae.eval()


def _assert_same(ours: SAE, theirs: object, x: torch.Tensor) -> tuple[float, float]:
    a_ours, a_theirs = ours.encode(x), theirs.encode(x)  # type: ignore[attr-defined]
    r_ours, r_theirs = ours.decode(a_ours), theirs.decode(a_ours)  # type: ignore[attr-defined]
    enc = (a_ours - a_theirs).abs().max().item()
    dec = (r_ours - r_theirs).abs().max().item()
    # A folded input scale reorders float32 rounding, so errors grow with the outputs' size.
    assert enc <= ATOL * max(1.0, a_ours.abs().max().item()), enc
    assert dec <= ATOL * max(1.0, r_ours.abs().max().item()), dec
    l0 = (a_ours != 0).sum(-1).float().mean().item()
    assert 0 < l0 < D_SAE  # a non-trivial code
    return enc, dec


def _randomise_saelens(sl: object, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sl.parameters():  # type: ignore[attr-defined]
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim == 2 else 0.5))


# ---- export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("activation", "cls_name"),
    [
        ("topk", "TopKSAE"),
        ("batchtopk", "JumpReLUSAE"),
        ("jumprelu", "JumpReLUSAE"),
        ("relu", "StandardSAE"),
    ],
)
def test_export_loads_in_saelens_with_same_outputs(tmp_path, activation, cls_name):
    ours = _ours(activation)
    out = export_to_saelens(ours, tmp_path / "sl")
    theirs = sae_lens.SAE.load_from_disk(out)
    assert type(theirs).__name__ == cls_name
    assert theirs.cfg.apply_b_dec_to_input and theirs.cfg.normalize_activations == "none"
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert theirs.cfg.metadata.model_name == "tiny"
    if activation == "topk":
        assert theirs.cfg.k == K and not theirs.cfg.rescale_acts_by_decoder_norm
    x = _inputs()
    _assert_same(ours, theirs, x)
    if activation in ("batchtopk", "jumprelu"):  # the threshold is really being compared
        assert not torch.equal(ours.encode(x), ours.pre_acts(x).relu())
    # ...and it imports back to the same activation, BatchTopK included.
    back = import_from_saelens(out)
    assert back.cfg.activation == activation
    _assert_same(back, ours, x)


@pytest.mark.parametrize("param", ["direct", "log"])
def test_jumprelu_round_trip_through_saelens_is_bit_identical(tmp_path, param):
    # Imports train θ directly (the default): SAELens's θ is copied as it is, no log/exp.
    ours = _ours("jumprelu", jumprelu_threshold_param=param)
    x = _inputs()
    for back in (
        import_from_saelens(export_to_saelens(ours, tmp_path / "sl")),
        from_saelens(to_saelens(ours)),
    ):
        assert back.cfg.jumprelu_threshold_param == "direct"
        assert torch.equal(back.act.threshold, ours.act.threshold)
        codes = ours.encode(x)
        assert torch.equal(back.encode(x), codes)
        assert torch.equal(back.decode(codes), ours.decode(codes))


def test_saelens_thresholds_at_or_below_zero_import_as_zero():
    jr = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))
    _randomise_saelens(jr)
    theta = torch.linspace(-0.5, 1.5, D_SAE)
    with torch.no_grad():
        jr.threshold.copy_(theta)
    ours = import_from_saelens(jr)
    # SAELens gates relu(z)·[z > θ]: with θ ≤ 0 that is z·[z > 0], ours at θ = 0
    assert torch.equal(ours.act.threshold, theta.clamp_min(0.0))
    x = _inputs()
    low = theta <= 0
    torch.testing.assert_close(ours.encode(x)[:, low], ours.pre_acts(x)[:, low].relu())


def test_export_folds_expected_norm_input_scale(tmp_path):
    ours = _ours("topk", normalize_activations="expected_norm")
    ours.init_from_data_(_inputs(512, seed=7) * 40, b_dec_init="mean")
    scale = float(ours.input_scale)
    assert abs(scale - 1) > 0.5
    theirs = sae_lens.SAE.load_from_disk(export_to_saelens(ours, tmp_path / "sl"))
    assert theirs.cfg.normalize_activations == "none"
    _assert_same(ours, theirs, _inputs(seed=8) * 40)
    assert float(ours.input_scale) == scale  # the source SAE is left as it was


def test_export_of_untrained_batchtopk_is_refused(tmp_path):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="batchtopk", k=K))
    with pytest.raises(InteropError, match="threshold"):
        export_to_saelens(sae, tmp_path / "sl")
    assert not (tmp_path / "sl").exists()


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import saes.saelens_format as sl_sae  # the writer SAE exports go through

    def broken_save(tensors, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(sl_sae, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_to_saelens(_ours("relu"), tmp_path / "sl")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_export(tmp_path, monkeypatch):
    import saes.saelens_format as sl_sae  # the writer SAE exports go through

    target = export_to_saelens(_ours("relu"), tmp_path / "sl")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(FileExistsError):
        export_to_saelens(_ours("topk"), target)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        export_to_saelens(_ours("topk"), tmp_path / "file", overwrite=True)
    (tmp_path / "file").unlink()
    monkeypatch.setattr(sl_sae, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        export_to_saelens(_ours("topk"), target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["sl"]
    monkeypatch.undo()
    export_to_saelens(_ours("topk"), target, overwrite=True)
    assert type(sae_lens.SAE.load_from_disk(target)).__name__ == "TopKSAE"


# ---- import ----------------------------------------------------------------------------------------
def test_import_topk_folds_decoder_norms_and_b_dec_convention():
    cfg = sae_lens.TopKSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=False
    )
    theirs = sae_lens.TopKSAE(cfg)
    _randomise_saelens(theirs)  # decoder rows far from unit norm, so the rescaling matters
    ours = import_from_saelens(theirs)
    assert ours.cfg.activation == "topk" and ours.cfg.k == K
    _assert_same(ours, theirs, _inputs())


def test_import_jumprelu_and_standard():
    jr = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))
    _randomise_saelens(jr)
    with torch.no_grad():
        jr.threshold.copy_(torch.linspace(-0.5, 1.5, D_SAE))  # includes θ ≤ 0 (plain ReLU there)
    ours = import_from_saelens(jr)
    assert ours.cfg.activation == "jumprelu"
    _assert_same(ours, jr, _inputs())

    std = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    _randomise_saelens(std, seed=6)
    ours = import_from_saelens(std)
    assert ours.cfg.activation == "relu"
    _assert_same(ours, std, _inputs())


def test_import_training_classes_and_saved_batchtopk(tmp_path):
    topk = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    _randomise_saelens(topk)
    _assert_same(import_from_saelens(topk), topk, _inputs())

    jr = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))
    _randomise_saelens(jr)
    with torch.no_grad():
        jr.threshold.copy_(torch.linspace(0.0, 1.5, D_SAE))
    _assert_same(import_from_saelens(jr), jr, _inputs())
    with torch.no_grad():
        jr.threshold[0] = -0.1  # the training class lets negative codes through then: refused
    with pytest.raises(InteropError, match="negative thresholds"):
        import_from_saelens(jr)

    btk = sae_lens.BatchTopKTrainingSAE(
        sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)
    )
    _randomise_saelens(btk)
    btk.topk_threshold = torch.tensor(1.0, dtype=torch.double)
    ours = from_saelens(btk)
    assert ours.cfg.activation == "batchtopk" and ours.cfg.k == K
    x = _inputs()
    ours.train()  # training mode: batch top-k over the whole batch, like SAELens's training class
    _assert_same(ours, btk, x)
    # SAELens saves BatchTopK SAEs for inference as JumpReLU; that imports back as our BatchTopK.
    btk.save_inference_model(tmp_path / "btk")
    saved = sae_lens.SAE.load_from_disk(tmp_path / "btk")
    back = import_from_saelens(tmp_path / "btk")
    assert back.cfg.activation == "batchtopk" and not back.training
    _assert_same(back, saved, x)


def test_import_refuses_unsupported_architectures(tmp_path):
    mp = sae_lens.MatchingPursuitSAE(sae_lens.MatchingPursuitSAEConfig(d_in=D_IN, d_sae=D_SAE))
    with pytest.raises(UnsupportedArchitectureError, match="matching_pursuit.*supported: topk"):
        import_from_saelens(mp)
    mp.save_model(tmp_path / "mp")
    with pytest.raises(UnsupportedArchitectureError, match="'matching_pursuit'"):
        import_from_saelens(tmp_path / "mp")


# ---- transcoders -----------------------------------------------------------------------------------
D_OUT = 12


@pytest.mark.parametrize(
    ("cls_name", "activation", "skip"),
    [
        ("Transcoder", "relu", False),
        ("SkipTranscoder", "relu", True),
        ("JumpReLUTranscoder", "jumprelu", False),
        ("JumpReLUSkipTranscoder", "jumprelu", True),
    ],
)
def test_import_saelens_transcoders(tmp_path, cls_name, activation, skip):
    from saes.transcoder import Transcoder

    cfg_cls = getattr(sae_lens, f"{cls_name}Config")
    theirs = getattr(sae_lens, cls_name)(
        cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)
    )
    _randomise_saelens(theirs)
    if activation == "jumprelu":
        with torch.no_grad():
            theirs.threshold.copy_(torch.linspace(-0.5, 1.5, D_SAE))  # θ ≤ 0 acts as ReLU
    theirs.save_model(tmp_path / "tc")
    x = _inputs()
    for ours in (import_from_saelens(theirs), import_from_saelens(tmp_path / "tc")):
        assert isinstance(ours, Transcoder) and not ours.training
        assert ours.cfg.activation == activation and ours.cfg.skip_connection == skip
        assert ours.d_out == D_OUT and ours.cfg.metadata["saelens_architecture"]
        a = ours.encode(x)
        assert 0 < (a != 0).float().mean() < 0.9
        torch.testing.assert_close(a, theirs.encode(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.decode(a), theirs.decode(a), rtol=0, atol=1e-5)
        # forward adds the skip term on both sides
        torch.testing.assert_close(ours(x).recon, theirs(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "batchtopk"])
@pytest.mark.parametrize("skip", [False, True], ids=["plain", "skip"])
def test_transcoder_round_trip_is_exact(tmp_path, activation, skip):
    from saes.transcoder import Transcoder

    tc = Transcoder(SAEConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, activation=activation,
                              k=K, skip_connection=skip), seed=3)  # fmt: skip
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        if activation == "jumprelu":
            tc.act.set_threshold_(torch.empty(D_SAE).uniform_(-2.0, 0.5, generator=g).exp())
        if activation == "batchtopk":
            tc.act.threshold.fill_(0.4)
    tc.eval()
    back = import_from_saelens(export_to_saelens(tc, tmp_path / "sl"))
    assert type(back) is Transcoder and back.cfg.activation == activation
    assert back.cfg.skip_connection == skip and (activation != "batchtopk" or back.cfg.k == K)
    x = _inputs()
    assert torch.equal(back(x).recon, tc(x).recon) and torch.equal(back.encode(x), tc.encode(x))


def test_import_refuses_runtime_normalisation():
    sl = sae_lens.StandardSAE(
        sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="layer_norm")
    )
    with pytest.raises(InteropError, match="layer_norm"):
        import_from_saelens(sl)


def test_import_rejects_folders_that_are_not_saelens_saes(tmp_path):
    with pytest.raises(InteropError, match="not a folder"):
        import_from_saelens(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InteropError, match="sae_weights.safetensors"):
        import_from_saelens(tmp_path / "empty")
    _ours("topk").save(tmp_path / "mine")
    with pytest.raises(InteropError, match="mechscope SAE.*SAE.load"):
        import_from_saelens(tmp_path / "mine")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cfg.json").write_text("{not json")
    (bad / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(InteropError, match="not valid JSON"):
        import_from_saelens(bad)
    (bad / "cfg.json").write_text('{"architecture": "topk", "d_in": 16, "d_sae": 64, "k": 4}')
    with pytest.raises(InteropError, match="SAELens could not load"):
        import_from_saelens(bad)


def test_round_trip_in_memory_keeps_metadata():
    ours = _ours("jumprelu")
    theirs = to_saelens(ours, metadata={"context_size": 128})
    assert theirs.cfg.metadata.context_size == 128
    back = from_saelens(theirs)
    assert back.cfg.metadata["hook_name"] == "blocks.1.hook_resid_post"
    assert back.cfg.metadata["context_size"] == 128
    _assert_same(back, ours, _inputs())
