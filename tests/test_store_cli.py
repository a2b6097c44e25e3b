"""``python -m interp.store``: write, info and verify from the shell."""

import subprocess
import sys

import pytest
import torch

from interp import store_cli
from interp.store import ActivationStore

HOOK = "blocks.3.hook_resid_post"


@pytest.fixture()
def cli_model(monkeypatch, smollm2_bridge):
    """The session's SmolLM2 stands in for load_model (the CLI would load the same model)."""
    monkeypatch.setattr("interp.models.load_model", lambda name: smollm2_bridge)
    return smollm2_bridge


def test_write_info_verify(tmp_path, cli_model, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("The cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / "store"
    args = ["write", str(out), "--model", "smollm2-135m", "--hook", HOOK, "--corpus", str(text)]
    assert store_cli.main([*args, "--tokens", "64", "--context-size", "32"]) == 0
    store = ActivationStore(out)
    assert store.complete and store.hooks == [HOOK] and len(store) == 62  # BOS dropped
    assert store.manifest["data"]["name"] == "notes.txt"
    assert store_cli.main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "rows          62" in shown and f"{HOOK} (d=576)" in shown
    assert store_cli.main(["verify", str(out)]) == 0
    assert "all 1 shards match" in capsys.readouterr().out
    # The stored rows equal a fresh forward on the stored tokens.
    batch = store.rows(torch.arange(31))
    ctx = store.context(int(batch.seq_ids[0]))
    _, cache = cli_model.run_with_cache(ctx[None], names_filter=HOOK)
    torch.testing.assert_close(cache[HOOK][0, 1:], batch.acts.float(), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_clear(tmp_path, cli_model, capsys):
    args = ["write", str(tmp_path / "s"), "--model", "smollm2-135m"]
    assert store_cli.main([*args, "--hook", "blocks.3.hook_resid_pots"]) == 2
    assert "Did you mean: blocks.3.hook_resid_post" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SystemExit, match="neither 'shakespeare' nor a text file"):
        store_cli.main([*args, "--hook", HOOK, "--corpus", "nope.txt"])
    assert store_cli.main(["info", str(tmp_path / "missing")]) == 2


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "interp.store", "--help"], capture_output=True, text=True, check=True
    )
    assert "write" in out.stdout and "verify" in out.stdout
