"""toy-induction-llama: the induction task on a Hugging Face Llama, known answers on any backend.

A TransformerBridge on TransformerLens 3 and 4, also a HookedTransformer on TL 3 (the same
weights through ``interp.models.hooked_from_hf_llama``), so these run where ``toy-induction``
(a HookedTransformer only) is skipped.
"""

from __future__ import annotations

import math

import pytest
import torch

from interp import toy
from interp.manifest import read_run_manifest
from interp.models import default_backend, hooked_available, load_model, load_toy_llama
from interp.patching import patch_sweep

BACKENDS = ["bridge", "hooked"] if hooked_available() else ["bridge"]

# Well below what the shipped checkpoint measures (toy.py's docstring; run.json "eval"), so only
# a real regression trips them.
MIN_PREVIOUS_TOKEN = 0.7  # best layer-0 head
MIN_INDUCTION = 0.75  # best layer-1 head
MAX_L0_INDUCTION = 0.1
MAX_LOSS_RATIO = 0.25  # second repeat / first repeat
INDUCTION_HEAD = 0.5  # a layer-1 head scoring above this is an induction head


def _eval_tokens(batch: int = 256, seed: int = toy.EVAL_SEED) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return toy.repeated_random_tokens(batch, toy.SEQ_LEN, generator=gen)


@pytest.fixture(scope="module", params=BACKENDS)
def model(request):
    return load_toy_llama(request.param)


@pytest.fixture(scope="module")
def scores(model):
    return toy.head_scores(model, _eval_tokens())


def test_shipped_folder_is_a_hugging_face_llama():
    from transformers import AutoConfig, AutoTokenizer

    names = {p.name for p in toy.LLAMA_ASSET_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "run.json"} <= names
    config = AutoConfig.from_pretrained(toy.LLAMA_ASSET_DIR)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 8)
    assert (config.vocab_size, config.max_position_embeddings) == (toy.D_VOCAB, toy.N_CTX)
    assert not config.tie_word_embeddings
    tok = AutoTokenizer.from_pretrained(toy.LLAMA_ASSET_DIR)
    assert len(tok) == toy.D_VOCAB and tok.bos_token_id == toy.BOS
    assert tok("<s> t1 t64 t127")["input_ids"] == [0, 1, 64, 127]
    assert tok.decode([0, 5, 127]) == "<s> t5 t127"


def test_mlps_are_zero_and_add_nothing(model):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(toy.LLAMA_ASSET_DIR)
    mlp = {n: p for n, p in hf.named_parameters() if ".mlp." in n}
    assert len(mlp) == 6 and all(not p.any() for p in mlp.values())
    _, cache = model.run_with_cache(_eval_tokens(4))
    for layer in range(2):
        assert not cache[f"blocks.{layer}.hook_mlp_out"].any()
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_post"],
            cache[f"blocks.{layer}.hook_resid_mid"],
            atol=0,
            rtol=0,
        )


def test_known_circuit(model, scores):
    (layer, _), best = scores.best_induction()
    assert layer == 1 and best > MIN_INDUCTION, scores.induction
    assert float(scores.induction[0].max()) < MAX_L0_INDUCTION, scores.induction
    (layer, _), prev = scores.best_previous_token()
    assert layer == 0 and prev > MIN_PREVIOUS_TOKEN, scores.previous_token
    loss = toy.induction_loss(model, _eval_tokens())
    assert loss.first > 0.8 * math.log(toy.D_VOCAB - 1)  # the first repeat is unpredictable
    assert loss.ratio < MAX_LOSS_RATIO, loss


def test_scores_are_those_recorded_at_training():
    manifest = read_run_manifest(toy.LLAMA_ASSET_DIR)
    recorded = manifest["eval"]
    scores = toy.head_scores(load_toy_llama("bridge"), _eval_tokens())
    torch.testing.assert_close(
        scores.induction, torch.tensor(recorded["induction"]), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        scores.previous_token, torch.tensor(recorded["previous_token"]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("backend", [None, *BACKENDS])
def test_load_model_registry(backend):
    model = load_model("toy-induction-llama", backend=backend, device="cpu")
    kind = "TransformerBridge" if (backend or default_backend()) == "bridge" else "Hooked"
    assert type(model).__name__.startswith(kind)
    assert not model.training and model.cfg.default_prepend_bos is False
    assert model.cfg.n_layers == 2 and model.cfg.n_heads == 8 and model.cfg.d_vocab == toy.D_VOCAB


@pytest.mark.skipif(not hooked_available(), reason="needs HookedTransformer (TransformerLens 3)")
def test_hooked_and_bridge_agree():
    bridge, hooked = load_toy_llama("bridge"), load_toy_llama("hooked")
    tokens = _eval_tokens(32)
    with torch.no_grad():
        # float32 rounding of two attention implementations: measured max |Δ| 2.8e-5 (|logit| <= 9)
        torch.testing.assert_close(hooked(tokens), bridge(tokens), atol=5e-5, rtol=0)
    a, b = toy.head_scores(hooked, _eval_tokens()), toy.head_scores(bridge, _eval_tokens())
    torch.testing.assert_close(a.induction, b.induction, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.previous_token, b.previous_token, atol=1e-5, rtol=0)


def _second_repeat_logprob(clean: torch.Tensor, positions: list[int]):
    """Mean log-prob of the clean next token at ``positions`` (the second repeat)."""
    targets = clean[:, [p + 1 for p in positions]]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        logp = logits.float().log_softmax(-1)
        return logp.gather(-1, targets[..., None].to(logp.device))[..., 0].mean(-1)

    return metric


def _z_sweep(model, direction: str) -> torch.Tensor:
    """Mean effect ``[layer, head]`` of patching one head's z, all positions, on the log-prob of
    the second repeat; corrupt = the second repeat replaced by fresh random tokens."""
    n = toy.SEQ_LEN
    clean = _eval_tokens(16, seed=777)
    fresh = toy.repeated_random_tokens(16, n, generator=torch.Generator().manual_seed(778))
    corrupt = torch.cat([clean[:, : n + 1], fresh[:, n + 1 :]], dim=1)
    positions = list(range(n + 1, 2 * n))  # predicting x_2..x_n of the second repeat
    metric = _second_repeat_logprob(clean, positions)
    res = patch_sweep(
        model,
        clean,
        corrupt,
        metric,
        site="z",
        over=("layer", "head"),
        direction=direction,
        logits_at=positions,
    )
    assert res.corrupt is not None and float(res.clean.mean() - res.corrupt.mean()) > 2.0
    base = res.corrupt if direction == "denoise" else res.clean
    return (res.values - base[:, None, None]).mean(0)


def test_patching_finds_the_induction_heads(model, scores):
    """Restoring one head's clean z into the corrupted run: the layer-1 heads that restore most
    are the induction heads :func:`toy.head_scores` finds, each far above any layer-0 head."""
    effect = _z_sweep(model, "denoise")
    induction = {h for h, v in enumerate(scores.induction[1].tolist()) if v > INDUCTION_HEAD}
    assert induction, scores.induction
    top = effect[1].abs().argsort(descending=True)[: len(induction)].tolist()
    assert set(top) == induction, (effect, scores.induction)
    assert float(effect[1, sorted(induction)].min()) > 4 * float(effect[0].abs().max()), effect


def test_patching_finds_the_previous_token_head(model, scores):
    """Corrupting one head's z in the clean run: the layer-0 head that hurts most is the best
    previous-token head (the K-composition input of the induction heads)."""
    effect = _z_sweep(model, "noise")
    (layer, head), _ = scores.best_previous_token()
    assert layer == 0 and int(effect[0].abs().argmax()) == head, (effect, scores.previous_token)
    assert float(effect[0, head]) < -0.3, effect


def test_training_is_deterministic_and_leaves_global_state_alone():
    settings = toy.TrainSettings(steps=3)
    before = torch.random.get_rng_state()
    a = toy.train_induction_llama(settings)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = toy.train_induction_llama(settings)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(not v.any() for k, v in sa.items() if ".mlp." in k)  # frozen at zero
    assert not any(p.requires_grad for n, p in a.named_parameters() if ".mlp." in n)


def test_cli_writes_loadable_folder(tmp_path, capsys):
    from interp.toy import _main as toy_cli

    toy_cli(["train-llama", "--steps", "2", "--out", str(tmp_path), "--log-every", "0"])
    assert "wrote" in capsys.readouterr().out
    manifest = read_run_manifest(tmp_path)
    assert manifest["config"]["train"]["steps"] == 2 and "induction" in manifest["eval"]
    model = load_toy_llama("bridge", directory=tmp_path)
    assert model(_eval_tokens(2)).shape == (2, toy.N_CTX, toy.D_VOCAB)
