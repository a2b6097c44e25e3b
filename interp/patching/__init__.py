"""Activation patching, path patching and attribution patching on the component graph.

- :func:`patch_sweep`: exact activation patching over every cell of a site (batched).
- :func:`path_patch`, :func:`edge_patch`: exact path patching from senders to receivers.
- :func:`attribution_patch`, :func:`edge_attribution`: gradient estimates of the two above.

Every method returns a :class:`PatchResult` (per-prompt values, labelled axes, bootstrap CIs).
"""

from interp.core.sites import SITES
from interp.patching.attribution import attribution_patch, correlation, edge_attribution
from interp.patching.path import edge_patch, path_patch
from interp.patching.result import PatchResult
from interp.patching.sweep import patch_sweep

__all__ = [
    "SITES",
    "PatchResult",
    "attribution_patch",
    "correlation",
    "edge_attribution",
    "edge_patch",
    "patch_sweep",
    "path_patch",
]
