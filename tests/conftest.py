"""Shared fixtures: no network, one real-model load per session, tiny models built in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import importlib.util  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# -- environments without HookedTransformer (TransformerLens 4) or sae_lens ------------------------

NEEDS_HOOKED = "needs HookedTransformer (removed in TransformerLens 4)"
NEEDS_SAE_LENS = "needs sae_lens, which requires transformer-lens<4"


def _hooked_available() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:  # TL 4 raises ImportError (not AttributeError) for removed names
        return False
    return True


HOOKED = _hooked_available()
SAE_LENS = importlib.util.find_spec("sae_lens") is not None
# Fixtures that build a HookedTransformer: a test using one is marked ``hooked``.
# On TL 4 ``tiny_model`` is a GPT-2 bridge of the same sizes, so its users run there too.
HOOKED_FIXTURES = {"tiny_model", "smollm2"} if HOOKED else {"smollm2"}
# Calls that build one (toy models are HookedTransformers only): a test whose body, or the body
# of a fixture it uses, makes one of these calls is marked ``hooked`` as well.
_BUILDS_HOOKED = re.compile(
    r"\b(HookedTransformer|HookedTransformerConfig|load_toy_induction"
    r"|toy_model|train_induction_model|induction_config|toy\._main)\("
)
_SAE_LENS_IMPORT = re.compile(
    r"(^|\s)(import sae_lens|from sae_lens\b)|importorskip\([\"']sae_lens"
)
# What TL 4 says when a test module itself imports a removed name at its top level.
_REMOVED = re.compile(r"ImportError: '(HookedTransformer|HookedTransformerConfig)' was removed")


def _needs_sae_lens(item: pytest.Item) -> bool:
    return bool(_SAE_LENS_IMPORT.search(_source(getattr(item, "function", None))))


def _source(fn: object) -> str:
    try:
        return inspect.getsource(fn)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _builds_hooked(item: pytest.Item) -> bool:
    if HOOKED_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    fns = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info is not None else ():
        fns += [d.func for d in defs if d.baseid]  # fixtures of the test tree, not plugins'
    return any(_BUILDS_HOOKED.search(_source(fn)) for fn in fns if fn is not None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they use and the calls and imports in their bodies (and their
    fixtures'); skip what cannot run here."""
    for item in items:
        if _builds_hooked(item):
            item.add_marker(pytest.mark.hooked)
        if _needs_sae_lens(item):
            item.add_marker(pytest.mark.sae_lens)
        if not HOOKED and item.get_closest_marker("hooked") is not None:
            item.add_marker(pytest.mark.skip(reason=NEEDS_HOOKED))
        if not SAE_LENS and item.get_closest_marker("sae_lens") is not None:
            item.add_marker(pytest.mark.skip(reason=NEEDS_SAE_LENS))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A test module that imports HookedTransformer at its top is skipped under TL 4, not an error.

    Only when the failing import is the test module's own: a traceback through library code
    (``interp/``, ``saes/``, ``kernels/``) stays an error, since that is a bug to fix.
    """
    report = yield
    if HOOKED or not report.failed or not isinstance(collector, pytest.Module):
        return report
    text = str(report.longrepr)
    library = re.search(r"^(interp|saes|kernels)/\S+\.py:\d+", text, re.MULTILINE)
    if _REMOVED.search(text) and library is None:
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: {NEEDS_HOOKED}")
        report.result = []
    return report


@pytest.fixture(scope="session")
def smollm2():
    """The offline SmolLM2-135M-Instruct as a HookedTransformer, loaded once per test session."""
    from interp.models import load_model

    model = load_model("smollm2-135m", backend="hooked")
    model.eval()
    return model


@pytest.fixture(scope="session")
def smollm2_bridge():
    """The same SmolLM2 weights as a TransformerBridge (TL 3 and TL 4), loaded once per session."""
    from interp.models import load_model

    model = load_model("smollm2-135m", backend="bridge", device="cpu")
    model.eval()
    return model


def _tiny_bridge():
    """TL 4: a 2-layer random GPT-2 as a TransformerBridge, the sizes of ``tiny_model``."""
    from interp.random_models import random_model

    return random_model(
        "bridge", n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", seed=0,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model_shared(tmp_path_factory):
    """``tiny_model`` built once per session, for module-scoped fixtures that only read it."""
    if not HOOKED:
        return _tiny_bridge()
    return _tiny_hooked()


@pytest.fixture()
def tiny_model(tmp_path_factory):
    """A 2-layer random model (MLP + attention) small enough for any unit test: a
    HookedTransformer on TL 3, a GPT-2 TransformerBridge of the same sizes on TL 4."""
    if not HOOKED:
        return _tiny_bridge()
    return _tiny_hooked()


def _tiny_hooked():
    """A 2-layer random HookedTransformer (MLP + attention) small enough for any unit test."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_ctx=32,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    model.eval()
    return model
