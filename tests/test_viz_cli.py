"""``python -m interp.viz browser RUN_DIR``: a feature browser from a training run directory."""

import json

import torch

from interp.store import ActivationStore
from interp.viz.__main__ import main as viz_main
from saes.__main__ import main as saes_main


def _run(tmp_path, tiny_model):
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (8,), generator=g) for _ in range(32)]
    store = ActivationStore.write(
        tmp_path / "store", tiny_model, "blocks.1.hook_resid_post", contexts,
        context_size=8, shard_tokens=128, progress=False,
    )  # fmt: skip
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "sae": {"d_sae": 24, "k": 4},
        "train": {"total_steps": 6, "batch_size": 32, "checkpoint_every": 3, "log_every": 2},
        "data": {"store": str(store.path)},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert saes_main(["train", "--config", str(tmp_path / "cfg.json"), "--no-progress"]) == 0
    return tmp_path / "run"


def test_browser_from_a_run_directory_finds_its_store(tmp_path, tiny_model, capsys):
    run = _run(tmp_path, tiny_model)
    capsys.readouterr()
    assert viz_main(["browser", str(run), "--latents", "5"]) == 0
    page = run / "feature_browser.html"
    shown = capsys.readouterr()
    assert f"wrote {page}" in shown.out
    assert "feature stats" in shown.err and "feature examples" in shown.err  # progress bars
    text = page.read_text(encoding="utf-8")
    assert "blocks.1.hook_resid_post" in text and "5 of 24 latents" in text


def test_browser_errors_are_clear(tmp_path, capsys):
    assert viz_main(["browser", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err
