"""One model description for both TransformerLens versions.

``tl_model(**fields)`` takes ``HookedTransformerConfig`` fields: on TL 3 it builds that
``HookedTransformer`` exactly as before (same initialisation, so the TL 3 lane is unchanged); on
TL 4 it builds the Hugging Face architecture that expresses the same fields as a bridge
(``interp.random_models``). A test whose model neither GPT-2 nor Llama can express stays
``hooked`` (conftest marks ``HookedTransformer(`` calls).
"""

from __future__ import annotations

from typing import Any

from interp.models import hooked_available
from interp.random_models import random_model


def tl_model(**fields: Any) -> Any:
    if hooked_available():
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        fields = {"device": "cpu"} | fields
        return HookedTransformer(HookedTransformerConfig(**fields)).eval()
    fields.pop("device", None)
    return random_model("bridge", **fields)
