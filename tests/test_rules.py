"""Pre-registered interpretation rules: rule as data, hashed before the run, verdicts per cell,
an edit after the run detected."""

from __future__ import annotations

import json

import pytest
import torch

from interp.multiple_testing import family_test
from interp.patching.result import PatchResult
from interp.rules import Rule, RuleChangedError, check_registered


def _result(seed: int = 0) -> PatchResult:
    g = torch.Generator().manual_seed(seed)
    corrupt = torch.randn(16, generator=g)
    values = corrupt[:, None, None] + 0.3 * torch.randn(16, 4, 5, generator=g)
    values[:, 2, 1] += 2.0  # restores twice the clean-corrupt gap: a strong cell
    values[:, 0, 3] += 0.4  # a weak one
    labels = {"layer": [f"L{i}" for i in range(4)], "head": [f"H{h}" for h in range(5)]}
    return PatchResult(
        values, ("layer", "head"), labels, "ld", "patch_sweep", "z", "resample", "denoise",
        corrupt + 1.0, corrupt,
    )  # fmt: skip


def test_verdicts_follow_the_family_interval():
    res = _result()
    rule = Rule("a head is in the circuit", "normalized_effect", threshold=0.1)
    rows = rule.verdicts(res)
    fam = res.normalized().family()
    expect = (fam.low > 0.1).flatten().tolist()
    assert [r["holds"] for r in rows] == expect and sum(expect) >= 1
    assert rows[2 * 5 + 1]["holds"] and rows[2 * 5 + 1]["cell"] == {"layer": "L2", "head": "H1"}
    assert rows[0]["bound"] == pytest.approx(float(fam.low[0, 0]))
    assert rows.rule_sha256 == rule.sha256 and rule.sha256[:12] in rows.note


def test_corrections_are_ordered_by_how_much_they_allow():
    res = _result(1)
    called = {
        c: sum(r["holds"] for r in Rule("x", "effect", 0.0, correction=c).verdicts(res))
        for c in ("none", "bh", "holm", "maxt")
    }
    assert called["none"] >= called["bh"] >= called["holm"] >= 1
    assert called["none"] >= called["maxt"] >= 1
    upper = Rule("x", "effect", 0.0, bound="upper").verdicts(res)
    low = family_test(res.effects()).high.flatten()  # type: ignore[union-attr]
    assert [r["holds"] for r in upper] == (low < 0).tolist()


def test_registered_rule_hash_and_an_edit_after_the_run(tmp_path):
    rule = Rule("a head is in the circuit", "normalized_effect", threshold=0.1, correction="holm")
    path = rule.register(tmp_path)
    rows = rule.verdicts(_result())
    assert Rule.load(tmp_path) == rule
    assert check_registered(tmp_path, rows.rule_sha256) == rule
    rule.register(tmp_path)  # the same rule again: fine
    with pytest.raises(RuleChangedError, match="already registers a different rule"):
        Rule("a head is in the circuit", "normalized_effect", threshold=0.05).register(tmp_path)
    info = json.loads(path.read_text())
    info["rule"]["threshold"] = 0.05  # loosened after seeing the numbers
    path.write_text(json.dumps(info))
    with pytest.raises(RuleChangedError, match="edited after it was registered"):
        Rule.load(tmp_path)
    info["sha256"] = Rule(**info["rule"]).sha256  # and the hash forged to match
    path.write_text(json.dumps(info))
    with pytest.raises(RuleChangedError, match="changed after the run"):
        check_registered(tmp_path, rows.rule_sha256)


def test_bad_rules():
    with pytest.raises(ValueError, match="did you mean 'normalized_effect'"):
        Rule("x", "normalised_effect", 0.1)
    with pytest.raises(ValueError, match="correction"):
        Rule("x", "effect", 0.1, correction="bonferroni")
    with pytest.raises(ValueError, match="alpha"):
        Rule("x", "effect", 0.1, alpha=0.0)
    values = torch.randn(8, 3)
    from interp.core.result import Values

    plain = Values(values, ("cell",), {"cell": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="needs a result with clean and corrupted"):
        Rule("x", "normalized_effect", 0.1).verdicts(plain)
    assert len(Rule("x", "effect", 0.1).verdicts(plain)) == 3
