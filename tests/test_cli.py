import json

import pytest
import torch

from interp.store import ActivationStore
from saes.__main__ import main, parse_overrides
from saes.config import ConfigError
from saes.sae import SAE


@pytest.fixture()
def store(tmp_path, tiny_model):
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (8,), generator=g) for _ in range(64)]
    return ActivationStore.write(
        tmp_path / "store",
        tiny_model,
        "blocks.1.hook_resid_post",
        contexts,
        context_size=8,
        shard_tokens=128,
    )


def config(tmp_path, store, **train):
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "sae": {"d_sae": 32, "k": 4},
        "train": {
            "total_steps": 12,
            "batch_size": 32,
            "checkpoint_every": 5,
            "log_every": 2,
            **train,
        },
        "data": {"store": str(store.path)},
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def test_train_from_a_config_file_with_overrides(tmp_path, store):
    path = config(tmp_path, store)
    assert main(["train", "--config", str(path), "--no-progress", "train.lr=0.001", "sae.k=3"]) == 0
    sae = SAE.load(tmp_path / "run" / "final")
    assert sae.cfg.d_in == 16 and sae.cfg.k == 3  # d_in taken from the store
    assert sae.cfg.metadata["hook"] == "blocks.1.hook_resid_post"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["lr"] == 0.001
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 12


def test_existing_run_needs_resume(tmp_path, store, capsys):
    path = config(tmp_path, store)
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    before = (tmp_path / "run" / "final" / "sae.safetensors").read_bytes()
    assert main(["train", "--config", str(path), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "final" / "sae.safetensors").read_bytes() == before  # nothing lost
    assert main(["train", "--config", str(path), "--no-progress", "--resume"]) == 0


def test_bad_configs(tmp_path, store, capsys):
    path = config(tmp_path, store)
    assert main(["train", "--config", str(path), "--no-progress", "train.batchsize=3"]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--no-progress", "sae.d_in=17"]) == 2
    assert "width 16" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--no-progress", "sae.k=32"]) == 2
    assert "k must satisfy" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.json")]) == 2
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_overrides(["lr=3"])
    assert parse_overrides(["data.store=runs/x", "train.betas=[0.9, 0.99]"]) == {
        "data": {"store": "runs/x"},
        "train": {"betas": [0.9, 0.99]},
    }


def test_eval_writes_a_report(tmp_path, store, tiny_model, capsys):
    path = config(tmp_path, store)
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--batches",
                "2",
                "--batch-size",
                "32",
                "--ce-contexts",
                "0",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (
        report["reconstruction"]["l0"] <= 4
        and 0 < report["reconstruction"]["explained_variance"] <= 1
    )
    assert json.loads(capsys.readouterr().out)["store"] == str(store.path)
    g = torch.Generator().manual_seed(5)
    other = ActivationStore.write(
        tmp_path / "other",
        tiny_model,
        "blocks.1.hook_resid_post",
        [torch.randint(0, 50, (8,), generator=g) for _ in range(8)],
        context_size=8,
        shard_tokens=128,
    )
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--store",
                str(other.path),
                "--batch-size",
                "16",
                "--ce-contexts",
                "0",
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "eval_other.json").exists()
    assert main(["eval", str(tmp_path)]) == 2  # not a run


def test_train_says_where_the_sae_went(tmp_path, store, capsys):
    assert main(["train", "--config", str(config(tmp_path, store)), "--no-progress"]) == 0
    out = capsys.readouterr().out
    final = str(tmp_path / "run" / "final")
    assert f"saved the SAE to {final}" in out
    assert f"SAE.load({final!r})" in out and "python -m saes eval" in out


def eval_args(tmp_path, *extra):
    return ["eval", str(tmp_path / "run"), "--batches", "2", "--batch-size", "32", *extra]


def test_eval_prints_a_table_and_warns_in_sample(tmp_path, store, tiny_model, capsys):
    assert main(["train", "--config", str(config(tmp_path, store)), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(eval_args(tmp_path, "--ce-contexts", "0")) == 0
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert "in-sample" in captured.err and str(store.path) in captured.err
    assert report["in_sample"] is True
    rows = [line.split(" | ") for line in captured.out.splitlines() if " | " in line]
    table = {k.strip(): v.strip() for k, v in rows}
    assert table["metric"] == "value" and table["store"] == f"{store.path} (training store)"
    ev = report["reconstruction"]["explained_variance"]
    assert table["explained variance"] == f"{ev:.4f}"
    assert table["dead latents"].endswith("%") and "tokens evaluated" in table
    assert len({len(k) for k, _ in rows}) == 1  # the bars line up
    g = torch.Generator().manual_seed(5)
    other = ActivationStore.write(
        tmp_path / "heldout",
        tiny_model,
        "blocks.1.hook_resid_post",
        [torch.randint(0, 50, (8,), generator=g) for _ in range(8)],
        context_size=8,
        shard_tokens=128,
    )
    assert main(eval_args(tmp_path, "--ce-contexts", "0", "--store", str(other.path))) == 0
    captured = capsys.readouterr()
    assert "in-sample" not in captured.err and "held-out" in captured.out


def test_the_table_shows_ce_numbers_in_units():
    from saes.__main__ import format_report

    rec = {"n_tokens": 4096, "l0": 31.5, "mse": 0.25, "explained_variance": 0.9, "fvu": 0.1,
           "cosine_similarity": 0.95, "dead_fraction": 0.0125, "dense_fraction": 0.0,
           "dense_threshold": 0.1}  # fmt: skip
    ce = {"n_contexts": 16, "ce_clean": 3.0, "ce_sae": 3.25, "ce_zero": 8.0,
          "loss_recovered": 0.95, "kl_sae": 0.2, "kl_zero": None}  # fmt: skip
    report = {"hook": "blocks.3.hook_resid_post", "store": "s", "in_sample": False}
    lines = format_report({**report, "reconstruction": rec, "ce": ce}).splitlines()
    table = dict(line.split(" | ") for line in lines if " | " in line)
    table = {k.strip(): v for k, v in table.items()}
    assert table["CE loss recovered"] == "95.00%" and table["dead latents"] == "1.25%"
    assert table["CE loss, SAE spliced (nats)"] == "3.2500" and table["tokens evaluated"] == "4,096"
    assert table["KL to clean, zero-ablated (nats)"] == "n/a"  # NaN in the report
    assert table["dense latents (on > 10% of tokens)"] == "0.00%"


def test_eval_refuses_a_corrupted_final_sae(tmp_path, store, capsys):
    assert main(["train", "--config", str(config(tmp_path, store)), "--no-progress"]) == 0
    weights = tmp_path / "run" / "final" / "sae.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(eval_args(tmp_path, "--ce-contexts", "0")) == 2
    err = capsys.readouterr().err
    assert "sae.safetensors" in err and "sha256" in err


@pytest.mark.slow
def test_train_streaming_from_the_model(tmp_path, smollm2):
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "sae": {"d_sae": 64, "k": 4},
        "train": {"total_steps": 3, "batch_size": 256, "init_batches": 1, "log_every": 1},
        "data": {
            "model": "smollm2-135m",
            "hook": "blocks.2.hook_resid_post",
            "max_tokens": 2048,
            "context_size": 64,
        },
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    sae = SAE.load(tmp_path / "run" / "final")
    assert sae.cfg.d_in == 576 and sae.cfg.metadata["hook"] == "blocks.2.hook_resid_post"
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2, 3]
