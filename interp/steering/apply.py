"""Apply steering vectors through hooks: add α·v, ablate a direction, clamp a projection.

>>> with steer(model, [add(vec, 4.0), ablate(other, layer=6)]):
...     logits = model(tokens)
>>> text = generate(model, "I think that", [add(vec, 4.0, positions="generated")])

Positions say where an edit acts, as everywhere in mechscope (:mod:`interp.core.positions`):

- ``"all"``: every position;
- an int, a list of ints or a slice: absolute columns (−1 = the prompt's last column; a slice with
  no end runs on through the generated tokens);
- ``prompt()`` / ``generated()`` (or ``"prompt"`` / ``"generated"``): columns before / from
  ``prompt_len`` (in :func:`generate`, the prompt and the sampled tokens; in a plain forward every
  column is prompt unless ``prompt_len`` says otherwise);
- ``real(i)``, ``last_real()``: indices among each sequence's real prompt tokens (0 = first,
  −1 = last), found from ``attention_mask`` when the batch is padded; ``real(slice(1, None))`` is
  every token after the first, generated ones included (in SmolLM2 the first token is an
  attention sink with a ~100x larger norm, where an ablation or clamp would be a huge edit).

All hooks go through :func:`interp.hooks.hooks`, so they are removed on exit, exceptions included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.interventions import (
    Add,
    Clamp,
    Intervention,
    ProjectOut,
    compile_hooks,
    direction_edit,
)
from interp.core.positions import Positions, Real, Span, check_positions_spec, column_mask
from interp.hooks import TLModel, hooks
from interp.steering.vector import SteeringVector, check_layer, check_width, hook_name_for
from interp.validate import (
    check_context,
    check_int,
    check_token_ids,
    check_tokenizer,
)

__all__ = ["Edit", "Positions", "ablate", "add", "clamp", "generate", "steer"]

Op = Literal["add", "ablate", "clamp"]


@dataclass(frozen=True)
class Edit:
    """One change to one hook's activation; build with :func:`add`, :func:`ablate`, :func:`clamp`."""

    op: Op
    vector: Float[Tensor, " d_model"]
    layer: int
    site: str = "resid_pre"
    value: float = 0.0  # α for add, the target projection for clamp
    positions: Positions = "all"

    @property
    def hook_name(self) -> str:
        return hook_name_for(self.site, self.layer)


def _edit(
    op: Op,
    vec: SteeringVector | Tensor,
    value: float,
    layer: int | None,
    site: str | None,
    positions: Positions,
) -> Edit:
    if isinstance(vec, SteeringVector):
        layer = vec.layer if layer is None else layer
        site = site or vec.site
        vec = vec.vector
    if layer is None:
        raise ValueError(f"{op}: a raw tensor needs layer= (and optionally site=)")
    _check_positions(positions)
    return Edit(op, torch.as_tensor(vec), layer, site or "resid_pre", float(value), positions)


def add(
    vec: SteeringVector | Tensor,
    alpha: float = 1.0,
    *,
    layer: int | None = None,
    site: str | None = None,
    positions: Positions = "all",
) -> Edit:
    """Add ``alpha * vec`` (a vector's own layer and site unless given)."""
    return _edit("add", vec, alpha, layer, site, positions)


def ablate(
    vec: SteeringVector | Tensor,
    *,
    layer: int | None = None,
    site: str | None = None,
    positions: Positions = "all",
) -> Edit:
    """Project the direction out: x − (x·u) u, u the unit vector."""
    return _edit("ablate", vec, 0.0, layer, site, positions)


def clamp(
    vec: SteeringVector | Tensor,
    value: float,
    *,
    layer: int | None = None,
    site: str | None = None,
    positions: Positions = "all",
) -> Edit:
    """Set the projection on the unit direction to ``value``: x + (value − x·u) u."""
    return _edit("clamp", vec, value, layer, site, positions)


def _check_positions(positions: Positions) -> None:
    check_positions_spec(positions)


def edited(x: Float[Tensor, "... d_model"], edit: Edit) -> Float[Tensor, "... d_model"]:
    """The edit applied at every position of ``x`` (no position selection)."""
    return direction_edit(x, edit.op, edit.vector, edit.value)


@dataclass
class _Layout:
    """Where each sequence's real prompt tokens are, and the absolute column of the current call."""

    first: Int[Tensor, " batch"] | None  # column of the first real token
    length: Int[Tensor, " batch"] | None  # number of real prompt tokens
    prompt_len: int | None  # columns that are prompt; None = every column
    start: int = 0  # absolute column of activation[:, 0] in the current forward call

    def columns(self, positions: Positions, batch: int, n: int, device: Any) -> Tensor | None:
        """A bool mask [batch or 1, n] of where to edit, or None for everywhere."""
        if self.first is not None and len(self.first) != batch:
            raise ValueError(
                f"the attention mask given to steer() has {len(self.first)} rows but the forward pass "
                f"has batch {batch}"
            )
        cols = torch.arange(self.start, self.start + n, device=device)
        width = self.prompt_len if self.prompt_len is not None else self.start + n
        return column_mask(
            positions, batch=batch, width=width, cols=cols, prompt_len=self.prompt_len,
            first=self.first, length=self.length,
        )  # fmt: skip


def intervention(edit: Edit, layout: _Layout) -> Intervention:
    """The core intervention that carries out ``edit`` at the positions ``layout`` resolves."""

    def where(act: Tensor) -> Tensor | None:
        return layout.columns(edit.positions, act.shape[0], act.shape[1], act.device)

    if edit.op == "add":
        return Add(edit.hook_name, edit.vector, where, scale=edit.value)
    if edit.op == "ablate":
        return ProjectOut(edit.hook_name, edit.vector, where)
    return Clamp(edit.hook_name, edit.vector, where, value=edit.value)


def _validate(model: TLModel, edits: Edit | Sequence[Edit]) -> list[Edit]:
    items = [edits] if isinstance(edits, Edit) else list(edits)
    for e in items:
        if not isinstance(e, Edit):
            raise TypeError(f"steer() takes Edits (from add/ablate/clamp); got {type(e).__name__}")
        check_layer(model, e.layer)
        check_width(model, e.vector, e.hook_name)
        adapt(model).check_writable(e.hook_name)
        if e.op != "add" and e.vector.norm() == 0:
            raise ValueError(f"{e.op} at {e.hook_name}: the vector is zero, so it has no direction")
    return items


@contextlib.contextmanager
def steer(
    model: TLModel,
    edits: Edit | Sequence[Edit],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    prompt_len: int | None = None,
) -> Iterator[TLModel]:
    """Apply ``edits`` to every forward pass inside the ``with`` block (in the order given).

    ``attention_mask`` locates each sequence's real tokens for ``real(...)`` positions in a padded
    batch; ``prompt_len`` marks columns from there on as generated.
    """
    layout = _layout(attention_mask, prompt_len)
    checked = _validate(model, edits)
    if attention_mask is not None:  # index positions can be checked now, before any forward
        width = (
            prompt_len if prompt_len is not None else int(torch.as_tensor(attention_mask).shape[-1])
        )
        for e in checked:
            _check_index_range(e, width, int(layout.length.min()))  # type: ignore[union-attr]
    with _installed(model, checked, layout):
        yield model


def _check_index_range(e: Edit, width: int, shortest: int) -> None:
    """Int positions against the columns (absolute) or the shortest prompt (``real(...)``)."""
    index = e.positions.index if isinstance(e.positions, Real) else e.positions
    if isinstance(index, (str, slice, Span)):
        return
    n, what = (shortest, "the shortest prompt's real tokens") if isinstance(e.positions, Real) else (
        width, "the columns")  # fmt: skip
    ints = [index] if isinstance(index, int) else list(index)
    if bad := [i for i in ints if not -n <= i < n]:
        raise IndexError(
            f"{e.op} at {e.hook_name}: positions {bad} are out of range for {what} ({n}; "
            f"valid: {-n}..{n - 1})"
        )


def _layout(attention_mask: Tensor | None, prompt_len: int | None) -> _Layout:
    if prompt_len is not None:
        check_int(prompt_len, "prompt_len", minimum=0)
    if attention_mask is None:
        return _Layout(None, None, prompt_len)
    mask = torch.as_tensor(attention_mask)
    if mask.ndim != 2 or mask.shape[1] == 0:
        raise ValueError(
            f"attention_mask must be [batch, pos] with 1 at real tokens; got shape {tuple(mask.shape)}"
        )
    if prompt_len is not None:
        mask = mask[:, :prompt_len]
    return _Layout(mask.int().argmax(1).long(), mask.sum(1).long(), prompt_len)


@contextlib.contextmanager
def _installed(
    model: TLModel, edits: list[Edit], layout: _Layout, extra: Sequence[Any] = ()
) -> Iterator[None]:
    fwd = [*extra, *compile_hooks([intervention(e, layout) for e in edits])]
    with hooks(model, fwd=fwd):
        yield


def generate(
    model: TLModel,
    prompt: str | list[str] | Int[Tensor, "batch pos"] | Int[Tensor, " pos"],
    edits: Edit | Sequence[Edit],
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    **kwargs: Any,
) -> Any:
    """``model.generate`` with the edits applied to the prompt and to every sampled token.

    Works with and without the key-value cache: each forward call's absolute start column is
    tracked, so columns, ``prompt()``, ``generated()`` and ``real(...)`` mean the same in both
    modes. A list of prompts is left-padded (as TransformerLens does).
    """
    edits = _validate(model, edits)
    check_int(max_new_tokens, "max_new_tokens", minimum=0)
    if adapt(model).backend == "bridge":
        # A TransformerBridge's cached generation (TL 3.9 and 4.3) disagrees with its own full
        # forwards, steered or not (docs/steering.md): exact unless asked otherwise.
        kwargs.setdefault("use_past_kv_cache", False)
    if isinstance(prompt, Tensor):  # token ids [pos] or [batch, pos], taken as unpadded
        if prompt.ndim not in (1, 2):
            raise ValueError(f"token ids must be [pos] or [batch, pos]; got {tuple(prompt.shape)}")
        check_token_ids(prompt, int(model.cfg.d_vocab), "prompt")
        prompt = prompt if prompt.ndim == 2 else prompt[None]  # TL reads a 1-d tensor as embeds
        lengths = torch.full((prompt.shape[0],), prompt.shape[1])
    else:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        check_tokenizer(model, "generate() from text")
        opts = {k: kwargs[k] for k in ("prepend_bos",) if k in kwargs}
        lengths = torch.tensor([model.to_tokens(p, **opts).shape[1] for p in prompts])
    width = int(lengths.max())
    check_context(width + max_new_tokens, int(model.cfg.n_ctx), "the prompt plus max_new_tokens")
    layout = _Layout(width - lengths, lengths, width)
    seen = {"total": 0}

    def track(act: Tensor, hook: Any) -> None:
        # A call longer than what came before restarts at column 0 (no cache, or a new prompt);
        # a shorter one continues after it (key-value cache: one new token per call).
        n = act.shape[1]
        layout.start = 0 if n > seen["total"] else seen["total"]
        seen["total"] = layout.start + n

    with _installed(model, edits, layout, extra=[("blocks.0.hook_resid_pre", track)]):
        return model.generate(
            prompt, max_new_tokens=max_new_tokens, do_sample=do_sample, verbose=False, **kwargs
        )
