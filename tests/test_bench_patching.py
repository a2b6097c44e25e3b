"""``python -m interp.bench patching --model random`` at a tiny size: mechscope and TransformerLens
agree on both sweeps, both backends; the memory measurement runs. Nothing is timed here."""

from __future__ import annotations

import json

import torch

from interp.bench.__main__ import main
from interp.bench.patching_random import make_inputs, measure_memory
from interp.models import hooked_available

TINY = ["--layers", "2", "--d-model", "64", "--heads", "4", "--d-vocab", "500",
        "--prompts", "4", "--positions", "8"]  # fmt: skip


def test_random_case_agrees_with_transformer_lens(tmp_path, capsys):
    backend = "both" if hooked_available() else "bridge"
    out = tmp_path / "bench.json"
    argv = ["patching", "--model", "random", "--backend", backend, *TINY]
    assert main([*argv, "--repeats", "1", "--skip-mem", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    backends = ["hooked", "bridge"] if backend == "both" else ["bridge"]
    assert list(results["backends"]) == backends
    for b in backends:
        sweeps = results["backends"][b]["sweeps"]
        assert sweeps["resid_pre"]["cells"] == 2 * 8 and sweeps["z"]["cells"] == 2 * 4
        for row in sweeps.values():
            assert row["max_abs_diff"] < 1e-4
            assert max(abs(v) for v in row["metric_range"]) > 1e-3  # not all zero
    assert "speedup (target)" in capsys.readouterr().out


def test_inputs_differ_at_two_positions():
    clean, corrupt, metric = make_inputs(4, 24, 500)
    assert (clean != corrupt).any(0).nonzero().flatten().tolist() == [8, 16]
    assert (clean != corrupt).all(0).sum() == 2
    assert metric(torch.zeros(4, 24, 500)).shape == (4,)


def test_memory_measurement_in_process():
    sizes = dict(layers=1, d_model=32, heads=2, d_vocab=100, prompts=2, positions=6)
    for side in ("mechscope", "tl"):
        r = measure_memory("bridge", sizes, "z", side, tl_cells=2)
        assert r["peak_mb"] >= r["rss_before_mb"] > 0 and r["growth_mb"] >= 0
