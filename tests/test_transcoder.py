"""Transcoders: a dictionary from one site to another (``SAEConfig.d_out``), trained on (x, y)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
import torch

from saes.config import ConfigError, SAEConfig, TrainConfig
from saes.losses import sae_loss
from saes.sae import SAE, SAELoadError
from saes.trainer import Trainer
from saes.transcoder import Transcoder

D_IN, D_OUT, N_FEAT = 12, 10, 48


def linear_map_data(skip: int = 0, batch: int = 64, seed: int = 1):
    """x: sparse combinations of fixed unit directions; y = x Aᵀ + c, a fixed linear map.

    Each feature direction f maps to A f, so a transcoder whose latents detect the features and
    decode their images computes the map exactly on this data."""
    g0 = torch.Generator().manual_seed(0)
    feats = torch.randn(N_FEAT, D_IN, generator=g0)
    feats /= feats.norm(dim=-1, keepdim=True)
    A = torch.randn(D_OUT, D_IN, generator=g0) / D_IN**0.5
    c = torch.randn(D_OUT, generator=g0)
    g = torch.Generator().manual_seed(seed)
    i = 0
    while True:
        on = (torch.rand(batch, N_FEAT, generator=g) < 0.06).float()
        x = (on * torch.rand(batch, N_FEAT, generator=g) * 3) @ feats
        if i >= skip:
            yield x, x @ A.T + c
        i += 1


def train_cfg(**kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = dict(
        total_steps=150,
        batch_size=64,
        lr=1e-2,
        log_every=10,
        dead_after_tokens=640,
        init_batches=2,
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def explained_variance(tc: Transcoder, n: int = 8) -> float:
    batches = [b for b, _ in zip(linear_map_data(seed=99), range(n), strict=False)]
    x, y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    with torch.no_grad():
        recon = tc.eval()(x, y).recon
    return 1 - float((y - recon).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


@pytest.mark.parametrize("skip_connection", [False, True], ids=["plain", "skip"])
def test_a_transcoder_learns_a_linear_map(tmp_path, skip_connection: bool) -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=64, k=8, d_out=D_OUT, skip_connection=skip_connection)
    tc = Transcoder(cfg, seed=0)
    before = explained_variance(tc)
    c = train_cfg(lr_warmup_steps=5, lr_decay_steps=40)
    trainer = Trainer(c, tc, linear_map_data, run_dir=tmp_path, progress=False)
    assert not trainer.sparse and "dense" in trainer.path_reason
    trainer.fit()
    ev = explained_variance(trainer.sae)  # type: ignore[arg-type]
    assert before < 0.2 and ev > (0.98 if skip_connection else 0.93), (before, ev)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["explained_variance"] > 0.8 and rows[-1]["loss"] < rows[0]["loss"]
    loaded = SAE.load(tmp_path / "final")
    assert isinstance(loaded, Transcoder) and loaded.cfg == trainer.sae.cfg
    assert json.loads((tmp_path / "final" / "run.json").read_text())["kind"] == "transcoder"


def test_forward_takes_the_target_and_computes_the_formula() -> None:
    tc = Transcoder(SAEConfig(d_in=D_IN, d_sae=32, k=4, d_out=D_OUT, skip_connection=True), seed=0)
    with torch.no_grad():
        tc.b_enc.normal_()
        tc.b_dec.normal_()
        tc.W_skip.normal_()
    x, y = torch.randn(16, D_IN), torch.randn(16, D_OUT)
    out = tc(x, y)
    pre = x @ tc.W_enc + tc.b_enc  # no b_dec shift: b_dec lives in the output space
    torch.testing.assert_close(out.pre, pre)
    torch.testing.assert_close(out.recon, out.acts @ tc.W_dec + tc.b_dec + x @ tc.W_skip.T)
    assert out.recon.shape == (16, D_OUT) and tc.W_dec.shape == (32, D_OUT)
    assert out.error is not None
    torch.testing.assert_close(out.error, y - out.recon)
    assert tc(x).error is None  # no target given
    with pytest.raises(ValueError, match="pass y"):
        tc.spliced(x)
    with pytest.raises(ValueError, match="d_out=10"):
        tc(x, torch.randn(16, D_IN))
    with pytest.raises(ValueError, match="d_in=12"):
        tc(torch.randn(16, D_OUT), y)
    # the loss is measured against y, not x
    loss, out = sae_loss(tc, x, y)
    torch.testing.assert_close(loss.mse, (out.recon - y).pow(2).sum(-1).mean())
    with pytest.raises(ValueError, match="pass y"):
        sae_loss(tc, x)


def test_save_and_load_round_trip(tmp_path) -> None:
    cfg = SAEConfig(d_in=D_IN, d_sae=32, activation="jumprelu", d_out=D_OUT, skip_connection=True)
    tc = Transcoder(cfg, seed=3)
    with torch.no_grad():
        tc.W_skip.normal_()
        tc.b_dec.normal_()
    tc.save(tmp_path / "tc")
    raw = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert raw["d_out"] == D_OUT and raw["skip_connection"] is True
    for loader in (SAE.load, Transcoder.load):
        back = loader(tmp_path / "tc")
        assert isinstance(back, Transcoder) and back.cfg == cfg
        for name, value in tc.state_dict().items():
            torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0, msg=name)
    x, y = torch.randn(8, D_IN), torch.randn(8, D_OUT)
    torch.testing.assert_close(back(x, y).recon, tc(x, y).recon)
    # An SAE's folder keeps its format (no transcoder keys) and is refused as a transcoder.
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=32, k=4), seed=0)
    sae.save(tmp_path / "sae")
    keys = set(json.loads((tmp_path / "sae" / "cfg.json").read_text()))
    assert not keys & {"d_out", "skip_connection"}
    assert type(SAE.load(tmp_path / "sae")) is SAE
    with pytest.raises(SAELoadError, match="holds a mechscope sae, not a transcoder"):
        Transcoder.load(tmp_path / "sae")


def test_config_and_construction_errors() -> None:
    with pytest.raises(ConfigError, match="skip_connection is for transcoders"):
        SAEConfig(d_in=8, d_sae=32, k=4, skip_connection=True)
    with pytest.raises(ConfigError, match="reads and writes raw activations"):
        SAEConfig(d_in=8, d_sae=32, k=4, d_out=4, normalize_activations="expected_norm")
    with pytest.raises(ConfigError, match="d_out must be positive"):
        SAEConfig(d_in=8, d_sae=32, k=4, d_out=0)
    with pytest.raises(ValueError, match=r"build it with saes\.Transcoder"):
        SAE(SAEConfig(d_in=8, d_sae=32, k=4, d_out=8))
    with pytest.raises(ValueError, match=r"build it with saes\.SAE"):
        Transcoder(SAEConfig(d_in=8, d_sae=32, k=4))
    # equal widths are still a transcoder: d_out set is what makes one
    tc = Transcoder(SAEConfig(d_in=8, d_sae=32, k=4, d_out=8), seed=0)
    assert tc.d_out == 8 and tc.kind == "transcoder"


def test_trainer_needs_pairs_and_the_dense_path() -> None:
    tc = Transcoder(SAEConfig(d_in=D_IN, d_sae=32, k=4, d_out=D_OUT), seed=0)

    def xs_only(skip: int = 0):
        for x, _ in linear_map_data(skip):
            yield x

    with pytest.raises(ValueError, match="trains on pairs"):
        Trainer(train_cfg(total_steps=2), tc, xs_only, progress=False).fit()
    with pytest.raises(ValueError, match="needs a topk SAE; this one is a 'topk' transcoder"):
        Trainer(train_cfg(sparse_path="on"), tc, linear_map_data, progress=False)

    def wrong_target(skip: int = 0):
        for x, y in linear_map_data(skip):
            yield x, y[:, :-1]

    with pytest.raises(ValueError, match="width d_out=10"):
        Trainer(train_cfg(total_steps=2, init_batches=1), tc, wrong_target, progress=False).fit()


def test_an_sae_trains_on_pairs_with_an_explicit_target() -> None:
    """(x, x) pairs train an SAE exactly as tensors x do (dense path)."""
    results = []
    for pairs in (False, True):

        def data(skip: int = 0, pairs: bool = pairs):
            for x, _ in linear_map_data(skip):
                yield (x, x.clone()) if pairs else x

        sae = SAE(SAEConfig(d_in=D_IN, d_sae=32, k=4), seed=0)
        t = Trainer(train_cfg(total_steps=5, sparse_path="off"), sae, data, progress=False)
        results.append(t.fit().state_dict())
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "batchtopk"])
@pytest.mark.parametrize("skip_connection", [False, True], ids=["plain", "skip"])
def test_export_to_saelens_computes_the_same_transcoder(
    tmp_path, activation: str, skip_connection: bool
) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    from saes.interop import export_to_saelens

    cfg = SAEConfig(
        d_in=D_IN,
        d_sae=32,
        activation=activation,  # type: ignore[arg-type]
        k=4,
        d_out=D_OUT,
        skip_connection=skip_connection,
    )
    tc = Transcoder(cfg, seed=0)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        tc.b_enc.copy_(0.5 * torch.randn(32, generator=g))
        tc.b_dec.normal_(generator=g)
        if skip_connection:
            tc.W_skip.normal_(generator=g)
        if activation == "jumprelu":
            tc.act.set_threshold_(torch.empty(32).uniform_(-2.0, 0.0, generator=g).exp())  # type: ignore[operator]
        if activation == "batchtopk":
            tc.act.threshold.fill_(0.4)  # type: ignore[operator]
    tc.eval()
    theirs = sae_lens.SAE.load_from_disk(export_to_saelens(tc, tmp_path / "sl"))
    want = {
        ("relu", False): "Transcoder",
        ("relu", True): "SkipTranscoder",
        ("jumprelu", False): "JumpReLUTranscoder",
        ("jumprelu", True): "JumpReLUSkipTranscoder",
        ("batchtopk", False): "JumpReLUTranscoder",
        ("batchtopk", True): "JumpReLUSkipTranscoder",
    }[activation, skip_connection]
    assert type(theirs).__name__ == want and theirs.cfg.d_out == D_OUT
    x = torch.randn(64, D_IN, generator=g) * 2
    acts = tc.encode(x)
    assert 0 < (acts != 0).sum(-1).float().mean() < 32  # a non-trivial code
    torch.testing.assert_close(theirs.encode(x), acts, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), tc(x).recon, rtol=1e-5, atol=1e-5)


def test_export_of_a_topk_transcoder_is_refused(tmp_path) -> None:
    pytest.importorskip("sae_lens")
    from saes.interop import InteropError, export_to_saelens

    tc = Transcoder(SAEConfig(d_in=D_IN, d_sae=32, k=4, d_out=D_OUT), seed=0)
    with pytest.raises(InteropError, match="no TopK transcoder"):
        export_to_saelens(tc, tmp_path / "sl")
    assert not (tmp_path / "sl").exists()


def test_a_resumed_transcoder_run_ends_bit_identical(tmp_path) -> None:
    def killed_at(n: int):  # type: ignore[no-untyped-def]
        def data(skip: int = 0):  # type: ignore[no-untyped-def]
            for i, batch in enumerate(linear_map_data(skip), start=skip):
                if i == n:
                    raise KeyboardInterrupt
                yield batch

        return data

    def trainer(run_dir, data) -> Trainer:  # type: ignore[no-untyped-def]
        tc = Transcoder(SAEConfig(d_in=D_IN, d_sae=32, k=4, d_out=D_OUT), seed=0)
        c = train_cfg(total_steps=20, checkpoint_every=10)
        return Trainer(c, tc, data, run_dir=run_dir, progress=False)

    whole = trainer(tmp_path / "a", linear_map_data).fit()
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b", killed_at(13)).fit()
    resumed = Trainer.resume(tmp_path / "b", linear_map_data, progress=False)
    assert isinstance(resumed.sae, Transcoder) and resumed.step == 10
    resumed.fit()
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), name


# ---- MLP transcoders: sites, fit checks, sets ----------------------------------------------------
def mlp_transcoder(model, layer: int, *, fingerprint=None, **cfg) -> Transcoder:  # type: ignore[no-untyped-def]
    from interp.models import model_fingerprint
    from saes.transcoder import mlp_metadata

    d = model.cfg.d_model
    meta = mlp_metadata(
        layer, model="tiny", fingerprint=fingerprint or model_fingerprint(model),
        model_class=type(model).__name__,
    )  # fmt: skip
    fields = {"d_in": d, "d_sae": 24, "k": 4, "d_out": d, "metadata": meta, **cfg}
    return Transcoder(SAEConfig(**fields), seed=layer)


def test_the_hook_pair_must_be_one_mlps_input_and_output() -> None:
    from saes.transcoder import TranscoderSiteError, mlp_hooks, mlp_layer

    assert mlp_layer(*mlp_hooks(7)) == 7
    bad = [
        ("blocks.3.ln2.hook_normalized", "blocks.4.hook_mlp_out", "blocks.3.hook_mlp_out"),
        ("blocks.3.hook_resid_mid", "blocks.3.hook_mlp_out", "blocks.3.ln2.hook_normalized"),
        ("blocks.3.ln2.hook_normalized", "blocks.3.hook_resid_post", "blocks.3.hook_mlp_out"),
        ("blocks.3.hook_resid_pre", "blocks.3.hook_resid_post", "blocks.L.ln2.hook_normalized"),
    ]
    for hook_in, hook_out, expected in bad:
        with pytest.raises(TranscoderSiteError, match=rf"Expected .*{re.escape(expected)}"):
            mlp_layer(hook_in, hook_out)


def test_a_set_saves_and_loads_checked_against_the_model(tmp_path, tiny_model) -> None:
    from saes.transcoder import load_transcoders, save_to_set

    tcs = {layer: mlp_transcoder(tiny_model, layer) for layer in (0, 1)}
    for layer, tc in tcs.items():
        save_to_set(tc, tmp_path / "set", layer)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["layer_00", "layer_01"]
    back = load_transcoders(tiny_model, tmp_path / "set")
    assert sorted(back) == [0, 1]
    x = torch.randn(5, tiny_model.cfg.d_model)
    for layer, tc in tcs.items():
        assert back[layer].cfg == tc.cfg
        torch.testing.assert_close(back[layer](x).recon, tc(x).recon, rtol=0, atol=0)
    assert list(load_transcoders(tiny_model, tmp_path / "set", layers=[1])) == [1]
    with pytest.raises(SAELoadError, match=r"no transcoders for layers \[5\]; it has \[0, 1\]"):
        load_transcoders(tiny_model, tmp_path / "set", layers=[5])
    with pytest.raises(SAELoadError, match="no layer_LL/ folders"):
        load_transcoders(tiny_model, tmp_path / "nothing")
    with pytest.raises(ValueError, match="layer 1"):  # layer 0's transcoder filed under layer 1
        save_to_set(tcs[0], tmp_path / "set", 1)


def test_a_set_from_another_model_is_refused(tmp_path, tiny_model) -> None:
    from saes.transcoder import TranscoderModelError, load_transcoders, save_to_set

    save_to_set(mlp_transcoder(tiny_model, 0, fingerprint="0" * 64), tmp_path / "fp", 0)
    with pytest.raises(TranscoderModelError, match="fingerprint 000000000000"):
        load_transcoders(tiny_model, tmp_path / "fp")
    assert list(load_transcoders(tiny_model, tmp_path / "fp", check_fingerprint=False)) == [0]
    d = tiny_model.cfg.d_model
    for field, match in (("d_in", "has d_in=7"), ("d_out", "has d_out=7")):
        save_to_set(mlp_transcoder(tiny_model, 1, **{field: 7}), tmp_path / field, 1)
        with pytest.raises(TranscoderModelError, match=rf"{match}.*width d_model={d}"):
            load_transcoders(tiny_model, tmp_path / field)
    save_to_set(mlp_transcoder(tiny_model, 1), tmp_path / "deep", 1)
    (tmp_path / "deep" / "layer_01").rename(tmp_path / "deep" / "layer_09")
    with pytest.raises(SAELoadError, match="not MLP 9"):
        load_transcoders(tiny_model, tmp_path / "deep")
    save_to_set(mlp_transcoder(tiny_model, 5), tmp_path / "far", 5)
    with pytest.raises(
        TranscoderModelError, match="layer 5 is not in the model: it has layers 0-1"
    ):
        load_transcoders(tiny_model, tmp_path / "far")


# ---- paired data, training from a store, evaluation spliced into a model -----------------------
LAYER = 1
CTX, N_CTX = 8, 48


def relu_mlp_model():  # type: ignore[no-untyped-def]
    """A 2-layer random GPT-2 with loud ReLU MLPs on the default backend, and its HF weights."""
    from interp.models import default_backend
    from interp.random_models import hf_random_model, to_backend

    fields = dict(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50)
    hf: Any = hf_random_model(**fields, act_fn="relu", seed=0)
    with torch.no_grad():  # GPT-2's init makes the MLP all but silent: make its output matter
        for block in hf.transformer.h:
            block.mlp.c_fc.weight.mul_(10)
            block.mlp.c_proj.weight.mul_(40)
    return to_backend(hf, default_backend()), hf


def exact_transcoder(hf, layer: int = LAYER) -> Transcoder:  # type: ignore[no-untyped-def]
    """The MLP of ``layer`` as a ReLU transcoder on the LayerNorm's normalized input n:
    relu((n w + b) W_fc + b_fc) W_proj + b_proj, with w, b the LayerNorm's weight and bias."""
    from saes.transcoder import mlp_metadata

    block = hf.transformer.h[layer]
    w, b = block.ln_2.weight.detach(), block.ln_2.bias.detach()
    fc, proj = block.mlp.c_fc, block.mlp.c_proj  # Conv1D: x @ weight + bias
    meta = mlp_metadata(layer, model="random", fingerprint=None)
    tc = Transcoder(SAEConfig(d_in=16, d_sae=32, activation="relu", d_out=16, metadata=meta))
    with torch.no_grad():
        tc.W_enc.copy_(w[:, None] * fc.weight)
        tc.b_enc.copy_(b @ fc.weight + fc.bias)
        tc.W_dec.copy_(proj.weight)
        tc.b_dec.copy_(proj.bias)
    return tc


def paired_store(model, path):  # type: ignore[no-untyped-def]
    from interp.store import ActivationStore
    from saes.transcoder import mlp_hooks

    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (CTX,), generator=g) for _ in range(N_CTX)]
    return ActivationStore.write(
        path, model, list(mlp_hooks(LAYER)), contexts, context_size=CTX, shard_tokens=64,
        progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def relu_setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    model, hf = relu_mlp_model()
    return model, hf, paired_store(model, tmp_path_factory.mktemp("tc") / "store")


def test_paired_sources_keep_rows_paired(relu_setup) -> None:
    """y = MLP(x) row by row, for shuffled store batches and streamed ones: the pairs are the
    same token's input and output (the exact transcoder is the MLP, computed independently)."""
    from saes.data import model_source, store_source
    from saes.transcoder import mlp_hooks

    model, hf, store = relu_setup
    tc = exact_transcoder(hf)
    assert len(store.shards) > 2  # the shuffle mixes shards
    it = store_source(store, 100, 3, seed=5, hook=mlp_hooks(LAYER))
    contexts = [store.context(i) for i in range(N_CTX)]
    streamed = model_source(model, mlp_hooks(LAYER), contexts, 100, max_tokens=64, drop_bos=False)
    sources: list[Any] = [it, streamed]
    for source in sources:
        for _, (x, y) in zip(range(4), source, strict=False):
            assert x.shape == y.shape == (100, 16)
            with torch.no_grad():
                torch.testing.assert_close(tc(x).recon, y, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(y[:50], y[50:])  # not one row repeated


def dense_reference(model, store, tc: Transcoder) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Every number by hand on all the store's contexts: TransformerLens's own run_with_cache and
    run_with_hooks, the MLP output replaced by tc(MLP input) or by zeros, plain torch formulas."""
    import torch.nn.functional as F

    from saes.transcoder import mlp_hooks

    hin, hout = mlp_hooks(LAYER)
    tokens = torch.stack([store.context(i) for i in range(N_CTX)])
    with torch.no_grad():
        clean, cache = model.run_with_cache(tokens, names_filter=[hin, hout])
        x, y = cache[hin].reshape(-1, 16), cache[hout].reshape(-1, 16)
        out = tc.eval()(x)
        pred = out.recon.reshape(cache[hout].shape)
        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hout, lambda a, hook: pred)])
        zero = model.run_with_hooks(tokens, fwd_hooks=[(hout, lambda a, hook: a * 0)])

    def ce(logits):  # type: ignore[no-untyped-def]
        return F.cross_entropy(logits[:, :-1].reshape(-1, 50), tokens[:, 1:].reshape(-1)).item()

    def kl(logits):  # type: ignore[no-untyped-def]
        p, q = clean.log_softmax(-1), logits.log_softmax(-1)
        return (p.exp() * (p - q)).sum(-1).mean().item()

    ce_c, ce_s, ce_z = ce(clean), ce(spliced), ce(zero)
    return {
        "fvu": ((y - out.recon).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item(),
        "l0": (out.acts != 0).sum(-1).float().mean().item(),
        "dead_fraction": ((out.acts != 0).sum(0) == 0).float().mean().item(),
        "ce_clean": ce_c, "ce_sae": ce_s, "ce_zero": ce_z,
        "loss_recovered": (ce_z - ce_s) / (ce_z - ce_c), "kl_sae": kl(spliced), "kl_zero": kl(zero),
    }  # fmt: skip


def evaluated(model, store, tc: Transcoder) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from saes.evals import evaluate

    report = evaluate(tc, store, model, batch_size=64, n_ce_contexts=N_CTX).to_dict()
    assert (report["hook"], report["hook_out"]) == mlp_hooks_of(LAYER)
    rec, ce = report["reconstruction"], report["ce"]
    assert rec["n_tokens"] == N_CTX * CTX and ce["n_contexts"] == N_CTX
    return {**{k: rec[k] for k in ("fvu", "l0", "dead_fraction")}, **ce}


def mlp_hooks_of(layer: int) -> tuple[str, str]:
    from saes.transcoder import mlp_hooks

    return mlp_hooks(layer)


@pytest.mark.parametrize("case", ["exact", "zero", "perturbed"])
def test_evaluation_agrees_with_a_dense_computation(relu_setup, case: str) -> None:
    """The exact transcoder recovers everything, the zero one is zero ablation, and a perturbed
    one gives the hand-computed numbers."""
    model, hf, store = relu_setup
    tc = exact_transcoder(hf)
    with torch.no_grad():
        if case == "zero":
            tc.W_dec.zero_()
            tc.b_dec.zero_()
        if case == "perturbed":
            g = torch.Generator().manual_seed(1)
            tc.W_enc.add_(0.1 * torch.randn(tc.W_enc.shape, generator=g))
            tc.b_enc[:4] = -1e3  # four latents that never fire
    got, want = evaluated(model, store, tc), dense_reference(model, store, tc)
    # A random model predicts nearly uniformly: CE differences are ~1e-3 nats, so "recovered"
    # (a ratio of them) is checked through the CE numbers it is made of.
    for key, value in want.items():
        if key != "loss_recovered":
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    ce_s, ce_z, ce_c = got["ce_sae"], got["ce_zero"], got["ce_clean"]
    assert got["loss_recovered"] == pytest.approx((ce_z - ce_s) / (ce_z - ce_c), rel=1e-9)
    if case == "exact":
        assert got["fvu"] < 1e-9 and got["kl_sae"] < 1e-9
        assert got["loss_recovered"] == pytest.approx(1, abs=1e-4)
    elif case == "zero":
        assert got["ce_sae"] == got["ce_zero"] and got["kl_sae"] == got["kl_zero"]
        assert got["loss_recovered"] == 0 and got["l0"] > 0
    else:
        assert 0.1 < got["fvu"] < 1 and got["kl_sae"] > 1e-5
        assert got["dead_fraction"] == 4 / 32


def test_bad_splices_fail_before_any_forward(relu_setup) -> None:
    from interp.hooks import hooks
    from saes.evals import ce_loss_recovered, evaluate
    from saes.transcoder import TranscoderModelError, TranscoderSiteError

    model, hf, store = relu_setup
    tc, tokens = exact_transcoder(hf), torch.stack([store.context(i) for i in range(4)])
    forwards: list[int] = []
    narrow = Transcoder(dataclasses.replace(tc.cfg, d_out=12))
    with hooks(model, fwd=[("hook_embed", lambda a, hook: forwards.append(1))]):
        with pytest.raises(
            TranscoderSiteError,
            match=r"or blocks\.1\.ln2\.hook_normalized -> blocks\.1\.hook_mlp_out",
        ):
            ce_loss_recovered(
                model, tc, "blocks.1.hook_mlp_out", tokens, hook_in="blocks.0.ln2.hook_normalized"
            )
        with pytest.raises(TranscoderSiteError, match=r"Expected .*blocks\.1\.hook_mlp_out"):
            ce_loss_recovered(model, tc, "blocks.1.hook_resid_post", tokens)
        with pytest.raises(TranscoderModelError, match="d_out=12.*d_model=16"):
            ce_loss_recovered(model, narrow, "blocks.1.hook_mlp_out", tokens)
        with pytest.raises(ValueError, match="width mismatch.*d_out=12"):
            evaluate(narrow, store, model)
        with pytest.raises(ValueError, match="reads two hooks"):
            evaluate(tc, store, model, hook="blocks.1.hook_mlp_out")
    assert forwards == []


def run_config(tmp_path, store, activation: str = "topk", **train) -> dict:  # type: ignore[no-untyped-def]
    coefficient = {"relu": 1e-3, "jumprelu": 1e-4}.get(activation, 0.0)
    return {
        "run_dir": str(tmp_path / f"run_{activation}"),
        "transcoder": {"layer": LAYER},
        "sae": {"d_sae": 64, "k": 8, "activation": activation, "jumprelu_init_threshold": 0.05},
        "train": {
            "total_steps": 120, "batch_size": 64, "lr": 3e-3, "log_every": 20,
            "sparsity_coefficient": coefficient, "dead_after_tokens": 2048, **train,
        },
        "data": {"store": str(store.path)},
    }  # fmt: skip


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "jumprelu", "relu"])
def test_every_activation_trains_from_a_paired_store(tmp_path, relu_setup, activation) -> None:
    from saes.evals import evaluate
    from saes.run import train_run

    model, hf, store = relu_setup
    trainer = train_run(run_config(tmp_path, store, activation), progress=False)
    tc = SAE.load(tmp_path / f"run_{activation}" / "final")
    assert isinstance(tc, Transcoder) and tc.cfg.activation == activation
    meta = tc.cfg.metadata
    assert (meta["layer"], meta["hook"], meta["hook_out"]) == (LAYER, *mlp_hooks_of(LAYER))
    assert meta["model_fingerprint"] == store.manifest["model"]["fingerprint"]
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").open()]  # type: ignore[operator]
    fvu = evaluate(tc, store, batch_size=64).reconstruction.fvu
    assert fvu < 0.3 and rows[0]["explained_variance"] < 0.5, (fvu, rows[0])
    assert trainer.step == 120


def test_cli_trains_evaluates_and_replays_a_transcoder(tmp_path, relu_setup, capsys) -> None:
    from interp.replay import replay
    from saes.__main__ import main

    model, hf, store = relu_setup
    cfg = run_config(tmp_path, store, total_steps=10, checkpoint_every=5)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = ["train", "--config", str(tmp_path / "cfg.json"), "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "run_topk"
    assert (
        main(["eval", str(run), "--batches", "3", "--batch-size", "64", "--ce-contexts", "0"]) == 0
    )
    table = capsys.readouterr().out
    assert re.search(r"predicts \(transcoder\) +\| blocks\.1\.hook_mlp_out", table)
    report = json.loads((run / "eval.json").read_text())
    assert (report["hook"], report["hook_out"]) == mlp_hooks_of(LAYER)
    assert report["reconstruction"]["n_tokens"] == 3 * 64
    replayed = replay(run / "eval.json")
    assert replayed.ok, replayed.table()
    # resuming keeps it a transcoder run; a config without the section is refused
    assert main([*args, "--resume", "train.total_steps=12"]) == 0
    del cfg["transcoder"]
    cfg["data"]["hook"] = mlp_hooks_of(LAYER)[0]
    (tmp_path / "sae.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "sae.json"), "--resume"]) == 2
    assert "holds a transcoder but the config has no transcoder section" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "data", "match"),
    [
        ({"hook_in": "blocks.1.hook_resid_mid", "hook_out": "blocks.1.hook_mlp_out"}, {},
         r"Expected blocks\.1\.ln2\.hook_normalized -> blocks\.1\.hook_mlp_out"),
        ({"layer": 1, "hooks": 2}, {}, r"must be \{'layer': L\}"),
        ({"layer": 1}, {"hook": "blocks.0.hook_resid_post"}, "leave data.hook out"),
        ({"layer": 0}, {}, r"hook 'blocks\.0\.ln2\.hook_normalized' is not in this store"),
        ({"layer": 1}, {"model": "smollm2-135m", "store": None}, "Expected"),
    ],
)  # fmt: skip
def test_bad_transcoder_configs_fail_before_any_work(
    tmp_path, relu_setup, capsys, section, data, match
) -> None:  # type: ignore[no-untyped-def]
    from saes.__main__ import main

    model, hf, store = relu_setup
    cfg = run_config(tmp_path, store)
    cfg["transcoder"], cfg["data"] = section, {**cfg["data"], **data}
    if data.get("model"):  # streaming: the pair is checked before the model is loaded
        cfg["transcoder"] = {
            "hook_in": "blocks.1.ln2.hook_normalized",
            "hook_out": "blocks.2.hook_mlp_out",
        }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--no-progress"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "run_topk").exists()


def test_a_set_is_trained_layer_by_layer_and_tabulated(tmp_path, relu_setup) -> None:
    import argparse

    from saes.transcoder import load_transcoders, save_to_set
    from saes.transcoders import markdown, train_layer

    model, hf, store = relu_setup
    tokens = torch.stack([store.context(i) for i in range(N_CTX)])
    args = argparse.Namespace(
        model="random", d_sae=64, k=8, epochs=20, batch_size=64, lr=3e-3, seed=0,
        forward_tokens=64, progress=False,
    )  # fmt: skip
    rows = []
    for layer in (0, 1):
        tc, row = train_layer(model, layer, tokens[:40], tokens[40:], args)
        save_to_set(tc, tmp_path / "set", layer)
        rows.append(row)
        # every context's position 0 is left out of the rows (the default; docs/transcoders.md)
        assert row["train_tokens"] == 40 * (CTX - 1) and row["eval_tokens"] == 8 * (CTX - 1)
        assert row["steps"] == -(-20 * 40 * (CTX - 1) // 64) and row["fvu"] < 0.5, row  # ceil
    back = load_transcoders(model, tmp_path / "set")
    assert sorted(back) == [0, 1] and back[1].cfg.metadata["hook_out"] == "blocks.1.hook_mlp_out"
    table = markdown(rows, {"model": "random", "d_sae": 64}).splitlines()
    assert table[2].startswith("| layer | L0 | FVU |") and len(table) == 6
    assert table[5].startswith(f"| 1 | {rows[1]['l0']:.1f} | {rows[1]['fvu']:.3f} |")
