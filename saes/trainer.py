"""``Trainer``: the SAE training loop. It needs only an iterator of activation batches: tensors x
(an SAE reconstructs them) or pairs (x, y) (a transcoder predicts y from x).

Run directory::

    train_config.json   the TrainConfig
    metrics.jsonl       one JSON line every ``log_every`` steps
    checkpoints/step_000100/  cfg.json, sae.safetensors (unfolded), optimizer.pt, state.json,
                              last_fired.safetensors, checksums.json (sha256 of each other file;
                              written to a temp dir, then renamed)
    checkpoints/latest        the name of the newest complete checkpoint (replaced atomically)
    final/                    the trained SAE, input scale folded, with run.json and checksums.json

Resuming verifies the checkpoint's checksums and cuts ``metrics.jsonl`` back to the checkpoint's
step, so a killed run's log holds every step once.

On CPU with a fixed seed, a run resumed from a checkpoint ends with the same weights, bit for bit,
as one that never stopped. Under ``torch.distributed`` each process takes its slice of every global
batch and gradients are averaged, so the result matches one process up to float rounding.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, fsync_dir, read_json
from interp.manifest import run_manifest
from saes.activations import Activation, architecture
from saes.checksums import CorruptCheckpointError, verify_checkpoint, write_checksums
from saes.config import TrainConfig
from saes.losses import StepStats, step_loss
from saes.sae import SAE

__all__ = [
    "CorruptCheckpointError",
    "DataExhaustedError",
    "NonFiniteLossError",
    "Trainer",
    "verify_checkpoint",
    "write_checksums",
]

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class DataExhaustedError(RuntimeError):
    """The data source ended before ``total_steps``."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class Trainer:
    """Train ``sae`` (an SAE or a transcoder) on batches from ``data``.

    ``data`` is an iterator of ``[batch_size, d_in]`` tensors, or of pairs ``(x, y)`` with ``y``
    the target ``[batch_size, d_out]`` (what a transcoder predicts; an SAE's target defaults to
    x), or a callable ``skip -> iterator``
    that can start after ``skip`` batches (what a resumed run needs; :func:`saes.data.store_source`
    fits with ``functools.partial``). A plain iterator is fast-forwarded on resume instead.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        sae: SAE,
        data: Iterator[Tensor] | Callable[[int], Iterator[Tensor]],
        *,
        run_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        data_info: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.sae = sae.to(self.device)
        self.data = data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.data_info = data_info or {}
        self.rank, self.world = (
            (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        )
        if cfg.batch_size % self.world:
            raise ValueError(
                f"batch_size {cfg.batch_size} must divide evenly over {self.world} processes"
            )
        # Fused Adam: one kernel for all parameters (0.23 -> 0.08 ms a step at d_sae 512 on one
        # CPU thread); the same update up to float rounding.
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=cfg.lr, betas=cfg.betas, fused=fused or None
        )
        self.step = 0
        self.tokens_seen = 0
        self.last_fired = torch.zeros(
            sae.cfg.d_sae, dtype=torch.long, device=self.device
        )  # tokens_seen at last firing
        self.k_aux = sae.cfg.d_in // 2 if cfg.aux_k is None else cfg.aux_k
        self._initialised = False
        if cfg.sparse_path == "on" and sae.sparse_kernel is None:
            raise ValueError(
                f"sparse_path='on' needs a topk SAE; this one is a {sae.cfg.activation!r} {sae.kind}"
            )
        self.sparse = sae.sparse_kernel is not None and cfg.sparse_path != "off"
        self.path_reason = self._path_reason()
        log.info("SAE step: %s", self.path_reason)

    def _path_reason(self) -> str:
        if not self.sparse:
            what = f"{self.sae.cfg.activation} {'SAE' if self.sae.kind == 'sae' else self.sae.kind}"
            return f"dense PyTorch path ({what}, sparse_path={self.cfg.sparse_path})"
        from kernels.dispatch import backend_choice

        backend, why = backend_choice(self.device)
        return f"sparse path through kernels, backend {backend}: {why}"

    # ---- schedules -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.cfg
        if c.lr_warmup_steps and step < c.lr_warmup_steps:
            return c.lr * (step + 1) / c.lr_warmup_steps
        decay_start = c.total_steps - c.lr_decay_steps
        if c.lr_decay_steps and step >= decay_start:
            return c.lr * (c.total_steps - step) / c.lr_decay_steps
        return c.lr

    def sparsity_at(self, step: int) -> float:
        c = self.cfg
        if c.sparsity_warmup_steps and step < c.sparsity_warmup_steps:
            return c.sparsity_coefficient * (step + 1) / c.sparsity_warmup_steps
        return c.sparsity_coefficient

    def dead_mask(self) -> Tensor:
        return (self.tokens_seen - self.last_fired) >= self.cfg.dead_after_tokens

    # ---- the loop ------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        if callable(self.data) and not isinstance(self.data, Iterator):
            return self.data(self.step)
        it = iter(self.data)
        for _ in range(self.step):  # fast-forward a plain iterator on resume
            next(it)
        return it

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """A batch as (x, y): y is None for a plain tensor."""
        if isinstance(batch, Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            x, y = batch
        else:
            raise TypeError(
                f"a batch must be a tensor x or a pair (x, y); got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            )
        if y is None and self.sae.cfg.is_transcoder:
            raise ValueError(
                "a transcoder trains on pairs (x, y): the data gave tensors only; yield "
                f"(input [batch, {self.sae.cfg.d_in}], target [batch, {self.sae.d_out}])"
            )
        return x, y

    def _local(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        x, y = self._split(batch)
        if x.shape[0] != self.cfg.batch_size:
            raise ValueError(
                f"the data gave a batch of {x.shape[0]} rows; batch_size is {self.cfg.batch_size}"
            )
        if x.shape[-1] != self.sae.cfg.d_in:
            raise ValueError(
                f"the data has width {x.shape[-1]} but the SAE reads d_in={self.sae.cfg.d_in}: "
                "train on the hook the SAE was configured for"
            )
        if y is not None and (y.shape[0] != x.shape[0] or y.shape[-1] != self.sae.d_out):
            raise ValueError(
                f"the target batch has shape {tuple(y.shape)}; it needs {x.shape[0]} rows of "
                f"width d_out={self.sae.d_out} (the output site the dictionary predicts)"
            )
        per = self.cfg.batch_size // self.world
        rows = slice(self.rank * per, (self.rank + 1) * per)
        x_local = x[rows].to(self.device, non_blocking=True)
        return x_local, None if y is None else y[rows].to(self.device, non_blocking=True)

    def fit(self) -> SAE:
        """Train to ``total_steps`` (from the current step) and return the SAE."""
        batches = self._batches()
        if self.step == 0 and not self._initialised:
            sample = [next(batches) for _ in range(self.cfg.init_batches)]
            pairs = [self._split(b) for b in sample]
            xs = torch.cat([x for x, _ in pairs])[:16384].to(self.device)
            ys = None
            if all(y is not None for _, y in pairs):
                ys = torch.cat([y for _, y in pairs])[:16384].to(self.device)  # type: ignore[misc]
            self.sae.init_from_data_(xs, self.cfg.b_dec_init, y=ys)
            self._initialised = True
            batches = itertools.chain(
                sample, batches
            )  # the sample is trained on too: step n reads batch n
        if self.run_dir is not None and self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "train_config.json", dataclasses.asdict(self.cfg))
        bar = self._progress_bar()
        window_start, window_tokens = time.perf_counter(), 0
        recent: collections.deque[Tensor] = collections.deque(maxlen=self._calibration_batches())
        while self.step < self.cfg.total_steps:
            x = next(batches, None)
            if x is None:
                raise DataExhaustedError(
                    f"the data ran out after {self.step} steps of {self.cfg.batch_size} vectors; "
                    f"total_steps={self.cfg.total_steps} needs {self.cfg.total_steps * self.cfg.batch_size:,}. "
                    "Use a larger store or corpus, fewer steps, or a repeating source (store batches repeat). "
                    + ("Checkpoints so far are kept." if self.run_dir else "")
                )
            log_now = (
                self.step + 1
            ) % self.cfg.log_every == 0 or self.step + 1 == self.cfg.total_steps
            # Metrics read values off the device: only on logging steps (others sync once, for the
            # finiteness check).
            x_local, y_local = self._local(x)
            if recent.maxlen:
                recent.append(x_local)
            metrics = self.train_step(x_local, y=y_local, with_metrics=log_now)
            window_tokens += self.cfg.batch_size
            if bar is not None:
                bar.update(1)
                if log_now:
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.4g}",
                        l0=f"{metrics['l0']:.1f}",
                        ev=f"{metrics['explained_variance']:.3f}",
                    )
            if log_now:
                metrics["tokens_per_s"] = window_tokens / max(
                    time.perf_counter() - window_start, 1e-9
                )
                self._log(metrics)
                window_start, window_tokens = time.perf_counter(), 0
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if recent:
            self.calibrate(torch.cat(list(recent)))
        if self.run_dir is not None and self.rank == 0:
            self.save_checkpoint()
            final = self.sae.save(self.run_dir / "final", run_manifest=self._manifest())
            write_checksums(final)
        return self.sae

    def _calibration_batches(self) -> int:
        arch = architecture(self.sae.act)
        overridden = type(arch).calibrate_ is not Activation.calibrate_
        return self.cfg.calibration_batches if overridden else 0

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> None:
        """Set the architecture's inference state (BatchTopK's threshold) from the current
        weights on the rows ``x`` (the trainer passes its last ``calibration_batches``)."""
        architecture(self.sae.act).calibrate_(self.sae.pre_acts(x))

    def train_step(
        self, x: Tensor, *, y: Tensor | None = None, with_metrics: bool = True
    ) -> dict[str, float]:
        """One optimizer step on this process's rows (target ``y``: x for an SAE when omitted);
        returns the step's metrics (or {})."""
        sae, cfg = self.sae, self.cfg
        sae.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        use_amp = cfg.mixed_precision and self.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss, stats = step_loss(
                sae,
                x,
                y,
                sparse=self.sparse,
                sparsity_coefficient=self.sparsity_at(self.step),
                dead=self.dead_mask(),
                k_aux=self.k_aux,
                aux_coefficient=cfg.aux_coefficient,
                with_l0=with_metrics,
            )
        if not torch.isfinite(loss.total):
            raise NonFiniteLossError(
                f"the loss became {loss.total.item()} at step {self.step} (batch {self.step} of the data stream; "
                f"mse {loss.mse.item()}, sparsity {loss.sparsity.item()}, aux {loss.aux.item()}). Training stopped; "
                f"the last good checkpoint is kept"
                + (f" under {self.run_dir / 'checkpoints'}" if self.run_dir else "")
                + ". Lower lr, clip gradients, or check the data for infinities."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if self.world > 1:
            for p in sae.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        sae.remove_parallel_grad_()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip_norm)
        self.optimizer.step()
        sae.normalize_decoder_()
        self._track_firing(stats.fired)
        self.step += 1
        return self._step_metrics(x if y is None else y, loss, stats) if with_metrics else {}

    def _track_firing(self, fired: Tensor) -> None:
        if self.world > 1:
            fired_i = fired.to(torch.int32)
            dist.all_reduce(fired_i, op=dist.ReduceOp.MAX)
            fired = fired_i.bool()
        self.tokens_seen += self.cfg.batch_size
        self.last_fired[fired] = self.tokens_seen

    @torch.no_grad()
    def _step_metrics(self, x: Tensor, loss: Any, stats: StepStats) -> dict[str, float]:
        xf, rf = x.float(), stats.recon.float()
        resid = (xf - rf).pow(2).sum()
        total = (xf - xf.mean(0)).pow(2).sum().clamp_min(1e-12)
        return {
            "step": self.step,
            "tokens": self.tokens_seen,
            "lr": self.lr_at(self.step - 1),
            "loss": loss.total.item(),
            "mse": loss.mse.item(),
            "sparsity_loss": loss.sparsity.item(),
            "aux_loss": loss.aux.item(),
            "extra_loss": 0.0 if loss.extra is None else loss.extra.item(),
            "l0": float("nan") if stats.l0 is None else stats.l0.item(),
            "explained_variance": 1 - (resid / total).item(),
            "dead_fraction": self.dead_mask().float().mean().item(),
        }

    # ---- logging -------------------------------------------------------------------------------
    def _progress_bar(self) -> Any:
        if not self.progress or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.cfg.total_steps, initial=self.step, desc="SAE", dynamic_ncols=True)

    def _log(self, metrics: dict[str, float]) -> None:
        if self.rank != 0:
            return
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / METRICS, "a") as f:
                f.write(json.dumps(metrics) + "\n")
        if self.cfg.wandb_project:
            self._wandb().log(metrics, step=int(metrics["step"]))

    def _wandb(self) -> Any:
        if not hasattr(self, "_wandb_run"):
            import wandb

            self._wandb_run = wandb.init(
                project=self.cfg.wandb_project, config=dataclasses.asdict(self.cfg)
            )
        return self._wandb_run

    def _manifest(self) -> dict[str, Any]:
        return run_manifest(
            kind=self.sae.kind,  # "sae" or "transcoder"
            seed=self.cfg.seed,
            config={"sae": dataclasses.asdict(self.sae.cfg), "train": dataclasses.asdict(self.cfg)},
            data=self.data_info,
            extra={"steps": self.step, "tokens": self.tokens_seen, "world_size": self.world},
        )

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None or self.rank != 0:
            return None
        root = self.run_dir / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        name = f"step_{self.step:07d}"
        final = root / name
        if final.exists():
            return final
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.sae.save(tmp, fold=False)
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"last_fired": self.last_fired.cpu()}, str(tmp / "last_fired.safetensors"))
        atomic_write_json(
            tmp / "state.json",
            {
                "step": self.step,
                "tokens_seen": self.tokens_seen,
                "train_config": dataclasses.asdict(self.cfg),
            },
        )
        write_checksums(tmp)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(root)
        atomic_write_bytes(root / "latest", name.encode())
        for old in sorted(p for p in root.glob("step_*") if p.name != name)[:-1]:
            shutil.rmtree(old, ignore_errors=True)  # keep the newest two
        return final

    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike[str],
        data: Any,
        *,
        device: str | torch.device | None = None,
        progress: bool = True,
        data_info: dict[str, Any] | None = None,
    ) -> Trainer:
        """A trainer restored from ``run_dir``'s latest checkpoint, ready to ``fit()`` to the end."""
        ckpt = _latest_checkpoint(Path(run_dir) / "checkpoints")
        verify_checkpoint(ckpt, remedy=_remedy(ckpt))
        state = read_json(ckpt / "state.json")
        cfg = TrainConfig(
            **{**state["train_config"], "betas": tuple(state["train_config"]["betas"])}
        )
        trainer = cls(
            cfg,
            SAE.load(ckpt),
            data,
            run_dir=run_dir,
            device=device,
            progress=progress,
            data_info=data_info,
        )
        trainer.optimizer.load_state_dict(
            torch.load(ckpt / "optimizer.pt", weights_only=True, map_location=trainer.device)
        )
        trainer.last_fired = load_file(str(ckpt / "last_fired.safetensors"))["last_fired"].to(
            trainer.device
        )
        trainer.step, trainer.tokens_seen = state["step"], state["tokens_seen"]
        trainer._initialised = True
        if trainer.rank == 0:
            _cut_log(Path(run_dir) / METRICS, trainer.step)
        return trainer


def _checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step_*") if p.is_dir())


def _latest_checkpoint(root: Path) -> Path:
    """The checkpoint ``latest`` names, or the newest left when that one was deleted."""
    latest = root / "latest"
    if latest.exists():
        named = root / latest.read_text().strip()
        if named.is_dir():
            return named
    left = _checkpoints(root)
    if not left:
        raise FileNotFoundError(
            f"{root.parent} has no checkpoint to resume from (nothing under {root}): "
            "train it from scratch (delete the run directory or choose another run_dir)"
        )
    warnings.warn(
        f"{latest} does not name a checkpoint that exists; resuming from {left[-1].name}, "
        "the newest one left",
        stacklevel=3,
    )
    return left[-1]


def _remedy(ckpt: Path) -> str:
    earlier = [p for p in _checkpoints(ckpt.parent) if p.name < ckpt.name]
    if earlier:
        return (
            f"Delete {ckpt} and run again with --resume (Trainer.resume): it continues from "
            f"{earlier[-1].name}, the earlier checkpoint."
        )
    return f"No earlier checkpoint is left: delete {ckpt.parent.parent} and train from scratch."


def _cut_log(path: Path, step: int) -> None:
    """Drop the lines logged after ``step`` (and a line torn by a kill), atomically: a resumed run
    logs those steps again."""
    if not path.exists():
        return
    raw = path.read_bytes()
    kept = []
    for line in raw.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if line.endswith(b"\n") and isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(line)
    new = b"".join(kept)
    if new != raw:
        atomic_write_bytes(path, new)
