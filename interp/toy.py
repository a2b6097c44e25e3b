"""Toy models with a known answer: a 2-layer attention-only induction transformer.

``toy-induction`` is trained on random tokens in which segments repeat, so the only way to beat
chance is to copy from the earlier copy: previous-token heads in layer 0 write "the token before
me" into each position and induction heads in layer 1 attend to the position after the earlier
occurrence of the current token (K-composition). Patching and scrubbing tests use it because the
circuit is known in advance.

Shipped checkpoint (``interp/assets/toy_induction``, seed 0, 2000 steps), measured on
``repeated_random_tokens(256, 20)`` (seed 12345) with :func:`head_scores`: previous-token
heads L0H4 (0.87) and L0H2 (0.86), every layer-1 head an induction head (0.85-0.94, best L1H5,
L1H7 0.94), layer-0 induction scores <= 0.03, loss on the second repeat 0.07x the first. (The
offset-only induction score used before ``interp.heads`` gave 0.80-0.90: it ignored attention
to the copies of chance repeats inside x.) Rebuild it (60-80 s on 2 CPU threads) with
``python -m interp.toy train``; same seed and thread count give bit-identical weights.

``toy-induction-llama`` is the same task and sizes on a Hugging Face ``LlamaForCausalLM``
(RMSNorm, rotary positions in queries and keys only, MLPs one unit wide with zero frozen weights),
so it loads as a TransformerBridge on TransformerLens 3 and 4 (and as a HookedTransformer on TL 3)
with :func:`interp.models.load_toy_llama`. Shipped folder ``interp/assets/toy_induction_llama`` (seed 0, 1000
steps), measured the same way on the bridge: previous-token head L0H7 (0.93; next L0H6 0.31),
every layer-1 head an induction head (0.88-0.96, best L1H7 0.96), layer-0 induction scores
<= 0.04, loss on the second repeat 0.15x the first (0.744 / 5.109). Rebuild it with
``python -m interp.toy train-llama`` (290 s and 532 s measured on 2 CPU threads shared with
other jobs; the two runs gave bit-identical weights).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save
from torch import Tensor

from interp import heads
from interp._io import atomic_write_bytes, atomic_write_json, read_json
from interp.manifest import write_run_manifest

if TYPE_CHECKING:  # TransformerLens 4 has neither: imported where a toy model is built
    from transformer_lens import HookedTransformer, HookedTransformerConfig

__all__ = ["ASSET_DIR", "BOS", "SEQ_LEN", "TOY_MODELS", "HeadScores", "InductionLoss"]
__all__ += ["ToyModelUnavailableError", "TrainSettings", "head_scores", "induction_config"]
__all__ += ["induction_loss"]
__all__ += ["load_toy_induction", "repeated_random_tokens", "save_toy_model"]
__all__ += ["train_induction_model", "training_batch"]
__all__ += [
    "LLAMA_ASSET_DIR",
    "llama_bridge",
    "llama_config_kwargs",
    "llama_parts",
    "llama_tokenizer",
]
__all__ += ["save_toy_llama", "train_induction_llama"]

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "toy_induction"

# Token 0 is BOS; random tokens are drawn from 1..D_VOCAB-1. 127 ids keep chance repeats of a
# token within a sequence rare, so one matching token is enough evidence for the induction head.
D_VOCAB = 128
BOS = 0
# Longest repeat; n_ctx fits [BOS] + two repeats of it.
SEQ_LEN = 20
N_CTX = 2 * SEQ_LEN + 1


class ToyModelUnavailableError(ImportError):
    """A toy model asked for where TransformerLens has no HookedTransformer (TL 4)."""


def _hooked() -> tuple[type[HookedTransformer], type[HookedTransformerConfig]]:
    """TransformerLens 3's classes, or a clear error: ``toy-induction`` is a HookedTransformer."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as err:  # TL 4 raises ImportError for the removed names
        raise ToyModelUnavailableError(
            "toy-induction is a HookedTransformer, which TransformerLens 4 removed (its "
            "shortformer positions have no Hugging Face architecture; such toy models as "
            "TransformerBridges are future work). Use the TransformerLens 3 environment (`make "
            "env`) for it, or toy-induction-llama (interp.models.load_toy_llama), the same task on a Llama, "
            "which loads as a TransformerBridge."
        ) from err
    return HookedTransformer, HookedTransformerConfig


def induction_config(seed: int | None = 0) -> HookedTransformerConfig:
    """The fixed architecture of ``toy-induction``.

    2 layers, attention only, d_model 64, 8 heads of d_head 8, LayerNorm, d_vocab 128 (BOS = 0),
    n_ctx 41, GPT-2 init. Shortformer positions (added to queries and keys only, never to the
    residual stream) keep the values about token identity alone, so the previous-token ->
    induction composition forms fast; 8 narrow heads let layer 0 split into sharp single-offset
    heads instead of 4 heads that all smear over the last few positions.

    ``seed`` seeds weight initialisation. TransformerLens reseeds torch, numpy and ``random``
    globally whenever a config with a seed is built, so loaders use ``seed=None``.
    """
    return _hooked()[1](**_config_kwargs(seed))


def _config_kwargs(seed: int | None) -> dict[str, Any]:
    return {
        "n_layers": 2,
        "d_model": 64,
        "n_heads": 8,
        "d_head": 8,
        "n_ctx": N_CTX,
        "d_vocab": D_VOCAB,
        "attn_only": True,
        "normalization_type": "LN",
        "positional_embedding_type": "shortformer",
        "act_fn": None,
        "d_mlp": None,
        "init_mode": "gpt2",
        "default_prepend_bos": False,
        "seed": seed,
    }


def _random_tokens(
    shape: tuple[int, ...], vocab: int, bos: int, generator: torch.Generator | None
) -> Tensor:
    x = torch.randint(0, vocab - 1, shape, generator=generator)
    return x + (x >= bos).long()  # uniform over every id but bos


def repeated_random_tokens(
    batch: int,
    seq_len: int,
    *,
    vocab: int = D_VOCAB,
    bos: int = BOS,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch pos"]:
    """``[BOS, x_1..x_n, x_1..x_n]``, shape ``[batch, 2 * seq_len + 1]``, ``x_i`` uniform over
    ``0..vocab-1`` except ``bos``."""
    x = _random_tokens((batch, seq_len), vocab, bos, generator)
    first = torch.full((batch, 1), bos, dtype=torch.long)
    return torch.cat([first, x, x], dim=1)


def training_batch(
    batch: int,
    *,
    min_seq_len: int = 4,
    max_seq_len: int = SEQ_LEN,
    vocab: int = D_VOCAB,
    bos: int = BOS,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch pos"]:
    """``[BOS, x x, y y, ..., noise]`` of length ``2 * max_seq_len + 1``.

    Repeated segments with lengths drawn in ``[min_seq_len, max_seq_len]`` (one layout per batch)
    are packed until less than ``2 * min_seq_len`` positions are left, which get random tokens.
    Varying lengths and offsets stop the model from finding the earlier copy by absolute
    position (with one fixed layout, layer-0 heads learn where the copy usually is, muddying both
    circuits); packing keeps most positions predictable, so the circuit forms early.
    """
    parts = [torch.full((batch, 1), bos, dtype=torch.long)]
    left = 2 * max_seq_len
    while left >= 2 * min_seq_len:
        n = int(
            torch.randint(min_seq_len, min(max_seq_len, left // 2) + 1, (), generator=generator)
        )
        x = _random_tokens((batch, n), vocab, bos, generator)
        parts += [x, x]
        left -= 2 * n
    parts.append(_random_tokens((batch, left), vocab, bos, generator))
    return torch.cat(parts, dim=1)


def _seq_len(tokens: Tensor) -> int:
    n = (tokens.shape[-1] - 1) // 2
    first, second = tokens[:, 1 : n + 1], tokens[:, n + 1 :]
    if n < 2 or first.shape != second.shape or not torch.equal(first, second):
        raise ValueError("expected [BOS, x, x] tokens as made by repeated_random_tokens")
    return n


class HeadScores(NamedTuple):
    """Mean attention per head, each ``[n_layers, n_heads]`` (see :mod:`interp.heads`)."""

    previous_token: Float[Tensor, "n_layers n_heads"]
    induction: Float[Tensor, "n_layers n_heads"]

    def best_induction(self) -> tuple[tuple[int, int], float]:
        return _argmax2d(self.induction)

    def best_previous_token(self) -> tuple[tuple[int, int], float]:
        return _argmax2d(self.previous_token)


def _argmax2d(scores: Tensor) -> tuple[tuple[int, int], float]:
    flat = int(scores.argmax())
    layer, head = divmod(flat, scores.shape[1])
    return (layer, head), float(scores[layer, head])


def head_scores(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> HeadScores:
    """Previous-token and induction scores of every head on ``[BOS, x, x]`` tokens.

    :func:`interp.heads.head_scores` on these tokens (any text works there): previous-token is
    the mean attention from position i to i-1 over all i >= 1; induction the mean attention from
    each position whose token occurred earlier to the positions after its earlier occurrences
    (for the second repeat, offset -(seq_len - 1); chance repeats inside x count too).
    """
    _seq_len(tokens)
    scores = heads.head_scores(model, tokens, kinds=("previous_token", "induction"))
    return HeadScores(scores["previous_token"], scores["induction"])


class InductionLoss(NamedTuple):
    """Mean next-token loss on each repeat.

    ``first``: targets x_1..x_n of the first repeat (unpredictable, about ln(vocab - 1)).
    ``second``: targets x_2..x_n of the second repeat; x_1 is left out since nothing before it
    says the sequence is about to repeat.
    """

    first: float
    second: float

    @property
    def ratio(self) -> float:
        return self.second / self.first


@torch.no_grad()
def induction_loss(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> InductionLoss:
    n = _seq_len(tokens)
    # loss[:, i] is the loss of predicting tokens[:, i + 1]
    loss = model(tokens.to(model.cfg.device), return_type="loss", loss_per_token=True).float()
    return InductionLoss(float(loss[:, :n].mean()), float(loss[:, n + 1 :].mean()))


# Training ---------------------------------------------------------------------------------------

DEFAULT_STEPS = 2000


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything a training run depends on besides the architecture; recorded in run.json and
    the defaults of :func:`train_induction_model`."""

    steps: int = DEFAULT_STEPS
    seed: int = 0
    batch_size: int = 64
    lr: float = 3e-3
    min_seq_len: int = 4
    max_seq_len: int = SEQ_LEN


def train_induction_model(
    *,
    steps: int = TrainSettings.steps,
    seed: int = TrainSettings.seed,
    batch_size: int = TrainSettings.batch_size,
    lr: float = TrainSettings.lr,
    min_seq_len: int = TrainSettings.min_seq_len,
    max_seq_len: int = TrainSettings.max_seq_len,
    log_every: int = 0,
) -> HookedTransformer:
    """Train ``toy-induction`` from scratch: Adam, constant lr, a fresh :func:`training_batch`
    every step, next-token loss on every position.

    Bit-for-bit deterministic on CPU for a given seed and thread count (different thread counts
    split float reductions differently). Init is seeded through the config and the data through
    a private generator; the caller's global RNG and determinism settings are left as they were.
    """
    settings = TrainSettings(steps, seed, batch_size, lr, min_seq_len, max_seq_len)
    model = _fit(
        lambda: _hooked()[0](induction_config(seed=seed), move_to_device=False),
        lambda model, tokens: model(tokens, return_type="loss"),
        settings,
        log_every,
    )
    return model


def _fit(
    build: Callable[[], torch.nn.Module],
    loss_of: Callable[[Any, Tensor], Tensor],
    settings: TrainSettings,
    log_every: int,
) -> Any:
    """The training loop of every toy: ``build()`` under a forked RNG, Adam on the parameters
    that require grad, a fresh :func:`training_batch` from a private generator every step."""
    if not 2 <= settings.min_seq_len <= settings.max_seq_len <= SEQ_LEN:
        raise ValueError(f"need 2 <= min_seq_len <= max_seq_len <= {SEQ_LEN}")
    with _global_state_restored():
        # embedding backward accumulates in a thread-dependent order unless asked not to
        torch.use_deterministic_algorithms(True)
        model = build()
        model.train()
        gen = torch.Generator().manual_seed(settings.seed)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
        for step in range(1, settings.steps + 1):
            tokens = training_batch(
                settings.batch_size,
                min_seq_len=settings.min_seq_len,
                max_seq_len=settings.max_seq_len,
                generator=gen,
            )
            loss = loss_of(model, tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log_every and step % log_every == 0:
                print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    model.eval()
    return model


@contextlib.contextmanager
def _global_state_restored() -> Iterator[None]:
    # a seeded TransformerLens config reseeds torch, numpy and random globally
    py_state, np_state = random.getstate(), np.random.get_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


# Checkpoints ------------------------------------------------------------------------------------

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_toy_model(
    model: HookedTransformer,
    directory: str | os.PathLike[str],
    *,
    settings: TrainSettings,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``run.json`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"kind": "toy-induction"}))
    config = _config_kwargs(settings.seed)
    atomic_write_json(directory / CONFIG_NAME, config)
    write_run_manifest(
        directory,
        kind="toy-induction",
        config={"model": config, "train": dataclasses.asdict(settings)},
        seed=settings.seed,
        data={
            "train": {
                "generator": "interp.toy.training_batch",
                "description": "[BOS, x x, y y, ..., noise] of length 2*max_seq_len+1: "
                "repeated segments of random length packed, tokens uniform over 1..d_vocab-1, "
                "one layout per batch, a fresh batch every step",
                "rng": f"torch.Generator().manual_seed({settings.seed})",
                "bos": BOS,
                "d_vocab": D_VOCAB,
            }
        },
        extra=extra,
    )


def load_toy_induction(
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    directory: str | os.PathLike[str] = ASSET_DIR,
) -> HookedTransformer:
    """The shipped ``toy-induction`` checkpoint as an eval-mode HookedTransformer.

    ``device=None`` means CPU: the model is tiny, and CPU keeps results reproducible.
    ``dtype=None`` means float32, the dtype it was trained in. Reads safetensors, never pickle.
    """
    hooked, config = _hooked()
    directory = Path(directory)
    kwargs = read_json(directory / CONFIG_NAME)
    # a seeded config reseeds the global RNGs, a surprise for whoever calls load
    kwargs["seed"] = None
    cfg = config(
        **kwargs,
        device=str(device) if device is not None else "cpu",
        dtype=dtype or torch.float32,
        init_weights=False,
    )
    model = hooked(cfg)
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=True)
    model.eval()
    return model


# toy-induction-llama ----------------------------------------------------------------------------

LLAMA_ASSET_DIR = Path(__file__).resolve().parent / "assets" / "toy_induction_llama"
LLAMA_NAME = "toy-induction-llama"
LLAMA_STEPS = 1000
# the tokenizer's words: id 0 is BOS (also EOS and padding), ids 1..127 are t1..t127
BOS_WORD = "<s>"


def llama_config_kwargs() -> dict[str, Any]:
    """``LlamaConfig`` fields of ``toy-induction-llama``: the sizes of ``toy-induction`` on a
    Hugging Face Llama. 2 layers, hidden 64, 8 heads of head_dim 8 (no GQA), RMSNorm, rotary
    positions (in queries and keys only, like shortformer), vocab 128, 41 positions, untied
    embeddings. Attention only in effect: the MLP is one unit wide with all weights zero (and
    frozen in training), so each MLP adds exactly 0 to the residual stream."""
    return {
        "vocab_size": D_VOCAB,
        "hidden_size": 64,
        "intermediate_size": 1,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "head_dim": 8,
        "max_position_embeddings": N_CTX,
        "tie_word_embeddings": False,
        "bos_token_id": BOS,
        "eos_token_id": BOS,
        "pad_token_id": BOS,
        "attn_implementation": "eager",  # what the Bridge runs anyway
    }


def _zero_mlps(model: torch.nn.Module) -> None:
    """Zero and freeze every MLP weight of a Llama: silu(0) * 0 = 0, so the MLP outputs 0."""
    for name, param in model.named_parameters():
        if ".mlp." in name:
            with torch.no_grad():
                param.zero_()
            param.requires_grad_(False)


def _new_llama(seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)  # inside _fit's forked RNG: the caller's stream is left alone
    model = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs()))
    _zero_mlps(model)
    return model


def _llama_loss(model: Any, tokens: Tensor) -> Tensor:
    # the HF loss shifts labels itself: the mean next-token loss on every position, as above
    return model(input_ids=tokens, labels=tokens).loss


def train_induction_llama(settings: TrainSettings | None = None, *, log_every: int = 0) -> Any:
    """Train ``toy-induction-llama`` (a ``LlamaForCausalLM``) with the recipe of
    :func:`train_induction_model`: same data, optimiser and determinism (same seed and thread
    count give bit-identical weights). Init: HF's own, after ``torch.manual_seed(seed)``."""
    settings = settings or TrainSettings(steps=LLAMA_STEPS)
    return _fit(lambda: _new_llama(settings.seed), _llama_loss, settings, log_every)


def llama_tokenizer() -> Any:
    """A word-level tokenizer whose ids are the toy's: ``<s>`` = 0 (BOS, EOS and padding) and
    ``t1``..``t127`` = 1..127, split on whitespace. All 128 ids are taken, so an unknown word
    becomes ``<s>`` as well (the Bridge encodes a probe word when it boots)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {BOS_WORD: BOS, **{f"t{i}": i for i in range(1, D_VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=BOS_WORD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_WORD,
        eos_token=BOS_WORD,
        pad_token=BOS_WORD,
        unk_token=BOS_WORD,
    )


def save_toy_llama(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    settings: TrainSettings,
    extra: dict[str, Any] | None = None,
) -> None:
    """A Hugging Face folder (config, safetensors, tokenizer) plus ``run.json``."""
    directory = Path(directory)
    model.save_pretrained(directory)
    llama_tokenizer().save_pretrained(directory)
    _write_llama_manifest(directory, settings, extra)


def _write_llama_manifest(
    directory: Path, settings: TrainSettings, extra: dict[str, Any] | None
) -> None:
    write_run_manifest(
        directory,
        kind=LLAMA_NAME,
        config={"model": llama_config_kwargs(), "train": dataclasses.asdict(settings)},
        seed=settings.seed,
        data={"train": {"generator": "interp.toy.training_batch", "bos": BOS, "d_vocab": D_VOCAB}},
        extra=extra,
    )


def llama_parts(directory: str | os.PathLike[str] = LLAMA_ASSET_DIR) -> tuple[Any, Any]:
    """The shipped ``toy-induction-llama`` as (Hugging Face model in eval mode, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    hf_model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return hf_model, tokenizer


def llama_bridge(
    directory: str | os.PathLike[str] = LLAMA_ASSET_DIR,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """``toy-induction-llama`` as a TransformerBridge (TL 3 and 4), compatibility mode without
    weight processing, BOS never prepended (token 0 is BOS and the tokens carry it). Both
    backends: :func:`interp.models.load_toy_llama`."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model, tokenizer = llama_parts(directory)
    where, dtype = str(device) if device is not None else "cpu", dtype or torch.float32
    model = TransformerBridge.boot_transformers(
        LLAMA_NAME, hf_model=hf_model.to(device=where, dtype=dtype), tokenizer=tokenizer,
        device=where, dtype=dtype,
    )  # fmt: skip
    model.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    model.cfg.default_prepend_bos = False
    return model.eval()


# toy-induction-llama is loaded by interp.models.load_toy_llama (it owns both backends).
TOY_MODELS: dict[str, Callable[..., Any]] = {"toy-induction": load_toy_induction}


# CLI --------------------------------------------------------------------------------------------

EVAL_SEED = 12345


def _train_and_save(args: argparse.Namespace) -> None:
    llama = args.command == "train-llama"
    settings = TrainSettings(steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    if llama:
        model = train_induction_llama(settings, log_every=args.log_every)
    else:
        model = train_induction_model(**dataclasses.asdict(settings), log_every=args.log_every)
    seconds = time.perf_counter() - start
    extra: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if llama:  # evaluated as shipped: the written folder, loaded as a bridge
        save_toy_llama(model, args.out, settings=settings, extra=extra)
        model = llama_bridge(args.out)

    # evaluate on a seed training never used
    tokens = repeated_random_tokens(
        256, SEQ_LEN, generator=torch.Generator().manual_seed(EVAL_SEED)
    )
    scores = head_scores(model, tokens)
    loss = induction_loss(model, tokens)
    (il, ih), ind = scores.best_induction()
    (pl, ph), prev = scores.best_previous_token()
    print(f"trained {settings.steps} steps in {seconds:.1f}s on {torch.get_num_threads()} threads")
    for name, table in scores._asdict().items():
        for layer, row in enumerate(table.tolist()):
            print(f"{name} L{layer}: " + " ".join(f"{v:.3f}" for v in row))
    print(f"best induction head L{il}H{ih} = {ind:.3f}")
    print(f"best previous-token head L{pl}H{ph} = {prev:.3f}")
    print(f"loss first repeat {loss.first:.3f}, second {loss.second:.3f}, ratio {loss.ratio:.3f}")

    extra["eval"] = {
        "tokens": f"repeated_random_tokens(256, {SEQ_LEN}), seed {EVAL_SEED}",
        "previous_token": scores.previous_token.tolist(),
        "induction": scores.induction.tolist(),
        "loss_first": loss.first,
        "loss_second": loss.second,
    }
    if llama:
        _write_llama_manifest(Path(args.out), settings, extra)
    else:
        save_toy_model(model, args.out, settings=settings, extra=extra)
    print(f"wrote {args.out}")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interp.toy")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, what, steps, out in (
        ("train", "toy-induction", DEFAULT_STEPS, ASSET_DIR),
        ("train-llama", LLAMA_NAME, LLAMA_STEPS, LLAMA_ASSET_DIR),
    ):
        train = sub.add_parser(command, help=f"train {what} and write its checkpoint")
        train.add_argument("--steps", type=int, default=steps)
        train.add_argument("--seed", type=int, default=0)
        train.add_argument("--out", type=Path, default=out)
        train.add_argument("--log-every", type=int, default=250)
        train.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _train_and_save(args)
    finally:
        torch.set_num_threads(threads)  # _main is also called in-process by tests


if __name__ == "__main__":
    _main()
