"""Feature dashboards for SAE latents, one at a time or in a browser over many.

>>> data = collect(sae, store, model=model)              # interp.viz.feature_data
>>> FeatureBrowser(data).save("features.html")           # index, search, navigation
>>> FeatureDashboard(data, 12)                           # one latent (renders inline in Jupyter)

or in one call: ``feature_browser(sae, store, model=model)`` / ``feature_dashboard(sae, store, 12)``.

Each latent's record sits in its own ``<script type="application/json">`` block and is parsed only
when that latent is shown, so a browser over thousands of latents opens as fast as one over ten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interp.viz import assets
from interp.viz.feature_data import FeatureData, collect
from interp.viz.page import Page, esc, script_safe_json
from interp.viz.views import View

__all__ = ["FeatureBrowser", "FeatureDashboard", "feature_browser", "feature_dashboard"]


def _use_feature_scripts(page: Page) -> None:
    page.add_script("feature", assets.FEATURE_JS)  # no plotly.js: it alone takes ~1 s to start


class FeatureDashboard(View):
    """The dashboard of one latent: density histogram, top contexts shaded by activation,
    quantile samples, logit effects and nearest latents by decoder cosine."""

    def __init__(self, data: FeatureData, latent: int):
        data.record(latent)  # out of range / not collected: a clear error now, not in the page
        self.data, self.latent = data, int(latent)
        self.title = f"Latent {self.latent}"

    def render(self, page: Page) -> str:
        _use_feature_scripts(page)
        root = page.new_id(f"feature-{self.latent}")
        rec, vocab = self.data.record(self.latent), self.data.vocab_for([self.latent])
        hook = self.data.hook
        return (
            f'<div id="{root}" data-mechscope="feature"></div>'
            + page.json_block(f"{root}-rec", rec)
            + page.json_block(f"{root}-vocab", vocab)
            + page.init(
                f"const root = document.getElementById('{root}');"
                f"try {{ mechscope.feature(root, mechscope.data('{root}-rec'), "
                f"mechscope.data('{root}-vocab'), {{hook: {_js_str(hook)}}}); }}"
                " catch (err) { mechscope.fail(root, err); }"
            )
        )


class FeatureBrowser(View):
    """An index of many latents (sortable by density, max and mean activation; search by id;
    previous/next) beside the dashboard of the selected one. ``#<id>-latent-N`` in the URL opens
    latent N."""

    def __init__(
        self,
        data: FeatureData,
        latents: Sequence[int] | None = None,
        *,
        title: str | None = None,
        element_id: str = "features",
    ):
        ids = sorted(data.features) if latents is None else [int(i) for i in latents]
        ids = list(dict.fromkeys(ids))  # a latent listed twice: one index row, one data block
        for i in ids:
            data.record(i)
        if not ids:
            raise ValueError("a feature browser needs at least one latent")
        self.data, self.latents, self.element_id = data, ids, element_id
        self.title = title if title is not None else f"SAE features · {data.hook}"

    def dashboard(self, latent: int) -> FeatureDashboard:
        if latent not in self.latents:
            self.data.record(latent)  # the out-of-range message when it is out of range
            raise KeyError(f"latent {latent} is not in this browser")
        return FeatureDashboard(self.data, latent)

    def index(self) -> dict[str, Any]:
        recs = [self.data.features[i] for i in self.latents]
        return {
            "hook": self.data.hook,
            "d_sae": self.data.d_sae,
            "n_rows": self.data.n_rows,
            "id": self.latents,
            "density": [r["density"] for r in recs],
            "max": [r["max"] for r in recs],
            "mean": [r["mean"] for r in recs],
        }

    def render(self, page: Page) -> str:
        _use_feature_scripts(page)
        page.add_script("browser", assets.BROWSER_JS)
        root = page.new_id(self.element_id)
        blocks = [
            page.json_block(f"{root}-index", self.index()),
            page.json_block(f"{root}-vocab", self.data.vocab_for(self.latents)),
        ]
        blocks += [page.json_block(f"{root}-f{i}", self.data.features[i]) for i in self.latents]
        return (
            f'<div id="{esc(root)}" data-mechscope="browser"></div>'
            + "".join(blocks)
            + page.init(f"mechscope.browser('{root}');")
        )


def _js_str(s: str) -> str:
    """A JavaScript string literal (JSON's is one) that cannot end the script."""
    return script_safe_json(json.dumps(s, ensure_ascii=False))


def feature_dashboard(
    sae: Any, store: Any, latent: int, *, model: Any | None = None, **kwargs: Any
) -> FeatureDashboard:
    """Collect one latent's data (see :func:`interp.viz.feature_data.collect`) and its dashboard."""
    return FeatureDashboard(collect(sae, store, latents=[latent], model=model, **kwargs), latent)


def feature_browser(
    sae: Any,
    store: Any,
    *,
    latents: Sequence[int] | None = None,
    model: Any | None = None,
    title: str | None = None,
    **kwargs: Any,
) -> FeatureBrowser:
    """Collect the data of ``latents`` (default all) and a browser over them."""
    data = collect(sae, store, latents=latents, model=model, **kwargs)
    return FeatureBrowser(data, title=title)
