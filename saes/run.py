"""A training run from a config dict (what the CLI and the demo use), and its evaluation."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from interp._io import atomic_write_json, read_json
from saes.config import ConfigError, DataConfig, SAEConfig, TrainConfig, config_from_dict
from saes.sae import SAE
from saes.trainer import Trainer, verify_checkpoint

__all__ = ["evaluate_run", "make_data", "train_run"]

log = logging.getLogger(__name__)

RUN_CONFIG = "config.json"


def make_data(
    data: DataConfig, batch_size: int, seed: int
) -> tuple[Callable[[int], Iterator[Tensor]], int, dict[str, Any]]:
    """The batch source (``skip -> iterator``), the data's width, and its description for manifests."""
    if data.store is not None:
        from interp.store import ActivationStore
        from saes.data import store_source

        store = ActivationStore(data.store)
        hook = store._hook(data.hook)
        info = {
            "store": str(Path(data.store).resolve()),
            "hook": hook,
            "model": store.manifest["model"],
            "corpus": store.manifest["data"],
            "rows": len(store),
        }
        return (
            functools.partial(store_source, store, batch_size, seed=seed, hook=hook),
            store.d(hook),
            info,
        )

    from interp.cache import cache_activations
    from interp.corpus import shakespeare, token_sequences
    from interp.models import load_model
    from saes.data import model_source

    if data.model is None or data.hook is None:
        raise ConfigError("streaming from a model needs data.model and data.hook")
    stream_hook: str = data.hook
    model = load_model(data.model)
    d_in = int(cache_activations(model, "width probe", stream_hook)[stream_hook].shape[-1])
    max_contexts = None if data.max_tokens is None else -(-data.max_tokens // data.context_size)

    def stream(skip: int) -> Iterator[Tensor]:
        contexts = itertools.islice(
            token_sequences(shakespeare(), model.tokenizer, data.context_size), max_contexts
        )
        it = model_source(model, stream_hook, contexts, batch_size, seed=seed)
        for _ in range(skip):  # exact but not free: the skipped batches are recomputed
            next(it)
        return it

    info = {
        "model": data.model,
        "hook": data.hook,
        "corpus": data.corpus,
        "context_size": data.context_size,
    }
    return stream, d_in, info


def train_run(cfg: dict[str, Any], *, resume: bool = False, progress: bool = True) -> Trainer:
    """Train (or resume) the run described by ``cfg`` (sections ``sae``, ``train``, ``data``, and ``run_dir``)."""
    run_dir = Path(cfg["run_dir"])
    train_cfg: TrainConfig = config_from_dict(TrainConfig, cfg.get("train", {}))
    data_cfg: DataConfig = config_from_dict(DataConfig, cfg.get("data", {}))
    data, width, info = make_data(data_cfg, train_cfg.batch_size, train_cfg.seed)
    if resume:
        trainer = Trainer.resume(run_dir, data, progress=progress, data_info=info)
        if trainer.sae.cfg.d_in != width:
            raise ConfigError(
                f"the data has width {width} but the checkpoint's SAE reads d_in={trainer.sae.cfg.d_in}"
            )
    else:
        if (run_dir / "checkpoints").exists():
            raise ConfigError(
                f"{run_dir} already holds a run: pass --resume to continue it, or choose another run_dir"
            )
        sae_fields = {"d_in": width, **cfg.get("sae", {})}
        sae_fields.setdefault("metadata", {}).update(
            {k: v for k, v in info.items() if k in ("hook", "store")}
        )
        if isinstance(info.get("model"), dict):
            sae_fields["metadata"]["model"] = info["model"].get("name")
        elif info.get("model"):
            sae_fields["metadata"]["model"] = info["model"]
        sae_cfg: SAEConfig = config_from_dict(SAEConfig, sae_fields)
        if sae_cfg.d_in != width:
            raise ConfigError(
                f"the data has width {width} but sae.d_in is {sae_cfg.d_in}: they must agree"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / RUN_CONFIG, {**cfg, "run_dir": str(run_dir)})
        trainer = Trainer(
            train_cfg,
            SAE(sae_cfg, seed=train_cfg.seed),
            data,
            run_dir=run_dir,
            progress=progress,
            data_info=info,
        )
    trainer.fit()
    return trainer


def evaluate_run(
    run_dir: str | Path,
    *,
    n_batches: int = 8,
    batch_size: int = 4096,
    n_ce_contexts: int = 32,
    store_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir/final`` on its training store, or on ``store_path`` (held-out data, same
    model and hook), with CE loss recovered on the store's model; writes eval.json (or
    eval_<store name>.json for another store). ``in_sample`` in the result says whether the store
    is the one the SAE was trained on (its numbers then flatter the SAE)."""
    from interp.recipe import recipe
    from interp.store import ActivationStore
    from saes.evals import evaluate

    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).exists():
        raise ConfigError(f"{run_dir} is not a training run: it has no {RUN_CONFIG}")
    cfg = read_json(run_dir / RUN_CONFIG)
    final = run_dir / "final"
    if (final / "sae.safetensors").exists():
        verify_checkpoint(
            final,
            remedy=f"Delete {final} and run `python -m saes train --config {run_dir / RUN_CONFIG} "
            "--resume`: it rewrites final/ from the last checkpoint.",
        )
    sae = SAE.load(final)
    data = DataConfig(**cfg.get("data", {}))
    if store_path is None and data.store is None:
        raise ConfigError(
            "this run streamed from a model: name a store to evaluate on with --store"
        )
    store = ActivationStore(store_path if store_path is not None else str(data.store))
    trained_on = None if data.store is None else Path(data.store).resolve()
    in_sample = store.path.resolve() == trained_on
    model = None
    if n_ce_contexts:
        from interp.models import load_model

        model = load_model(store.manifest["model"]["name"] or "")
    args: dict[str, Any] = {
        "n_batches": n_batches,
        "batch_size": batch_size,
        "n_ce_contexts": n_ce_contexts,
    }
    report = evaluate(sae, store, model, **args)
    result: dict[str, Any] = report.to_dict()
    result["store"] = str(store.path)
    result["in_sample"] = in_sample
    # How to make these numbers again: python -m interp replay RUN_DIR/eval.json
    result["replay"] = recipe(evaluate, (sae, store, model), args)
    result["replay"]["then"] = [{"op": "to_dict", "kwargs": {}}]
    result["replay"]["load"] = "interp._io:read_json"
    name = "eval.json" if store_path is None else f"eval_{Path(store_path).name}.json"
    atomic_write_json(run_dir / name, result)
    return result
