"""A real ``python -m saes train`` killed with SIGKILL, then resumed: the log holds every step once."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.store import ActivationStore

ROOT = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY = 120, 20


@pytest.fixture()
def store(tmp_path, tiny_model):
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (8,), generator=g) for _ in range(64)]
    return ActivationStore.write(
        tmp_path / "store", tiny_model, "blocks.1.hook_resid_post", contexts,
        context_size=8, shard_tokens=128,
    )  # fmt: skip


def train(tmp_path, store, run, *extra):
    cfg = {
        "run_dir": str(tmp_path / run),
        "sae": {"d_sae": 32, "k": 4},
        "train": {"total_steps": STEPS, "batch_size": 32, "checkpoint_every": CKPT_EVERY},
        "data": {"store": str(store.path)},
    }
    (tmp_path / f"{run}.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "saes", "train", "--config", str(tmp_path / f"{run}.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, "--no-progress", "train.log_every=1", *extra],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def logged(run_dir):
    """Steps in metrics.jsonl so far (a line torn by a concurrent write is left out)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def checkpoint_step(run_dir):
    latest = run_dir / "checkpoints" / "latest"
    return int(latest.read_text().removeprefix("step_")) if latest.exists() else None


def kill_past_a_checkpoint(proc, run_dir):
    """SIGKILL once the log has steps past the latest checkpoint (checked while stopped)."""
    while proc.poll() is None:
        step = checkpoint_step(run_dir)
        if step is not None and any(r["step"] > step for r in logged(run_dir)):
            proc.send_signal(signal.SIGSTOP)
            step = checkpoint_step(run_dir)
            if step is not None and any(r["step"] > step for r in logged(run_dir)):
                proc.kill()
                proc.wait()
                return step
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")


@pytest.mark.slow
def test_kill_9_then_resume_logs_every_step_once(tmp_path, store):
    whole = train(tmp_path, store, "whole")  # the uninterrupted reference, alongside
    killed = train(tmp_path, store, "killed")
    step = kill_past_a_checkpoint(killed, tmp_path / "killed")
    assert step < STEPS and max(r["step"] for r in logged(tmp_path / "killed")) > step
    resumed = train(tmp_path, store, "killed", "--resume")
    assert resumed.wait(60) == 0, resumed.stderr.read().decode()[-2000:]
    assert whole.wait(60) == 0, whole.stderr.read().decode()[-2000:]

    def rows(run):
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in logged(tmp_path / run)]

    assert [r["step"] for r in rows("killed")] == list(range(1, STEPS + 1))
    assert rows("killed") == rows("whole")
    a = load_file(str(tmp_path / "whole" / "final" / "sae.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "sae.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
