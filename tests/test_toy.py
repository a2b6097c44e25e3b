"""toy-induction: the shipped checkpoint has the induction circuit the patching tests rely on."""

from __future__ import annotations

import json
import math

import pytest
import torch

from interp import toy
from interp.manifest import read_run_manifest

# Well below what the shipped checkpoint measures at seq_len 20 (best induction 0.94 at L1H5, best
# previous-token 0.87, layer-0 induction <= 0.01, loss ratio 0.07; run.json "eval"), so only a
# real regression trips them.
MIN_INDUCTION = 0.75
MIN_PREVIOUS_TOKEN = 0.7
MIN_INDUCTION_GAP = 0.6  # best layer-1 induction head minus best layer-0 one
MAX_LOSS_RATIO = 0.2  # second repeat / first repeat
EVAL_SEED = 1234  # training draws from torch.Generator().manual_seed(0)


def _eval_tokens(seq_len: int = toy.SEQ_LEN, batch: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(EVAL_SEED)
    return toy.repeated_random_tokens(batch, seq_len, generator=gen)


@pytest.fixture(scope="module")
def model():
    return toy.load_toy_induction()


@pytest.fixture(scope="module")
def scores(model):
    return toy.head_scores(model, _eval_tokens())


def _check_circuit(model, scores: toy.HeadScores, seq_len: int = toy.SEQ_LEN) -> None:
    (layer, _), best = scores.best_induction()
    assert layer == 1, scores.induction
    assert best > MIN_INDUCTION, scores.induction
    assert best - float(scores.induction[0].max()) > MIN_INDUCTION_GAP, scores.induction
    assert float(scores.previous_token[0].max()) > MIN_PREVIOUS_TOKEN, scores.previous_token
    loss = toy.induction_loss(model, _eval_tokens(seq_len))
    assert loss.first > 0.8 * math.log(toy.D_VOCAB - 1)  # the first repeat is unpredictable
    assert loss.ratio < MAX_LOSS_RATIO, loss


def test_repeated_random_tokens_structure():
    gen = torch.Generator().manual_seed(0)
    tokens = toy.repeated_random_tokens(5, 7, vocab=20, bos=3, generator=gen)
    assert tokens.shape == (5, 15) and tokens.dtype == torch.long
    assert (tokens[:, 0] == 3).all()
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:])
    body = tokens[:, 1:]
    assert ((body >= 0) & (body < 20) & (body != 3)).all()
    again = toy.repeated_random_tokens(
        5, 7, vocab=20, bos=3, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(tokens, again)


def _has_repeat(body: torch.Tensor, min_len: int) -> bool:
    width = body.shape[1]
    return any(
        torch.equal(body[:, s : s + n], body[:, s + n : s + 2 * n])
        for n in range(min_len, width // 2 + 1)
        for s in range(width - 2 * n + 1)
    )


def test_training_batch_layout():
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        tokens = toy.training_batch(4, min_seq_len=6, generator=gen)
        assert tokens.shape == (4, toy.N_CTX)
        assert (tokens[:, 0] == toy.BOS).all() and (tokens[:, 1:] != toy.BOS).all()
        assert _has_repeat(tokens[:, 1:], 6)


def test_head_scores_on_known_patterns(tiny_model):
    """Force exact previous-token patterns in layer 0 and induction patterns in layer 1."""
    n = 6
    tokens = toy.repeated_random_tokens(2, n, vocab=50, generator=torch.Generator().manual_seed(0))
    pos = tokens.shape[1]
    prev = torch.zeros(pos, pos)
    prev[0, 0] = 1.0
    prev[torch.arange(1, pos), torch.arange(pos - 1)] = 1.0
    induct = torch.eye(pos)
    for q in range(n + 1, pos):
        induct[q] = 0.0
        induct[q, q - (n - 1)] = 1.0

    def set_pattern(value):
        def hook(pattern, hook):
            return value.expand_as(pattern).clone()

        return hook

    hooks = [
        ("blocks.0.attn.hook_pattern", set_pattern(prev)),
        ("blocks.1.attn.hook_pattern", set_pattern(induct)),
    ]
    with tiny_model.hooks(fwd_hooks=hooks):
        scores = toy.head_scores(tiny_model, tokens)
    assert scores.previous_token.shape == scores.induction.shape == (2, 4)
    torch.testing.assert_close(scores.previous_token[0], torch.ones(4))
    torch.testing.assert_close(scores.induction[1], torch.ones(4))
    torch.testing.assert_close(scores.induction[0], torch.zeros(4))
    torch.testing.assert_close(scores.previous_token[1], torch.zeros(4))
    assert scores.best_induction()[0][0] == 1


def test_head_scores_rejects_unrepeated_tokens(model):
    with pytest.raises(ValueError):
        toy.head_scores(model, torch.zeros(1, 10, dtype=torch.long))  # even length
    with pytest.raises(ValueError):
        toy.head_scores(model, torch.arange(9)[None])  # halves differ


def test_shipped_checkpoint_files():
    files = {p.name: p for p in toy.ASSET_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "run.json"} <= set(files)
    assert sum(p.stat().st_size for p in files.values()) < 1_000_000
    config = json.loads(files["config.json"].read_text())
    manifest = read_run_manifest(toy.ASSET_DIR)
    assert manifest["kind"] == "toy-induction"
    assert config == toy._config_kwargs(manifest["seed"])
    assert manifest["config"]["train"]["steps"] == toy.DEFAULT_STEPS
    assert manifest["data"]["train"]["generator"] == "interp.toy.training_batch"


def test_registry_loads_checkpoint(model):
    assert toy.TOY_MODELS["toy-induction"] is toy.load_toy_induction
    loaded = toy.TOY_MODELS["toy-induction"](device=None, dtype=None)
    assert not loaded.training
    assert loaded.cfg.attn_only and loaded.cfg.n_layers == 2
    assert loaded.W_E.dtype == torch.float32 and loaded.W_E.device.type == "cpu"
    for name, param in model.state_dict().items():
        assert torch.equal(param, loaded.state_dict()[name]), name


def test_loading_does_not_reseed_global_rng():
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    toy.load_toy_induction()
    assert torch.equal(torch.rand(3), expected)


def test_shipped_checkpoint_has_induction_circuit(model, scores):
    _check_circuit(model, scores)


@pytest.mark.parametrize("seq_len", [6, 12])
def test_circuit_works_on_shorter_repeats(model, seq_len):
    _check_circuit(model, toy.head_scores(model, _eval_tokens(seq_len)), seq_len)


def test_float64_load_matches_float32(scores):
    model64 = toy.load_toy_induction(dtype=torch.float64)
    assert model64.W_E.dtype == torch.float64 and model64.cfg.dtype == torch.float64
    scores64 = toy.head_scores(model64, _eval_tokens())
    torch.testing.assert_close(scores64.induction, scores.induction, atol=1e-4, rtol=0)
    torch.testing.assert_close(scores64.previous_token, scores.previous_token, atol=1e-4, rtol=0)


def test_cli_writes_loadable_checkpoint(tmp_path, capsys):
    toy._main(
        ["train", "--steps", "3", "--out", str(tmp_path), "--log-every", "0", "--threads", "1"]
    )
    assert "induction" in capsys.readouterr().out
    loaded = toy.load_toy_induction(directory=tmp_path)
    assert loaded.cfg.n_heads == toy.induction_config(seed=None).n_heads
    manifest = read_run_manifest(tmp_path)
    assert manifest["seed"] == 0 and manifest["config"]["train"]["steps"] == 3
    assert not list(tmp_path.glob(".*tmp*"))  # no leftover temp files


def test_training_leaves_global_state_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    model = toy.train_induction_model(steps=2)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert not model.training


def _roles(scores: toy.HeadScores) -> tuple[set, set]:
    prev = {(0, h) for h, v in enumerate(scores.previous_token[0].tolist()) if v > 0.5}
    ind = {(1, h) for h, v in enumerate(scores.induction[1].tolist()) if v > 0.5}
    return prev, ind


@pytest.mark.slow
def test_retraining_reproduces_checkpoint(model, scores):
    """Retrain with the recipe and thread count of the shipped checkpoint: the same circuit forms.

    On the machine that made it the weights come out bit-identical; elsewhere float reductions
    may differ, so this checks the circuit and its scores rather than the bits.
    """
    manifest = read_run_manifest(toy.ASSET_DIR)
    threads = torch.get_num_threads()
    torch.set_num_threads(manifest["torch_threads"])
    try:
        retrained = toy.train_induction_model(**manifest["config"]["train"])
    finally:
        torch.set_num_threads(threads)
    new_scores = toy.head_scores(retrained, _eval_tokens())
    _check_circuit(retrained, new_scores)
    assert _roles(new_scores) == _roles(scores)
    torch.testing.assert_close(new_scores.induction, scores.induction, atol=0.1, rtol=0)
    torch.testing.assert_close(new_scores.previous_token, scores.previous_token, atol=0.1, rtol=0)
