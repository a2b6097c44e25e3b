"""``SAE``: one sparse-autoencoder module whose activation is swapped by name (see ``activations``).

    pre  = (x·s − b_dec) W_enc + b_enc          [batch, d_sae]   (s: fixed input scale, 1 by default)
    acts = activation(pre)                       [batch, d_sae]
    x̂    = (acts W_dec + b_dec) / s              [batch, d_in]

Saved as ``cfg.json`` + ``sae.safetensors`` (+ ``run.json``). At save time the input scale is
folded into the weights, so a saved SAE reads and writes raw activations with s = 1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from interp._io import atomic_write_json, fsync_dir, read_json
from saes.activations import make_activation
from saes.config import SAEConfig, config_from_dict

__all__ = ["SAE", "SAEOutput", "SAELoadError", "geometric_median"]

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae.safetensors"
CHECKSUMS = "checksums.json"  # see saes.checksums
FORMAT = "mechscope-sae"

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class SAELoadError(RuntimeError):
    """A checkpoint that is missing, corrupted or not a mechscope SAE."""


class SAEOutput(NamedTuple):
    recon: Float[Tensor, "batch d_in"]
    acts: Float[Tensor, "batch d_sae"]
    pre: Float[Tensor, "batch d_sae"]


class SAE(nn.Module):
    input_scale: Tensor  # buffer: fixed input normalisation factor s (1 when off or folded)

    def __init__(self, cfg: SAEConfig, *, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        dtype = _DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Decoder rows: random unit directions; the encoder starts as the decoder's transpose.
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=torch.float32)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(dtype))  # [d_sae, d_in]
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous().to(dtype))  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.act = make_activation(cfg).to(dtype)
        self.register_buffer("input_scale", torch.tensor(1.0, dtype=torch.float32))

    @property
    def unit_norm_decoder(self) -> bool:
        # ReLU SAEs weight their L1 penalty by decoder norms instead of fixing them.
        return self.cfg.activation != "relu"

    # ---- the forward computation ---------------------------------------------------------------
    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        self._check_width(x)
        x = x.to(self.W_enc.dtype) * self.input_scale.to(self.W_enc.dtype)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        return self.act(self.pre_acts(x))

    def decode(self, acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        return (acts @ self.W_dec + self.b_dec) / self.input_scale.to(self.W_dec.dtype)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> SAEOutput:
        pre = self.pre_acts(x)
        acts = self.act(pre)
        return SAEOutput(self.decode(acts), acts, pre)

    def _check_width(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"the SAE reads vectors of width d_in={self.cfg.d_in}; got shape {tuple(x.shape)}"
            )

    # ---- constraints and initialisation --------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Project decoder rows back to unit norm (after an optimizer step)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the gradient component along each decoder row (it only changes the row's norm)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g -= (g * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def init_from_data_(
        self, x: Float[Tensor, "n d_in"], b_dec_init: str = "geometric_median"
    ) -> None:
        """Set the input scale (when normalising) and b_dec from a sample of the training data."""
        self._check_width(x)
        x = x.float()
        if self.cfg.normalize_activations == "expected_norm":
            self.input_scale.fill_(float(self.cfg.d_in**0.5 / x.norm(dim=-1).mean()))
        x = x * self.input_scale
        if b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(x))
        elif b_dec_init == "mean":
            self.b_dec.copy_(x.mean(0))
        else:
            self.b_dec.zero_()

    # ---- saving and loading --------------------------------------------------------------------
    def folded(self) -> SAE:
        """A copy with the input scale folded into the weights (s = 1): same function, raw inputs."""
        s = float(self.input_scale)
        cfg = dataclasses.replace(self.cfg, normalize_activations="none")
        out = SAE(cfg)
        with torch.no_grad():
            out.load_state_dict(self.state_dict())
            out.W_enc.mul_(s)
            out.W_dec.div_(s)
            out.b_dec.div_(s)
            out.input_scale.fill_(1.0)
        return out.train(self.training)

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        fold: bool = True,
        run_manifest: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``cfg.json`` and ``sae.safetensors`` (each atomically).

        ``fold=False`` keeps the input scale as a separate buffer: training checkpoints use it so a
        resumed run continues from exactly the same numbers.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sae = self.folded() if fold and float(self.input_scale) != 1.0 else self
        tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        atomic_write_json(directory / CFG_NAME, {"format": FORMAT, **dataclasses.asdict(sae.cfg)})
        os.replace(tmp, directory / WEIGHTS_NAME)
        fsync_dir(directory)
        if run_manifest is not None:
            atomic_write_json(directory / "run.json", run_manifest)
        if (directory / CHECKSUMS).exists():  # a checkpoint's record would be stale now
            from saes.checksums import write_checksums

            write_checksums(directory)
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> SAE:
        directory = Path(directory)
        cfg_path, w_path = directory / CFG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.exists() or not w_path.exists():
            raise SAELoadError(
                f"{directory} is not a saved mechscope SAE: it needs {CFG_NAME} and {WEIGHTS_NAME}"
            )
        try:
            raw = read_json(cfg_path)
        except ValueError as err:
            raise SAELoadError(f"{cfg_path} is not valid JSON: {err}") from err
        if raw.pop("format", None) != FORMAT:
            raise SAELoadError(
                f"{cfg_path} is not a mechscope SAE config (for SAELens SAEs use saes.interop)"
            )
        sae = cls(config_from_dict(SAEConfig, raw))
        if (directory / CHECKSUMS).exists():  # written by save() and by the trainer
            from saes.checksums import verify_checkpoint

            verify_checkpoint(directory)
        try:
            state = load_file(str(w_path))
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise SAELoadError(
                f"{w_path} cannot be read ({err}); the file is corrupted or incomplete"
            ) from err
        missing, unexpected = set(sae.state_dict()) - set(state), set(state) - set(sae.state_dict())
        if missing or unexpected:
            raise SAELoadError(
                f"{w_path} does not fit the config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        sae.load_state_dict(state)
        return sae.to(device) if device is not None else sae


@torch.no_grad()
def geometric_median(
    x: Float[Tensor, "n d"], iters: int = 100, tol: float = 1e-6
) -> Float[Tensor, " d"]:
    """The point minimising the sum of Euclidean distances to the rows of x (Weiszfeld's algorithm)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - y).norm(dim=-1).clamp_min(1e-8)
        y_next = (w[:, None] * x).sum(0) / w.sum()
        if (y_next - y).norm() <= tol * y.norm().clamp_min(1e-8):
            return y_next
        y = y_next
    return y
