"""Causal scrubbing (Chan et al., 2022): hypotheses as data, treeified resampling, loss recovered.

- :class:`Hypothesis`, :class:`Claim`, :func:`claim`: a claim tree over component-graph nodes,
  each claim carrying a feature of the input (its values are the equivalence classes).
- :func:`scrub`: one hypothesis → :class:`ScrubResult` (clean / scrubbed / random losses per
  sample, fraction of loss recovered with a bootstrap CI, ``.plot()``, ``.save()``).
- :func:`compare`: several hypotheses on the same samples → :class:`ScrubComparison`.
- :func:`next_token_loss`: the usual metric.

See docs/scrubbing.md for the semantics and the formula.
"""

from interp.scrubbing.api import compare, scrub
from interp.scrubbing.hypothesis import (
    Claim,
    Feature,
    FeatureError,
    Hypothesis,
    HypothesisError,
    claim,
    feature_values,
)
from interp.scrubbing.metrics import next_token_loss
from interp.scrubbing.result import RecoveredCI, ScrubComparison, ScrubResult, loss_recovered

__all__ = [
    "Claim",
    "Feature",
    "FeatureError",
    "Hypothesis",
    "HypothesisError",
    "RecoveredCI",
    "ScrubComparison",
    "ScrubResult",
    "claim",
    "compare",
    "feature_values",
    "loss_recovered",
    "next_token_loss",
    "scrub",
]
