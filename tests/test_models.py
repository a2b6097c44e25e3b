"""interp.models: every loading route, the SmolLM2 cache, errors, dtypes and fingerprints.

Tiny random models (Llama, GPT-NeoX, GPT-2) are built in code with a small byte-level BPE
tokenizer trained in code, so nothing here needs the network. The TransformerLens-name route is
tested by laying out a real Hugging Face hub cache (``models--gpt2/snapshots/<sha>``) in a tmp
dir: with ``HF_HUB_OFFLINE=1`` TransformerLens's own ``from_pretrained`` path reads it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from interp import models
from interp._io import sha256_file
from interp.models import (
    BackendUnavailableError,
    ModelFolderError,
    UnknownModelError,
    default_backend,
    hooked_available,
    known_model_names,
    load_model,
    model_fingerprint,
    resolve_dtype,
)

HOOKED = hooked_available()

SENTENCE = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp, "
    "even after the last ships had stopped coming to the harbour."
)


# ---------------------------------------------------------------- tiny models built in code


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([SENTENCE, "The capital of France is Paris."] * 5, trainer)
    special = "<|endoftext|>"
    fast = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special
    )
    folder = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(folder)
    return folder


def _save(model: nn.Module, tokenizer_dir: Path, folder: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tokenizer_dir, tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
        rope_parameters={"rope_theta": 50000.0, "rope_type": "default"},
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # HF inits near zero; larger weights make the comparison meaningful
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return _save(model, tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def neox_dir(tokenizer_dir, tmp_path_factory) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=300, max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return _save(GPTNeoXForCausalLM(cfg), tokenizer_dir, tmp_path_factory.mktemp("tiny-neox"))


@pytest.fixture()
def gpt2_hub(tokenizer_dir, tmp_path, monkeypatch) -> Path:
    """A hub cache holding a tiny random 'gpt2', made the active cache for this test."""
    import huggingface_hub.constants
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=256, n_ctx=256,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    repo = tmp_path / "hub" / "models--gpt2"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = _save(GPT2LMHeadModel(cfg), tokenizer_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    # huggingface_hub reads HF_HUB_CACHE at import; its constant is what lookups use.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def _hf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(ids).logits


# ---------------------------------------------------------------- backends


@pytest.fixture()
def no_hooked(monkeypatch):
    """TransformerLens as TL 4 has it: importing HookedTransformer(Config) raises ImportError."""
    import transformer_lens

    if not HOOKED:  # TL 4 already: nothing to simulate (its hasattr raises ImportError too)
        return

    def removed(name):
        raise ImportError(f"{name!r} was removed in TransformerLens 4.0 (simulated)")

    for name in ("HookedTransformer", "HookedTransformerConfig"):
        monkeypatch.delattr(transformer_lens, name, raising=False)
    monkeypatch.setattr(transformer_lens, "__getattr__", removed, raising=False)


def test_default_backend_follows_transformer_lens():
    assert default_backend() == ("hooked" if HOOKED else "bridge")


def test_default_backend_without_hooked_transformer(no_hooked):
    assert not hooked_available() and default_backend() == "bridge"


def test_unknown_backend_suggests_close_matches():
    with pytest.raises(ValueError, match=r"Unknown backend 'brige'.*did you mean 'bridge'"):
        load_model("smollm2-135m", backend="brige")
    with pytest.raises(ValueError, match=r"'hooked', 'bridge'"):
        load_model("smollm2-135m", backend="HookedTransformer")


def test_hooked_backend_without_hooked_transformer(no_hooked, llama_dir):
    for name in ("smollm2-135m", llama_dir, "toy-induction"):
        with pytest.raises(BackendUnavailableError, match="TransformerLens 4 removed") as info:
            load_model(name, backend="hooked")
        assert "backend='bridge'" in str(info.value)


def test_toy_models_are_hooked_only(no_hooked):
    from interp.toy import ToyModelUnavailableError

    with pytest.raises(ToyModelUnavailableError, match="TransformerBridges are future work"):
        load_model("toy-induction")  # the default backend here is the bridge
    with pytest.raises(ValueError, match="future work"):
        load_model("toy-induction", backend="bridge")


def test_toy_model_as_bridge_refused():
    with pytest.raises(ValueError, match="HookedTransformers only"):
        load_model("toy-induction", backend="bridge")


def test_llama_folder_as_bridge(llama_dir, tokenizer_dir):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model = load_model(llama_dir, backend="bridge", device="cpu")
    assert isinstance(model, TransformerBridge)
    assert model.cfg.default_prepend_bos is False  # this tokenizer adds none
    ids = AutoTokenizer.from_pretrained(tokenizer_dir)(SENTENCE, return_tensors="pt").input_ids
    assert torch.equal(model.to_tokens(SENTENCE), ids)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    torch.testing.assert_close(logits, _hf_logits(llama_dir, ids), atol=1e-5, rtol=1e-5)
    assert cache["blocks.1.attn.hook_z"].shape == (1, ids.shape[1], 4, 16)
    half = load_model(llama_dir, backend="bridge", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_llama_folder_default_backend(llama_dir):
    model = load_model(llama_dir, device="cpu")
    assert type(model).__name__ == ("HookedTransformer" if HOOKED else "TransformerBridge")


@pytest.mark.hooked
def test_hooked_backend_needs_a_llama_folder(neox_dir):
    with pytest.raises(ModelFolderError, match="Llama checkpoints only.*backend='bridge'"):
        load_model(neox_dir, backend="hooked")


# ---------------------------------------------------------------- names, dtypes, errors


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, torch.float32), ("float32", torch.float32), ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16), ("torch.float16", torch.float16), ("fp64", torch.float64),
        (torch.bfloat16, torch.bfloat16),
    ],
)  # fmt: skip
def test_resolve_dtype(given, expected):
    assert resolve_dtype(given) is expected


def test_resolve_dtype_rejects_unknown():
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype("float8")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError) as info:
        load_model("smolm2-135m")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.suggestions[0] == "smollm2-135m"
    assert "Did you mean: 'smollm2-135m'" in str(err)
    assert "OFFICIAL_MODEL_NAMES" in str(err) and "smollm2-135m" in err.known


def test_unknown_name_suggests_tl_names():
    with pytest.raises(UnknownModelError) as info:
        load_model("gtp2")
    assert "gpt2" in info.value.suggestions


def test_missing_path_is_unknown(tmp_path):
    with pytest.raises(UnknownModelError):
        load_model(tmp_path / "no-such-folder")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UnknownModelError):  # a file is not a model folder
        load_model(tmp_path / "weights.bin")


def test_folder_without_config_json(tmp_path):
    with pytest.raises(ModelFolderError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelFolderError, match="cannot be read"):
        load_model(tmp_path)


def test_non_causal_folder(tmp_path):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(ModelFolderError, match="not a causal language model"):
        load_model(tmp_path)


def test_toy_registry_dispatch(monkeypatch, tiny_model):
    calls = []

    def loader(*, device=None, dtype=None, **kwargs):
        calls.append((device, dtype, kwargs))
        return tiny_model

    fake = types.ModuleType("interp.toy")
    fake.TOY_MODELS = {"toy-fake": loader}
    monkeypatch.setitem(sys.modules, "interp.toy", fake)
    assert load_model("toy-fake", device="cpu", dtype="bfloat16", n_layers=2) is tiny_model
    assert calls == [("cpu", torch.bfloat16, {"n_layers": 2})]
    assert "toy-fake" in known_model_names()
    with pytest.raises(UnknownModelError) as info:
        load_model("toy-fak")
    assert "toy-fake" in info.value.suggestions and "toy-fake" in str(info.value)


def test_missing_toy_module_is_benign(monkeypatch):
    monkeypatch.setitem(sys.modules, "interp.toy", None)  # import now fails as if absent
    assert known_model_names() == ["smollm2-135m"]


def test_extra_options_rejected_where_unused(llama_dir):
    with pytest.raises(TypeError, match="fold_ln"):
        load_model(llama_dir, fold_ln=True)


# ---------------------------------------------------------------- local folders, TL names


@pytest.mark.hooked
def test_llama_folder_is_hooked_transformer(llama_dir, tokenizer_dir):
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer

    model = load_model(llama_dir, backend="hooked", device="cpu")
    assert type(model) is HookedTransformer
    assert model.cfg.rotary_base == 50000.0 and model.cfg.n_key_value_heads == 2
    assert model.cfg.normalization_type == "RMS"  # not folded into RMSPre
    ids = AutoTokenizer.from_pretrained(tokenizer_dir)(SENTENCE, return_tensors="pt").input_ids
    assert model.cfg.default_prepend_bos is False  # this tokenizer adds none
    assert torch.equal(model.to_tokens(SENTENCE), ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), _hf_logits(llama_dir, ids), atol=1e-4, rtol=1e-4)
    half = load_model(llama_dir, backend="hooked", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_other_architecture_folder_is_bridge(neox_dir, tokenizer_dir):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model = load_model(neox_dir, device="cpu")
    assert isinstance(model, TransformerBridge)
    assert "blocks.0.hook_resid_post" in model.hook_dict
    assert "blocks.1.attn.hook_z" in model.hook_dict
    ids = AutoTokenizer.from_pretrained(tokenizer_dir)(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    torch.testing.assert_close(logits, _hf_logits(neox_dir, ids), atol=1e-5, rtol=1e-5)
    assert cache["blocks.0.hook_resid_post"].shape == (1, ids.shape[1], 64)
    assert model_fingerprint(model) == model_fingerprint(load_model(neox_dir, device="cpu"))
    half = load_model(neox_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.hooked
def test_tl_official_name_reads_hub_cache(gpt2_hub):
    from transformer_lens import HookedTransformer

    model = load_model("gpt2", backend="hooked", device="cpu")
    assert type(model) is HookedTransformer
    assert model.cfg.normalization_type == "LN"  # faithful: fold_ln off
    ids = model.to_tokens(SENTENCE, prepend_bos=False)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), _hf_logits(gpt2_hub, ids), atol=1e-4, rtol=1e-4)
    folded = load_model(
        "gpt2", backend="hooked", device="cpu", dtype="float64", fold_ln=True
    )  # kwargs pass on
    assert folded.cfg.normalization_type == "LNPre" and folded.cfg.dtype == torch.float64


# ---------------------------------------------------------------- fingerprint


def test_model_fingerprint(tiny_model):
    first = model_fingerprint(tiny_model)
    assert first == model_fingerprint(tiny_model) and len(first) == 64
    with torch.no_grad():
        tiny_model.blocks[0].attn.W_Q[0, 0, 0] += 1e-3
    assert model_fingerprint(tiny_model) != first
    assert model_fingerprint(tiny_model.to(torch.bfloat16)) != model_fingerprint(
        tiny_model.to(torch.float32)
    )


# ---------------------------------------------------------------- cache mechanics (stubbed)


def _fake_writer(runs: list[Path], sub: str):
    def fake_write(gguf_path, gguf_sha, staging):
        runs.append(staging)
        (staging / sub).mkdir()
        (staging / sub / "model.safetensors").write_bytes(b"x" * 100)
        sizes = {f"{sub}/model.safetensors": 100}
        source = {"format": models._CACHE_FORMAT, "gguf": {"sha256": gguf_sha}, "files": sizes}
        (staging / "source.json").write_text(json.dumps(source))

    return fake_write


@pytest.fixture(params=[pytest.param("hooked", marks=pytest.mark.hooked), "bridge"])
def stub_conversion(request, tmp_path, monkeypatch):
    """Swap the real GGUF conversion for a fast fake, keeping publish/validation logic real.

    ``hooked``: the full conversion into ``smollm2-135m/``; ``bridge``: the HF-only one into
    ``smollm2-135m-hf/`` (no full conversion there to reuse).
    """
    backend = request.param
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"gguf v1")
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "smollm2_gguf", lambda: gguf)
    loaded: list[Path] = []

    def fake_load(directory, device, dtype):
        loaded.append(directory)
        return nn.Linear(1, 1)

    monkeypatch.setattr(models, "_load_cached_hooked", fake_load)
    monkeypatch.setattr(models, "_load_cached_bridge", fake_load)
    runs: list[Path] = []
    monkeypatch.setattr(models, "_write_conversion", _fake_writer(runs, "tl"))
    monkeypatch.setattr(models, "_write_hf_conversion", _fake_writer(runs, "hf"))
    hooked = backend == "hooked"
    name = "smollm2-135m" if hooked else "smollm2-135m-hf"
    writer = "_write_conversion" if hooked else "_write_hf_conversion"
    return types.SimpleNamespace(
        gguf=gguf, runs=runs, cache=tmp_path / "cache", backend=backend, name=name,
        weights=f"{'tl' if hooked else 'hf'}/model.safetensors", writer=writer, loaded=loaded,
        load=lambda: load_model("smollm2-135m", backend=backend, device="cpu"),
    )  # fmt: skip


def test_cache_converts_once_and_follows_the_gguf(stub_conversion):
    st = stub_conversion
    st.load()
    st.load()
    assert len(st.runs) == 1
    st.gguf.write_bytes(b"gguf v2")  # a different GGUF: the cache no longer belongs to it
    st.load()
    assert len(st.runs) == 2
    source = json.loads((st.cache / st.name / "source.json").read_text())
    assert source["gguf"]["sha256"] == sha256_file(st.gguf)
    assert sorted(p.name for p in st.cache.iterdir()) == [st.name]  # no leftovers


def test_truncated_cache_is_rebuilt(stub_conversion):
    st = stub_conversion
    st.load()
    (st.cache / st.name / st.weights).write_bytes(b"x" * 10)
    st.load()
    assert len(st.runs) == 2


def test_leftover_staging_dir_is_not_trusted(stub_conversion):
    st = stub_conversion
    st.load()
    final = st.cache / st.name
    # What a conversion killed after writing everything but before its rename leaves behind.
    leftover = st.cache / f".{st.name}.tmp-999999999-dead"
    final.rename(leftover)
    st.load()
    assert len(st.runs) == 2  # converted again rather than adopting the leftover
    assert not leftover.exists()  # its owner pid is gone, so it was cleaned up
    assert final.is_dir()


def test_failed_conversion_leaves_nothing(stub_conversion, monkeypatch):
    st = stub_conversion

    def crash(gguf_path, gguf_sha, staging):
        (staging / "half-written").write_bytes(b"x")
        raise RuntimeError("killed")

    monkeypatch.setattr(models, st.writer, crash)
    with pytest.raises(RuntimeError, match="killed"):
        st.load()
    assert not st.cache.exists() or list(st.cache.iterdir()) == []


def test_bridge_reuses_the_full_conversion(tmp_path, monkeypatch):
    """Where the HookedTransformer conversion exists, the bridge loads its hf/ folder."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"gguf v1")
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "smollm2_gguf", lambda: gguf)
    runs: list[Path] = []
    monkeypatch.setattr(models, "_write_hf_conversion", _fake_writer(runs, "hf"))
    full = tmp_path / "cache" / "smollm2-135m"
    models._convert_smollm2(gguf, sha256_file(gguf), full, writer=_fake_writer([], "hf"))
    assert models._smollm2_hf_folder() == full / "hf" and runs == []
    gguf.write_bytes(b"gguf v2")  # the full conversion is stale: the bridge converts its own
    assert models._smollm2_hf_folder() == tmp_path / "cache" / "smollm2-135m-hf" / "hf"
    assert len(runs) == 1


# ---------------------------------------------------------------- the real SmolLM2 (slow)


def _smollm2_hf_dir() -> Path:
    return models.cache_root() / "smollm2-135m" / "hf"


@pytest.mark.slow
def test_smollm2_config(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert (cfg.d_head, cfg.d_vocab, cfg.act_fn) == (64, 49152, "silu")
    assert cfg.normalization_type == "RMS" and cfg.final_rms and cfg.gated_mlp
    assert cfg.positional_embedding_type == "rotary" and cfg.rotary_base == 100000.0
    assert cfg.default_prepend_bos is False
    torch.testing.assert_close(smollm2.W_U, smollm2.W_E.T)  # tied embeddings, no centring


@pytest.mark.slow
def test_smollm2_matches_hf_log_probs(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = _smollm2_hf_dir()
    ids = AutoTokenizer.from_pretrained(hf_dir)(SENTENCE, return_tensors="pt").input_ids
    assert torch.equal(smollm2.to_tokens(SENTENCE).cpu(), ids)  # same BOS decision as HF
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ours = smollm2(ids.to(smollm2.cfg.device)).log_softmax(-1).cpu()
        theirs = hf(ids).logits.log_softmax(-1)
    assert (ours - theirs).abs().max().item() < 1e-3


@pytest.mark.slow
def test_smollm2_says_paris(smollm2):
    with torch.no_grad():
        logits = smollm2(smollm2.to_tokens("The capital of France is"))
    assert smollm2.to_string(logits[0, -1].argmax()) == " Paris"


@pytest.mark.slow
def test_smollm2_second_load_reads_only_the_cache(smollm2, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached load must not read the GGUF")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", forbidden)
    monkeypatch.setattr(models, "_convert_smollm2", forbidden)
    start = time.perf_counter()
    again = load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 30
    assert model_fingerprint(again) == model_fingerprint(smollm2)
    half = load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.slow
def test_smollm2_fresh_conversion(smollm2, tmp_path, monkeypatch):
    """Converting into an empty cache gives the layout, manifest and the very same weights."""
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    model = load_model("smollm2-135m", device="cpu")
    root = tmp_path / "smollm2-135m"
    for rel in ("hf/config.json", "hf/model.safetensors", "hf/tokenizer.json", "tl/config.json",
                "tl/model.safetensors", "source.json", "run.json"):  # fmt: skip
        assert (root / rel).is_file(), rel
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]  # no staging dirs left
    assert "quantization_config" not in json.loads((root / "hf/config.json").read_text())
    assert json.loads((root / "hf/tokenizer_config.json").read_text())["add_bos_token"] is False
    manifest = json.loads((root / "run.json").read_text())
    gguf = models.smollm2_gguf()
    assert manifest["kind"] == "model-conversion"
    assert manifest["data"]["gguf"] == {
        "path": str(gguf), "sha256": sha256_file(gguf), "size": os.path.getsize(gguf)
    }  # fmt: skip
    assert model_fingerprint(model) == model_fingerprint(smollm2)


@pytest.mark.slow
def test_smollm2_bridge_matches_hooked(smollm2, smollm2_bridge):
    """The bridge over the same weights gives the HookedTransformer's logits (1e-4) and tokens."""
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(smollm2_bridge, TransformerBridge)
    assert smollm2_bridge.cfg.default_prepend_bos is False
    prompt = "The capital of France is"
    tokens = smollm2.to_tokens(prompt).cpu()
    assert torch.equal(smollm2_bridge.to_tokens(prompt), tokens)
    with torch.no_grad():
        hooked = smollm2(tokens.to(smollm2.cfg.device)).cpu()
        bridge = smollm2_bridge(tokens)
    assert (bridge - hooked).abs().max().item() < 1e-4  # measured 3.6e-5 (TL 3.9 and TL 4.3)
    for model, logits in ((smollm2, hooked), (smollm2_bridge, bridge)):
        assert model.to_string(logits[0, -1].argmax()) == " Paris"


@pytest.mark.slow
def test_smollm2_bridge_says_paris(smollm2_bridge):
    """The bridge alone (what TransformerLens 4 runs), against Hugging Face's own logits."""
    from transformers import AutoModelForCausalLM

    tokens = smollm2_bridge.to_tokens("The capital of France is")
    with torch.no_grad():
        logits = smollm2_bridge(tokens)
        hf = AutoModelForCausalLM.from_pretrained(models._smollm2_hf_folder()).eval()
        torch.testing.assert_close(logits, hf(tokens).logits, atol=1e-4, rtol=1e-4)
    assert smollm2_bridge.to_string(logits[0, -1].argmax()) == " Paris"


# hooked: it edits HookedTransformer weights in place (a bridge's W_U is a derived view).
@pytest.mark.hooked
def test_fingerprint_is_cached_until_a_weight_changes(tiny_model):
    from interp.models import _fingerprint, model_fingerprint

    first = model_fingerprint(tiny_model)
    assert model_fingerprint(tiny_model) == first == _fingerprint(tiny_model)
    with torch.no_grad():
        tiny_model.blocks[0].attn.W_Q[0, 0, 0] += 1.0  # in place: the version counter moves
    changed = model_fingerprint(tiny_model)
    assert changed != first and changed == _fingerprint(tiny_model)
    tiny_model.unembed.W_U.data = tiny_model.unembed.W_U.data.clone() * 2  # replaced storage
    assert model_fingerprint(tiny_model) == _fingerprint(tiny_model) != changed


def test_patching_on_a_bridge_matches_transformer_lens(neox_dir):
    """patch_sweep on a TransformerBridge equals TL's own sweep on the same bridge."""
    import transformer_lens.patching as tlp

    from interp.metrics import logit_diff
    from interp.patching import patch_sweep

    model = load_model(neox_dir, device="cpu")
    g = torch.Generator().manual_seed(0)
    clean, corrupt = (
        torch.randint(0, 300, (3, 6), generator=g),
        torch.randint(0, 300, (3, 6), generator=g),
    )

    def metric(logits):
        return logit_diff(logits, 5, 9)

    _, cache = model.run_with_cache(clean)
    for tl_fn, site, over in [
        (tlp.get_act_patch_resid_pre, "resid_pre", ("layer", "pos")),
        (tlp.get_act_patch_attn_head_out_all_pos, "z", ("layer", "head")),
    ]:
        ref = tl_fn(model, corrupt, cache, lambda lg: metric(lg).mean())
        got = patch_sweep(model, clean, corrupt, metric, site=site, over=over)
        # generic or partial-forward path (the core's layer restart on a rotary bridge): equal
        torch.testing.assert_close(got.mean, ref.float(), atol=1e-5, rtol=0)
