"""Hook names and scoped hooks: the one route by which mechscope reads and writes activations.

Hook names are TransformerLens's (``blocks.3.hook_resid_post``, ``blocks.0.attn.hook_z``, ...).
A *hook spec* may be:

- an exact name: ``"blocks.3.hook_resid_post"``;
- a TL short form ``(site, layer)``: ``("resid_post", 3)``, ``("z", 0)``, ``("pattern", 1)``;
- a glob over names: ``"blocks.*.hook_resid_post"``, ``"blocks.1.attn.hook_*"``;
- a compiled regular expression (matched in full);
- a predicate ``name -> bool``;
- a list of any of these.

Every name is checked against the model; an unknown name raises :class:`UnknownHookError` with the
closest valid names. :func:`hooks` installs hooks for the duration of a ``with`` block and removes
exactly the ones it added on exit, exceptions included, leaving any other hooks in place.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from transformer_lens.utilities import get_act_name

__all__ = [
    "HookFn",
    "HookSpec",
    "TLModel",
    "UnknownHookError",
    "hook_layer",
    "hook_names",
    "hooks",
    "resolve_hooks",
]

# A HookedTransformer or a TransformerBridge. Typed loosely: both expose cfg, hook_dict and
# forward, but share no base class that declares them.
TLModel = Any
HookFn = Callable[..., Any]
HookSpec = str | tuple[str, int] | re.Pattern[str] | Callable[[str], bool] | Sequence[Any]

_GLOB_CHARS = set("*?[")
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


class UnknownHookError(ValueError):
    """A hook name or pattern that matches nothing in the model."""


def hook_names(model: TLModel) -> list[str]:
    """All hook names of a TransformerLens model (``HookedTransformer`` or ``TransformerBridge``)."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        raise TypeError(
            f"{type(model).__name__} has no hook_dict: mechscope works on TransformerLens models "
            "(HookedTransformer or TransformerBridge); load one with interp.models.load_model"
        )
    return list(hook_dict)


def hook_layer(name: str) -> int | None:
    """The block index a hook name belongs to, or None for hooks outside the blocks (embed, ln_final)."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def _split_site(name: str) -> tuple[int | None, str]:
    """``blocks.3.attn.hook_z`` -> (3, ``attn.hook_z``); names outside the blocks keep their name."""
    m = _LAYER_RE.match(name)
    return (int(m.group(1)), name[m.end() :]) if m else (None, name)


# TransformerLens 3 hook names and their TransformerLens 4 (TransformerBridge) canonical names,
# per block (the bridge's own alias table; the same on TL 3.9 and 4.3 bridges).
_TL3_TO_TL4 = {
    "hook_resid_pre": "hook_in",
    "hook_resid_post": "hook_out",
    "hook_resid_mid": "ln2.hook_in",
    "hook_attn_out": "attn.hook_out",
    "hook_mlp_out": "mlp.hook_out",
    "attn.hook_q": "attn.q.hook_out",
    "attn.hook_k": "attn.k.hook_out",
    "attn.hook_v": "attn.v.hook_out",
    "attn.hook_z": "attn.o.hook_in",
    "mlp.hook_post": "mlp.out.hook_in",
}
_TL4_TO_TL3 = {v: k for k, v in _TL3_TO_TL4.items()}


def _other_naming(target: str, names: set[str]) -> str | None:
    """The same hook under the other TransformerLens naming, if this model has it."""
    layer, site = _split_site(target)
    for table in (_TL3_TO_TL4, _TL4_TO_TL3):
        if site in table:
            other = table[site] if layer is None else f"blocks.{layer}.{table[site]}"
            if other in names:
                return other
    return None


def _suggest(target: str, names: Sequence[str], n: int = 5) -> str:
    """Close valid names, the misspelt *site* first: the best-matching site at the requested layer,
    then other close sites there, then the best site at other layers. A layer outside the model and
    a per-block site given without a layer are said so."""
    layer, site = _split_site(target)
    by_site: dict[str, list[int | None]] = {}
    for name in names:
        lay, s = _split_site(name)
        by_site.setdefault(s, []).append(lay)
    sites = list(by_site)
    close = difflib.get_close_matches(site, sites, n=3, cutoff=0.6)
    if not close:  # short forms ("resid_post", "resid_pree") are far from "hook_resid_post"
        tail = site.rsplit(".", 1)[-1]
        close = difflib.get_close_matches("hook_" + tail, sites, n=3, cutoff=0.6)
        close = close or [s for s in sites if s.endswith(tail)][:3]
    layers = sorted({lay for lay in (_split_site(x)[0] for x in names) if lay is not None})
    note = ""
    if layer is not None and layers and layer not in layers:
        note = f" This model has blocks {layers[0]}–{layers[-1]}; there is no block {layer}."
    picks: list[str] = []

    def full(s: str, lay: int | None) -> str:
        return s if lay is None else f"blocks.{lay}.{s}"

    for s in close:  # each close site at the requested layer (or its nearest one)
        lays = by_site[s]
        want = layer if layer is not None else lays[0]
        best = min(lays, key=lambda x: abs((x or 0) - (want or 0)))
        picks.append(full(s, best))
    if close:  # then the best site at the neighbouring layers
        lays = by_site[close[0]]
        want = layer if layer is not None else (lays[0] or 0)
        picks += [full(close[0], x) for x in sorted(lays, key=lambda x: abs((x or 0) - want))]
    picks = list(dict.fromkeys(picks))[:n]
    if close and layer is None and by_site[close[0]][0] is not None and "*" not in target:
        note += (
            f" {close[0]!r} is a per-block site: name a block, e.g. 'blocks.{by_site[close[0]][0]}."
            f"{close[0]}', or use ({close[0].rsplit('hook_', 1)[-1]!r}, layer)."
        )
    return (f" Did you mean: {', '.join(picks)}?" if picks else "") + note


def _resolve_one(spec: Any, names: list[str], name_set: set[str]) -> list[str]:
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], str)
        and isinstance(spec[1], int)
    ):
        return _resolve_one(get_act_name(spec[0], spec[1]), names, name_set)
    if isinstance(spec, re.Pattern):
        found = [x for x in names if spec.fullmatch(x)]
        if not found:
            raise UnknownHookError(
                f"the pattern {spec.pattern!r} matches no hook name of this model."
            )
        return found
    if isinstance(spec, str):
        if spec in name_set:
            return [spec]
        if _GLOB_CHARS & set(spec):
            found = [x for x in names if fnmatch.fnmatchcase(x, spec)]
            if not found:
                raise UnknownHookError(
                    f"the glob {spec!r} matches no hook name of this model.{_suggest(spec, names)}"
                )
            return found
        other = _other_naming(spec, name_set)
        if other is not None:
            raise UnknownHookError(
                f"unknown hook name {spec!r}: this model names that hook {other!r} (TransformerLens "
                "3 and 4 name hooks differently; a TransformerBridge answers to both)"
            )
        raise UnknownHookError(
            f"unknown hook name {spec!r}.{_suggest(spec, names)} "
            "(list them with interp.hooks.hook_names(model); globs such as 'blocks.*.hook_resid_post' work too)"
        )
    if callable(spec):
        found = [x for x in names if spec(x)]
        if not found:
            raise UnknownHookError(f"the filter {spec!r} accepts no hook name of this model.")
        return found
    raise TypeError(
        f"a hook spec must be a name, a glob, a (site, layer) tuple, a regex, a predicate or a list of those; "
        f"got {type(spec).__name__}"
    )


def resolve_hooks(model: TLModel, spec: HookSpec) -> list[str]:
    """Expand a hook spec into the model's hook names, in model order, without duplicates."""
    names = hook_names(model)
    name_set = set(names)
    specs: Sequence[Any]
    if isinstance(spec, (list, set, frozenset)) or (
        isinstance(spec, tuple) and not _is_short_form(spec)
    ):
        specs = list(spec)
    else:
        specs = [spec]
    if not specs:
        raise UnknownHookError("no hook names were given")
    wanted: set[str] = set()
    for s in specs:
        wanted.update(_resolve_one(s, names, name_set))
    return [x for x in names if x in wanted]


def _is_short_form(spec: tuple[Any, ...]) -> bool:
    return len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], int)


class _Named:
    """A hook point seen under the name it was asked for.

    A bridge's hook point answers to several names (a TL 3 alias and its TL 4 canonical name are
    one object) and carries just one of them; hook functions key activations by ``hook.name``, so
    each installed function sees the name its caller used.
    """

    __slots__ = ("_hook", "name")

    def __init__(self, hook: Any, name: str):
        self._hook, self.name = hook, name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._hook, attr)


def _as_named(fn: HookFn, name: str) -> HookFn:
    def named(act: Any, hook: Any) -> Any:
        return fn(act, hook if getattr(hook, "name", name) == name else _Named(hook, name))

    return named


@contextlib.contextmanager
def hooks(
    model: TLModel,
    fwd: Sequence[tuple[HookSpec, HookFn]] = (),
    bwd: Sequence[tuple[HookSpec, HookFn]] = (),
) -> Iterator[TLModel]:
    """Install forward and backward hooks for the duration of a ``with`` block.

    Each hook function has TransformerLens's signature ``fn(activation, hook) -> activation | None``;
    ``hook.name`` is the name the spec resolved to, whichever alias the hook point carries.
    All specs are resolved before anything is installed, so a bad name installs nothing. On exit,
    normal or not, exactly the hooks added here are removed.

    >>> with hooks(model, fwd=[("blocks.0.hook_resid_post", lambda x, hook: x * 0)]):
    ...     logits = model(tokens)
    """
    plan: list[tuple[str, HookFn, Literal["fwd", "bwd"]]] = []
    for direction, pairs in (("fwd", fwd), ("bwd", bwd)):
        for spec, fn in pairs:
            if not callable(fn):
                raise TypeError(f"the hook for {spec!r} is not callable: {fn!r}")
            plan.extend((name, fn, direction) for name in resolve_hooks(model, spec))  # type: ignore[misc]
    hook_dict = model.hook_dict  # type: ignore[attr-defined]
    added: list[tuple[Any, Any]] = []
    try:
        for name, fn, direction in plan:
            hp = hook_dict[name]
            handles = hp.fwd_hooks if direction == "fwd" else hp.bwd_hooks
            hp.add_hook(_as_named(fn, name), dir=direction)
            added.append((hp, handles[-1]))
        yield model
    finally:
        for hp, handle in reversed(added):
            handle.hook.remove()
            for lst in (hp.fwd_hooks, hp.bwd_hooks):
                if handle in lst:
                    lst.remove(handle)
