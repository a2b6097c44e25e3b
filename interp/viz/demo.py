"""What ``make demo`` writes with interp.viz: a feature browser for the demo SAE."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["demo_views"]

log = logging.getLogger("interp.viz.demo")


def demo_views(
    sae: Any,
    store: Any,
    out_dir: str | os.PathLike[str],
    *,
    model: Any | None = None,
    max_latents: int = 1000,
    n_batches: int | None = None,
) -> list[Path]:
    """Write ``out_dir/feature_browser.html`` over the first ``max_latents`` latents of ``sae``.

    ``sae``: an ``SAE`` or the directory of a saved one (a training run directory works too: its
    ``final/`` is used). ``store``: an ``ActivationStore`` or its directory. ``model`` (optional)
    adds logit effects and token strings. Returns the paths written.
    """
    from interp.store import ActivationStore
    from interp.viz.feature_data import collect
    from interp.viz.features import FeatureBrowser
    from interp.viz.html import save_html
    from saes.sae import SAE

    if not isinstance(sae, SAE):
        folder = Path(sae)
        sae = SAE.load(folder / "final" if (folder / "final" / "cfg.json").exists() else folder)
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    t = time.perf_counter()
    latents = list(range(min(max_latents, sae.cfg.d_sae)))
    data = collect(sae, store, latents=latents, model=model, n_batches=n_batches)
    path = save_html(
        Path(out_dir) / "feature_browser.html",
        FeatureBrowser(data),
        title=f"SAE features: {data.hook} ({len(latents)} of {sae.cfg.d_sae} latents)",
    )
    log.info(
        "feature browser over %d latents, %.1f MB, in %.0f s -> %s",
        len(latents), path.stat().st_size / 1e6, time.perf_counter() - t, path,
    )  # fmt: skip
    return [path]
