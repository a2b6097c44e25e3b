"""A training run from a config dict (what the CLI and the demo use), and its evaluation.

A ``transcoder`` section (``{"layer": L}``, or ``{"hook_in": ..., "hook_out": ...}`` naming one
MLP's input and output) makes the run train a transcoder on paired rows of those two hooks, from
a store that holds both or streamed from the model; the rest is an SAE run's.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from interp._io import atomic_write_json, read_json
from saes.config import ConfigError, DataConfig, SAEConfig, TrainConfig, config_from_dict
from saes.sae import SAE, dictionary_from_config
from saes.trainer import Trainer, verify_checkpoint
from saes.transcoder import mlp_hooks, mlp_layer, mlp_metadata

__all__ = ["evaluate_run", "make_data", "train_run", "transcoder_hooks"]

log = logging.getLogger(__name__)

RUN_CONFIG = "config.json"


def transcoder_hooks(section: dict[str, Any] | None) -> tuple[str, str] | None:
    """The (input, output) hooks of a config's ``transcoder`` section (None: an SAE run),
    checked to be one MLP's."""
    if section is None:
        return None
    keys = set(section)
    if keys == {"layer"} and isinstance(section["layer"], int):
        return mlp_hooks(section["layer"])
    if keys == {"hook_in", "hook_out"}:
        mlp_layer(section["hook_in"], section["hook_out"])
        return str(section["hook_in"]), str(section["hook_out"])
    raise ConfigError(
        f"the transcoder section must be {{'layer': L}} or {{'hook_in': ..., 'hook_out': ...}} "
        f"(an MLP's input and output hooks); got {section}"
    )


def make_data(
    data: DataConfig, batch_size: int, seed: int, hooks: tuple[str, str] | None = None
) -> tuple[Callable[[int], Iterator[Any]], tuple[int, int], dict[str, Any]]:
    """The batch source (``skip -> iterator``), the widths it reads and writes, and its description
    for manifests. ``hooks``: a transcoder's (input, output) pair, served as ``(x, y)`` batches."""
    if hooks is not None and data.hook is not None and data.hook != hooks[0]:
        raise ConfigError(
            f"data.hook is {data.hook!r} but the transcoder reads {hooks[0]!r}: leave data.hook "
            "out (the transcoder section names both hooks)"
        )
    if data.store is not None:
        from interp.store import ActivationStore
        from saes.data import store_source

        store = ActivationStore(data.store)
        try:
            names = [store._hook(h) for h in hooks] if hooks else [store._hook(data.hook)]
        except (KeyError, ValueError) as err:  # a clean CLI error, with the store's hooks
            raise ConfigError(str(err.args[0])) from None
        info = {
            "store": str(Path(data.store).resolve()),
            "hook": names[0],
            "model": store.manifest["model"],
            "corpus": store.manifest["data"],
            "rows": len(store),
        }
        if hooks:
            info["hook_out"] = names[1]
        read = hooks if hooks else names[0]
        widths = (store.d(names[0]), store.d(names[-1]))
        return (
            functools.partial(store_source, store, batch_size, seed=seed, hook=read),
            widths,
            info,
        )

    from interp.cache import cache_activations
    from interp.corpus import shakespeare, token_sequences
    from interp.models import load_model
    from saes.data import model_source

    if data.model is None or (data.hook is None and hooks is None):
        raise ConfigError("streaming from a model needs data.model and data.hook")
    names = list(hooks) if hooks else [str(data.hook)]
    model = load_model(data.model)
    probe = cache_activations(model, "width probe", names)
    widths = (int(probe[names[0]].shape[-1]), int(probe[names[-1]].shape[-1]))
    max_contexts = None if data.max_tokens is None else -(-data.max_tokens // data.context_size)

    def stream(skip: int) -> Iterator[Any]:
        contexts = itertools.islice(
            token_sequences(shakespeare(), model.tokenizer, data.context_size), max_contexts
        )
        it = model_source(model, hooks or names[0], contexts, batch_size, seed=seed)
        for _ in range(skip):  # exact but not free: the skipped batches are recomputed
            next(it)
        return it

    info = {
        "model": data.model,
        "hook": names[0],
        "corpus": data.corpus,
        "context_size": data.context_size,
    }
    if hooks:
        from interp.models import model_fingerprint

        info |= {"hook_out": names[1], "fingerprint": model_fingerprint(model)}
        info["model_class"] = type(model).__name__
    return stream, widths, info


def train_run(cfg: dict[str, Any], *, resume: bool = False, progress: bool = True) -> Trainer:
    """Train (or resume) the run described by ``cfg`` (sections ``sae``, ``train``, ``data``, and ``run_dir``)."""
    run_dir = Path(cfg["run_dir"])
    train_cfg: TrainConfig = config_from_dict(TrainConfig, cfg.get("train", {}))
    hooks = transcoder_hooks(cfg.get("transcoder"))
    data_fields = dict(cfg.get("data", {}))
    if hooks is not None and data_fields.get("store") is None:
        data_fields.setdefault("hook", hooks[0])  # streaming reads the transcoder's input
    data_cfg: DataConfig = config_from_dict(DataConfig, data_fields)
    data, (width, width_out), info = make_data(
        data_cfg, train_cfg.batch_size, train_cfg.seed, hooks
    )
    if resume:
        trainer = Trainer.resume(run_dir, data, progress=progress, data_info=info)
        if trainer.sae.cfg.d_in != width:
            raise ConfigError(
                f"the data has width {width} but the checkpoint's SAE reads d_in={trainer.sae.cfg.d_in}"
            )
        if trainer.sae.cfg.is_transcoder != (hooks is not None):
            raise ConfigError(
                f"the checkpoint holds a {trainer.sae.kind} but the config "
                f"{'has' if hooks else 'has no'} transcoder section"
            )
    else:
        if (run_dir / "checkpoints").exists():
            raise ConfigError(
                f"{run_dir} already holds a run: pass --resume to continue it, or choose another run_dir"
            )
        sae_fields = {"d_in": width, **cfg.get("sae", {})}
        if hooks is not None:
            sae_fields.setdefault("d_out", width_out)
        sae_fields.setdefault("metadata", {}).update(_metadata(info, hooks))
        sae_cfg: SAEConfig = config_from_dict(SAEConfig, sae_fields)
        if sae_cfg.d_in != width:
            raise ConfigError(
                f"the data has width {width} but sae.d_in is {sae_cfg.d_in}: they must agree"
            )
        if hooks is not None and sae_cfg.d_out != width_out:
            raise ConfigError(
                f"{hooks[1]} has width {width_out} but sae.d_out is {sae_cfg.d_out}: they must agree"
            )
        if hooks is None and sae_cfg.is_transcoder:
            raise ConfigError(
                "sae.d_out is set but the config has no transcoder section: add "
                '"transcoder": {"layer": L} to train an MLP transcoder'
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / RUN_CONFIG, {**cfg, "run_dir": str(run_dir)})
        trainer = Trainer(
            train_cfg,
            dictionary_from_config(sae_cfg, seed=train_cfg.seed),
            data,
            run_dir=run_dir,
            progress=progress,
            data_info=info,
        )
    trainer.fit()
    return trainer


def _metadata(info: dict[str, Any], hooks: tuple[str, str] | None) -> dict[str, Any]:
    """What the dictionary records of its data: hook and store, the model's name (and, for a
    transcoder, its layer, output hook and the model's fingerprint, which loaders check)."""
    model = info.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    if hooks is not None:
        fingerprint = model.get("fingerprint") if isinstance(model, dict) else info["fingerprint"]
        meta = mlp_metadata(
            mlp_layer(*hooks), model=name, fingerprint=fingerprint,
            model_class=info.get("model_class"),
        )  # fmt: skip
        return meta | ({"store": info["store"]} if "store" in info else {})
    meta = {k: v for k, v in info.items() if k in ("hook", "store")}
    return meta | ({"model": name} if isinstance(model, dict) or name else {})


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
