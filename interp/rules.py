"""Interpretation rules fixed before the numbers are seen.

A :class:`Rule` is data: which statistic of a result, which correction over its cells, which
bound against which threshold. ``register(directory)`` writes it, with its sha256, before the run;
``verdicts(result)`` says for every cell whether the rule holds, and carries the hash, so a rule
changed after the results were seen is caught by :func:`check_registered` (the file no longer
hashes to what the verdicts recorded, or to what was registered).

>>> import torch
>>> from interp.patching.result import PatchResult
>>> g = torch.Generator().manual_seed(0)
>>> corrupt = torch.zeros(16)
>>> values = torch.randn(16, 2, 3, generator=g) * 0.1
>>> values[:, 1, 2] += 1.0  # one cell restores the clean value
>>> res = PatchResult(values, ("layer", "head"), {"layer": ["L0", "L1"], "head": ["H0", "H1", "H2"]},
...                   "ld", "patch_sweep", "z", "resample", "denoise", corrupt + 1.0, corrupt)
>>> rule = Rule("a head is in the circuit", "normalized_effect", threshold=0.5)
>>> [r["cell"] for r in rule.verdicts(res) if r["holds"]]
[{'layer': 'L1', 'head': 'H2'}]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp._io import atomic_write_json, read_json
from interp.multiple_testing import METHODS, family_test
from interp.table import Rows
from interp.validate import check_choice, did_you_mean

__all__ = ["RULE_FILE", "Rule", "RuleChangedError", "check_registered"]

RULE_FILE = "rule.json"
STATISTICS = ("effect", "normalized_effect")
BOUNDS = ("lower", "upper")
CORRECTIONS = (*METHODS, "none")


class RuleChangedError(ValueError):
    """A registered rule no longer hashes to what was registered or what verdicts recorded."""


@dataclass(frozen=True)
class Rule:
    """``claim`` holds for a cell iff the ``bound`` of its ``correction``-adjusted (1 − alpha)
    interval of ``statistic`` lies beyond ``threshold`` (``"lower"``: above it; ``"upper"``:
    below it).

    ``statistic``: ``"effect"`` (value minus the base run's, per prompt) or
    ``"normalized_effect"`` (the same on the scale where the corrupted run is 0 and the clean run
    1). ``correction``: ``"maxt"`` (intervals simultaneous over every cell, the default),
    ``"holm"`` / ``"bh"`` (the cell's test of "statistic = threshold" adjusted over the cells,
    and the estimate beyond it), or ``"none"`` (each cell's own sign-flip t interval).
    """

    claim: str
    statistic: str
    threshold: float
    bound: str = "lower"
    correction: str = "maxt"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"unknown statistic {self.statistic!r}; a rule can use {', '.join(STATISTICS)}"
                + did_you_mean(self.statistic, STATISTICS)
            )
        check_choice(self.bound, BOUNDS, "bound")
        check_choice(self.correction, CORRECTIONS, "correction")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {self.alpha}")

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sha256(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def register(self, directory: str | Path) -> Path:
        """Write the rule and its hash to ``directory/rule.json`` (before the run). Registering
        a different rule where one is already registered is refused."""
        path = Path(directory) / RULE_FILE
        if path.exists():
            old = read_json(path)
            if old.get("sha256") != self.sha256:
                raise RuleChangedError(
                    f"{path} already registers a different rule ({old.get('rule')}); a rule is "
                    "fixed before the run: use a new directory for a new rule"
                )
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"rule": self.to_dict(), "sha256": self.sha256})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Rule:
        """The rule registered in ``directory``, refused if the file was edited since."""
        info = read_json(Path(directory) / RULE_FILE)
        rule = cls(**info["rule"])
        if rule.sha256 != info.get("sha256"):
            raise RuleChangedError(
                f"{Path(directory) / RULE_FILE} was edited after it was registered: it hashes to "
                f"{rule.sha256[:12]}…, registered as {str(info.get('sha256'))[:12]}…"
            )
        return rule

    # -- evaluation -------------------------------------------------------------------------
    def verdicts(self, result: Any) -> Rows:
        """One row per cell of ``result``: its estimate, the interval bound the rule reads (or
        the adjusted p-value), and whether the rule holds; ``rows.note`` names the rule and its
        hash."""
        if self.statistic == "normalized_effect":
            if not hasattr(result, "normalized"):
                raise ValueError(
                    f"statistic 'normalized_effect' needs a result with clean and corrupted "
                    f"baselines; {type(result).__name__} has none (use 'effect')"
                )
            result = result.normalized()
        effects = result.effects()
        shape = tuple(effects.shape[1:])
        est = effects.mean(0).flatten()
        if self.correction in ("maxt", "none"):
            if self.correction == "maxt":
                fam = family_test(effects, alpha=self.alpha)
                low, high = fam.low, fam.high
            else:
                flat = effects.reshape(effects.shape[0], -1)
                cells = [
                    family_test(flat[:, i : i + 1], alpha=self.alpha) for i in range(flat.shape[1])
                ]
                low = torch.cat([c.low for c in cells])  # type: ignore[misc]
                high = torch.cat([c.high for c in cells])  # type: ignore[misc]
            assert low is not None and high is not None
            read = (low if self.bound == "lower" else high).flatten()
            holds = read > self.threshold if self.bound == "lower" else read < self.threshold
            extra = {"bound": read}
        else:
            fam = family_test(effects - self.threshold, alpha=self.alpha, method=self.correction)
            p = fam.p_adjusted.flatten()
            beyond = est > self.threshold if self.bound == "lower" else est < self.threshold
            holds = (p <= self.alpha) & beyond
            extra = {"p_adj": p}
        rows = Rows(note=f"rule {self.sha256[:12]}: {self.describe()}")
        for flat_i in range(int(np.prod(shape))):
            idx = np.unravel_index(flat_i, shape)
            cell = {a: result.labels[a][int(i)] for a, i in zip(result.axes, idx, strict=True)}
            row: dict[str, Any] = {"cell": cell, "estimate": float(est[flat_i])}
            row.update({k: float(v[flat_i]) for k, v in extra.items()})
            row["holds"] = bool(holds[flat_i])
            rows.append(row)
        rows.rule_sha256 = self.sha256  # type: ignore[attr-defined]
        return rows

    def describe(self) -> str:
        stat = self.statistic.replace("_", " ")
        level = f"{1 - self.alpha:.0%}"
        if self.correction in ("maxt", "none"):
            how = "simultaneous (max-t)" if self.correction == "maxt" else "own (uncorrected)"
            side = "exceeds" if self.bound == "lower" else "is below"
            return (
                f"{self.claim} iff the {self.bound} bound of its {how} {level} interval of the "
                f"{stat} {side} {self.threshold:g}"
            )
        name = "Holm" if self.correction == "holm" else "Benjamini-Hochberg"
        side = "above" if self.bound == "lower" else "below"
        return (
            f"{self.claim} iff its {stat} is {side} {self.threshold:g} by a sign-flip test "
            f"{name}-adjusted over the cells at alpha {self.alpha:g}"
        )


def check_registered(directory: str | Path, recorded_sha256: str) -> Rule:
    """The rule registered in ``directory``, checked against the hash a set of verdicts
    recorded: an edit after registration or after the verdicts raises :class:`RuleChangedError`."""
    rule = Rule.load(directory)
    if rule.sha256 != recorded_sha256:
        raise RuleChangedError(
            f"the rule in {Path(directory) / RULE_FILE} ({rule.sha256[:12]}…) is not the one the "
            f"verdicts were computed with ({recorded_sha256[:12]}…): it was changed after the run"
        )
    return rule
