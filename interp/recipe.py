"""Recipes: a call written down as data, so ``python -m interp replay RUN_DIR`` can make it again.

A method decorated with :func:`recorded` returns its result with ``meta["replay"]``: the function
(``module:name``), every argument after defaults are applied, and the model as the call that
loads it plus its weight fingerprint. Arguments are encoded as JSON by :func:`encode`:

- tensors by value (dtype, shape, values, sha256: a recipe edited by hand is caught on replay);
- token lists, strings, numbers, positions (``real(...)``), slices, dtypes, component nodes;
- functions by import path, with a hash of their source (a metric recorded as
  ``interp.metrics:logit_diff`` or a ``functools.partial`` of it with its token ids is data);
- dataclasses of importable classes field by field; models and dictionaries by the call that
  loaded them (``load_model``, ``random_model``, ``SAE.load``), set by
  :func:`interp.manifest.set_source`.

What cannot be written down (a lambda, a function defined in a notebook, an object of an unknown
type) is recorded as unreplayable with the reason, and replay says so instead of pretending.

>>> import functools, torch
>>> from interp.metrics import logit_diff
>>> spec = encode(functools.partial(logit_diff, correct=torch.tensor([3, 4]), incorrect=5))
>>> spec["__partial__"]["func"]["__callable__"]
'interp.metrics:logit_diff'
>>> metric = decode(spec)
>>> metric(torch.arange(12.0).reshape(2, 1, 6)).tolist()
[-2.0, -1.0]
>>> decode(encode(lambda lg: lg))
Traceback (most recent call last):
...
interp.recipe.NotReplayableError: a lambda cannot be replayed: give a module-level function or a functools.partial of one
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from interp.core.nodes import Node
from interp.core.positions import Real, Span, positions_from_json, positions_to_json
from interp.manifest import source_of
from interp.store_format import MANIFEST

__all__ = [
    "RECIPE_FORMAT",
    "NotReplayableError",
    "decode",
    "encode",
    "import_path",
    "recipe",
    "recorded",
    "unreplayable",
]

RECIPE_FORMAT = "mechscope.recipe/1"
F = TypeVar("F", bound=Callable[..., Any])


class NotReplayableError(ValueError):
    """An artifact (or one of its arguments) that cannot be made again from its record."""


def _lookup(path: str) -> Any:
    """The object at ``module:qualname`` (ImportError or AttributeError if there is none)."""
    module, _, qual = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qual.split("."):
        found = getattr(found, part)
    return found


def import_path(obj: Any) -> str | None:
    """``module:qualname`` when ``obj`` can be imported back by that name, else None."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qual or "<" in qual or module == "__main__":
        return None
    try:
        found = _lookup(f"{module}:{qual}")
    except (ImportError, AttributeError):
        return None
    # ``==``: a classmethod's bound method is a new object at every access, equal to the last.
    same = found is obj or found == obj or getattr(found, "__wrapped__", None) is obj
    return f"{module}:{qual}" if same else None


def _resolve(path: str) -> Any:
    try:
        return _lookup(path)
    except (ImportError, AttributeError) as err:
        raise NotReplayableError(f"{path} cannot be imported here ({err})") from err


def _source_hash(fn: Any) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def _tensor_sha(t: Tensor) -> str:
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype, bf16 too
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]


def _encode_module(module: nn.Module) -> dict[str, Any]:
    from interp.models import model_fingerprint

    return {
        "__module__": {
            "class": type(module).__name__,
            "fingerprint": model_fingerprint(module),
            "source": _made_by(module),
        }
    }


_STORE = "interp.store:ActivationStore"  # resolved by name: stores import this module


def _encode_store(value: Any) -> dict[str, Any] | None:
    """An activation store by its folder and the sha256 of its manifest (which holds every
    shard's sha256): replay refuses a store that is gone or was rewritten."""
    if import_path(type(value)) != _STORE:
        return None
    path = Path(value.path).resolve()
    return {"__store__": {"path": str(path), "sha256": _file_sha(path / MANIFEST)}}


def _decode_store(body: dict[str, Any]) -> Any:
    path = Path(body["path"])
    if not (path / MANIFEST).is_file():
        raise NotReplayableError(f"the activation store {path} is gone (no {MANIFEST})")
    if _file_sha(path / MANIFEST) != body["sha256"]:
        raise NotReplayableError(
            f"the activation store {path} has changed since it was read (its {MANIFEST} sha256 "
            f"differs from the recorded {body['sha256'][:16]}…): rewritten or resumed"
        )
    return _resolve(_STORE)(path)


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _made_by(value: Any) -> dict[str, Any] | None:
    """The recorded call that made ``value`` (:func:`interp.manifest.sourced`), if any."""
    src = source_of(value)
    if src is None or (call := import_path(src["call"])) is None:
        return None
    return {"call": call, "args": encode(list(src["args"])), "kwargs": encode(src["kwargs"])}


# -- the codec ----------------------------------------------------------------------------
def unreplayable(reason: str) -> dict[str, str]:
    return {"__unreplayable__": reason}


def encode(value: Any) -> Any:
    """``value`` as JSON data that :func:`decode` turns back into an equal value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v) for k, v in value.items()}}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, Tensor):
        t = value.detach().cpu()
        return {
            "__tensor__": {
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
                "data": t.float().flatten().tolist()
                if t.is_floating_point()
                else t.flatten().tolist(),
                "sha256": _tensor_sha(t),
            }
        }
    if isinstance(value, np.ndarray):
        return encode(torch.from_numpy(value))
    if isinstance(value, (Real, Span)):
        return {"__positions__": positions_to_json(value)}
    if isinstance(value, PurePath):  # a path is its text: the call takes either
        return str(value)
    if isinstance(value, slice):
        return {"__slice__": [value.start, value.stop, value.step]}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, Node):
        return value.name
    if isinstance(value, nn.Module):
        return _encode_module(value)
    if (made := _made_by(value)) is not None:
        return {"__made__": made}
    if (store := _encode_store(value)) is not None:
        return store
    if isinstance(value, functools.partial):
        return {
            "__partial__": {
                "func": encode(value.func),
                "args": encode(list(value.args)),
                "kwargs": encode(dict(value.keywords)),
                "names": {k: v for k, v in vars(value).items() if isinstance(v, str)},
            }
        }
    named = isinstance(value, tuple) and hasattr(value, "_fields")
    if named or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        path = import_path(type(value))
        if path is None:
            return unreplayable(f"{type(value).__name__} is not importable by name")
        names = value._fields if named else [f.name for f in dataclasses.fields(value) if f.init]
        return {
            "__object__": {"call": path, "kwargs": {k: encode(getattr(value, k)) for k in names}}
        }
    if callable(value):
        if getattr(value, "__name__", "") == "<lambda>":
            return unreplayable(
                "a lambda cannot be replayed: give a module-level function or a "
                "functools.partial of one"
            )
        path = import_path(value)
        if path is None:
            name = getattr(value, "__qualname__", type(value).__name__)
            return unreplayable(
                f"{name} is not importable by name (defined in a notebook, a script or inside a "
                "function): move it to a module, or use a functools.partial of one"
            )
        return {"__callable__": path, "source_sha256": _source_hash(value)}
    return unreplayable(f"no record for a value of type {type(value).__name__}")


def decode(value: Any, *, modules: dict[str, nn.Module] | None = None) -> Any:
    """The value :func:`encode` wrote down. ``modules``: models and dictionaries already at hand,
    by fingerprint (the caller checked them); any other recorded module is loaded from its source
    and kept there, so each is loaded once."""
    modules = {} if modules is None else modules
    if isinstance(value, list):
        return [decode(v, modules=modules) for v in value]
    if not isinstance(value, dict):
        return value
    tag = next(iter(value))
    body = value[tag]
    if tag == "__tuple__":
        return tuple(decode(v, modules=modules) for v in body)
    if tag == "__dict__":
        return {k: decode(v, modules=modules) for k, v in body.items()}
    if tag == "__items__":
        return {decode(k, modules=modules): decode(v, modules=modules) for k, v in body}
    if tag == "__tensor__":
        return _decode_tensor(body)
    if tag == "__positions__":
        return positions_from_json(body)
    if tag == "__slice__":
        return slice(*body)
    if tag == "__dtype__":
        return getattr(torch, body)
    if tag == "__unreplayable__":
        raise NotReplayableError(body)
    if tag == "__callable__":
        fn = _resolve(body)
        if value.get("source_sha256") not in (None, _source_hash(fn)):
            warnings.warn(
                f"{body} has changed since it was recorded: replaying today's code", stacklevel=2
            )
        return fn
    if tag == "__partial__":
        fn = decode(body["func"], modules=modules)
        part = functools.partial(
            fn, *decode(body["args"], modules=modules), **decode(body["kwargs"], modules=modules)
        )
        for k, v in body.get("names", {}).items():  # a display name set on it (``__name__``)
            setattr(part, k, v)
        return part
    if tag == "__store__":
        return _decode_store(body)
    if tag == "__made__":
        made = _resolve(body["call"])
        return made(
            *decode(body["args"], modules=modules), **decode(body["kwargs"], modules=modules)
        )
    if tag == "__object__":
        fields = {k: decode(v, modules=modules) for k, v in body["kwargs"].items()}
        return _resolve(body["call"])(**fields)
    if tag == "__module__":
        if body["fingerprint"] not in modules:
            modules[body["fingerprint"]] = load_source(body)
        return modules[body["fingerprint"]]
    raise NotReplayableError(f"unknown record {tag!r} (written by a newer mechscope?)")


def _decode_tensor(body: dict[str, Any]) -> Tensor:
    dtype = getattr(torch, body["dtype"])
    t = torch.tensor(body["data"], dtype=torch.float32 if dtype.is_floating_point else dtype)
    t = t.to(dtype).reshape(body["shape"])
    if _tensor_sha(t) != body["sha256"]:
        raise NotReplayableError(
            f"a recorded tensor of shape {body['shape']} does not match its sha256 "
            f"{body['sha256']}: the recipe was edited after it was written"
        )
    return t


def load_source(body: dict[str, Any]) -> nn.Module:
    """The module a ``__module__`` record names, made again by its recorded call and checked
    against the recorded fingerprint."""
    from interp.models import model_fingerprint

    src = body.get("source")
    if src is None:
        raise NotReplayableError(
            f"this {body['class']} was built in code, not loaded by a recorded call: pass the "
            f"model to replay (--model NAME_OR_FOLDER); its weights must have fingerprint "
            f"{body['fingerprint'][:16]}…"
        )
    try:
        module = _resolve(src["call"])(*decode(src["args"]), **decode(src["kwargs"]))
    except (OSError, ValueError, KeyError) as err:  # a file gone, moved or unreadable
        raise NotReplayableError(
            f"the {body['class']} this artifact used cannot be made again by {src['call']}: {err}"
        ) from err
    if (now := model_fingerprint(module)) != body["fingerprint"]:
        raise NotReplayableError(
            f"{src['call']} made a {body['class']} whose weights differ from the recorded ones "
            f"(fingerprint {now[:16]}… here, {body['fingerprint'][:16]}… when recorded): a "
            "different model file, dtype or library version"
        )
    return module


def unreplayable_parts(value: Any, where: str = "") -> list[str]:
    """Every ``where: reason`` the encoded ``value`` holds."""
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in unreplayable_parts(v, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return []
    if "__unreplayable__" in value:
        return [f"{where or 'value'}: {value['__unreplayable__']}"]
    out = []
    for k, v in value.items():
        out += unreplayable_parts(
            v, f"{where}.{k}" if where and not k.startswith("__") else where or k
        )
    return out


def recipe(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The record of ``fn(*args, **kwargs)``: every argument, defaults applied."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    encoded = {name: encode(v) for name, v in bound.arguments.items()}
    return {
        "format": RECIPE_FORMAT,
        "call": import_path(fn) or f"{fn.__module__}:{fn.__qualname__}",
        "args": encoded,
        "unreplayable": unreplayable_parts(encoded),
        "then": [],
    }


def _slots(result: Any) -> list[dict[str, Any]]:
    """Where a result keeps its recipe: its ``meta`` field, else its ``config`` (a result whose
    ``meta`` is derived), else each value's ``metadata`` (a dict of steering vectors)."""
    derived = isinstance(getattr(type(result), "meta", None), property)
    if not derived and isinstance(meta := getattr(result, "meta", None), dict):
        return [meta]
    if isinstance(config := getattr(result, "config", None), dict):
        return [config]
    if isinstance(result, dict):
        return [
            v.metadata for v in result.values() if isinstance(getattr(v, "metadata", None), dict)
        ]
    return []


def _loader(cls: type) -> str | None:
    """How a saved result of this class is read back: its ``load`` classmethod."""
    path = import_path(cls)
    return None if path is None or not hasattr(cls, "load") else f"{path}.load"


def recorded(fn: F) -> F:
    """Decorate a method so the :class:`~interp.core.result.Result` it returns carries its recipe
    in ``meta["replay"]`` (saved into ``run.json`` by ``Result.save``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        slots = _slots(result)
        if slots:
            rec = recipe(wrapper, args, kwargs)
            rec["load"] = _loader(type(result))
            for slot in slots:
                slot["replay"] = rec
        return result

    return wrapper  # type: ignore[return-value]
