import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from interp._io import sha256_file
from saes.config import SAEConfig, TrainConfig
from saes.sae import SAE, SAELoadError
from saes.trainer import DataExhaustedError, NonFiniteLossError, Trainer

D, N_FEAT = 12, 48


def synthetic(skip=0, batch=64, seed=1):
    """Sparse combinations of fixed unit directions plus an offset: an SAE can recover them."""
    feats = torch.randn(N_FEAT, D, generator=torch.Generator().manual_seed(0))
    feats /= feats.norm(dim=-1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    i = 0
    while True:
        on = (torch.rand(batch, N_FEAT, generator=g) < 0.06).float()
        x = (on * torch.rand(batch, N_FEAT, generator=g) * 3) @ feats + 0.5
        if i >= skip:
            yield x
        i += 1


def cfg(**kw):
    base = dict(
        total_steps=40,
        batch_size=64,
        lr=3e-3,
        lr_warmup_steps=5,
        lr_decay_steps=10,
        log_every=5,
        checkpoint_every=10,
        dead_after_tokens=640,
        init_batches=2,
    )
    return TrainConfig(**{**base, **kw})


def sae(act="topk", **kw):
    return SAE(
        SAEConfig(
            d_in=D, d_sae=64, activation=act, k=4, normalize_activations="expected_norm", **kw
        ),
        seed=0,
    )


@pytest.mark.parametrize("act", ["topk", "batchtopk", "jumprelu", "relu"])
def test_training_learns_and_logs(tmp_path, act):
    c = cfg(total_steps=150, sparsity_coefficient={"relu": 0.05, "jumprelu": 0.01}.get(act, 0.0))
    Trainer(c, sae(act), synthetic, run_dir=tmp_path, progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 150 and rows[-1]["explained_variance"] > 0.6
    assert rows[-1]["loss"] < rows[0]["loss"]
    loaded = SAE.load(tmp_path / "final")
    assert (tmp_path / "final" / "run.json").exists()
    assert loaded.cfg.normalize_activations == "none"  # the scale was folded in


def test_schedules():
    t = Trainer(
        cfg(
            total_steps=100,
            lr=1.0,
            lr_warmup_steps=10,
            lr_decay_steps=20,
            sparsity_coefficient=2.0,
            sparsity_warmup_steps=4,
        ),
        sae(),
        synthetic(),
        progress=False,
    )
    assert [t.lr_at(s) for s in (0, 9, 50, 80, 99)] == [0.1, 1.0, 1.0, 1.0, 0.05]
    assert [t.sparsity_at(s) for s in (0, 3, 10)] == [0.5, 2.0, 2.0]


def killed_at(step):
    def data(skip=0):
        for i, x in enumerate(synthetic(skip), start=skip):
            if i == step:
                raise KeyboardInterrupt(f"killed before batch {step}")
            yield x

    return data


@pytest.mark.parametrize("act", ["topk", "jumprelu"])  # jumprelu: θ trained directly
def test_resume_is_bit_exact_on_cpu(tmp_path, act):
    c = cfg(sparsity_coefficient=0.01 if act == "jumprelu" else 0.0)
    whole = Trainer(c, sae(act), synthetic, run_dir=tmp_path / "a", progress=False).fit()
    assert act != "jumprelu" or "act.threshold_param" in whole.state_dict()
    with pytest.raises(KeyboardInterrupt):
        Trainer(c, sae(act), killed_at(23), run_dir=tmp_path / "b", progress=False).fit()
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text() == "step_0000020"
    resumed = Trainer.resume(tmp_path / "b", synthetic, progress=False)
    assert resumed.step == 20
    resumed.fit()
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.sae.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_fast_forwards_a_plain_iterator(tmp_path):
    whole = Trainer(cfg(), sae(), synthetic(), run_dir=tmp_path / "a", progress=False).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), sae(), killed_at(12)(), run_dir=tmp_path / "b", progress=False).fit()
    resumed = Trainer.resume(tmp_path / "b", synthetic(), progress=False)
    assert resumed.step == 10
    resumed.fit()
    assert all(
        torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.sae.parameters(), strict=True)
    )


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    def poisoned(skip=0):
        for i, x in enumerate(synthetic(skip)):
            if i + skip == 15:
                x = x.clone()
                x[3, 2] = float("inf")
            yield x

    t = Trainer(cfg(), sae(), poisoned, run_dir=tmp_path, progress=False)
    with pytest.raises(NonFiniteLossError, match="step 15"):
        t.fit()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_0000010"
    assert SAE.load(tmp_path / "checkpoints" / "step_0000010")  # intact and loadable


def test_width_mismatch_is_refused():
    def wrong(skip=0):
        while True:
            yield torch.randn(64, D + 1)

    with pytest.raises(ValueError, match="d_in=12"):
        Trainer(cfg(init_batches=1), sae(), wrong, progress=False).fit()


def test_dead_latents_are_tracked_and_get_the_aux_loss(tmp_path):
    def hobbled():
        s = sae(encoder_init_norm=1.0)  # live codes well above the hobbled latents' 0.01
        with (
            torch.no_grad()
        ):  # half the latents see nothing and sit just above zero: they never win the top-k
            s.W_enc[:, 32:] = 0.0
            s.b_enc[32:] = 0.01
        return s

    quiet = Trainer(
        cfg(total_steps=30, checkpoint_every=0, aux_coefficient=0.0),
        hobbled(),
        synthetic,
        progress=False,
    )
    quiet.fit()
    dead = quiet.dead_mask()
    assert dead[32:].float().mean() > 0.8 and not dead[:32].any() and quiet.tokens_seen == 30 * 64
    cols = torch.nonzero(dead).flatten()
    before = hobbled().W_enc[:, 32:].clone()
    aux = Trainer(
        cfg(total_steps=30, checkpoint_every=0, aux_coefficient=1.0),
        hobbled(),
        synthetic,
        run_dir=tmp_path,
        progress=False,
    )
    aux.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (
        rows[0]["aux_loss"] == 0.0 and rows[-1]["aux_loss"] > 0
    )  # dead after 640 tokens, then aux-k
    trained = (aux.sae.W_enc[:, cols] != before[:, cols - 32]).any(0)
    assert trained.sum() >= aux.k_aux  # the aux loss trains dead latents
    assert torch.equal(
        quiet.sae.W_enc[:, cols], before[:, cols - 32]
    )  # without it nothing reaches them


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, torch, torch.distributed as dist
        sys.path.insert(0, {os.getcwd()!r})
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_trainer import cfg, sae, synthetic
        from saes.trainer import Trainer
        if "RANK" in os.environ:
            dist.init_process_group("gloo")
        t = Trainer(cfg(total_steps=25, checkpoint_every=0), sae(), synthetic, progress=False)
        t.fit()
        if t.rank == 0:
            torch.save({{k: v.clone() for k, v in t.sae.state_dict().items()}}, sys.argv[1])
        if dist.is_initialized():
            dist.destroy_process_group()
    """)
    (tmp_path / "dp.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(tmp_path / "dp.py"), str(tmp_path / "one.pt")], check=True, env=env
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(tmp_path / "dp.py"),
            str(tmp_path / "two.pt"),
        ],
        check=True,
        env=env,
    )
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)


def test_sparse_path_trains_like_the_dense_reference():
    runs = {}
    for path in ("on", "off"):
        c = cfg(total_steps=15, checkpoint_every=0, dead_after_tokens=320, sparse_path=path)
        t = Trainer(c, sae(), synthetic, progress=False)
        assert t.sparse == (path == "on")
        runs[path] = t.fit()
    pairs = zip(runs["on"].state_dict().items(), runs["off"].state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_sparse_path_refuses_other_activations():
    with pytest.raises(ValueError, match="needs a topk SAE"):
        Trainer(cfg(sparse_path="on"), sae("relu"), synthetic(), progress=False)


def test_running_out_of_data_is_a_clear_error(tmp_path):
    finite = list(itertools.islice(synthetic(), 12))
    with pytest.raises(DataExhaustedError, match="ran out after 12 steps"):
        Trainer(cfg(), sae(), iter(finite), run_dir=tmp_path, progress=False).fit()
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_0000010"


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def killed_run(tmp_path):
    """Killed before batch 28: checkpoints at 10 and 20, the log has step 25 past the latest."""
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), sae(), killed_at(28), run_dir=tmp_path, progress=False).fit()
    return tmp_path / "checkpoints" / "step_0000020"


@pytest.mark.parametrize("name", ["sae.safetensors", "optimizer.pt", "last_fired.safetensors"])
def test_a_flipped_byte_in_a_checkpoint_is_refused_by_name(tmp_path, name):
    ckpt = killed_run(tmp_path)
    recorded = json.loads((ckpt / "checksums.json").read_text())["sha256"][name]
    flip_last_byte(ckpt / name)
    with pytest.raises(SAELoadError, match=f"{name}.*sha256") as err:
        Trainer.resume(tmp_path, synthetic, progress=False)
    msg = str(err.value)
    assert recorded in msg and sha256_file(ckpt / name) in msg
    assert "step_0000010" in msg and "--resume" in msg  # what to do: fall back to the earlier one


def test_after_deleting_a_corrupt_checkpoint_resume_uses_the_earlier_one(tmp_path):
    whole = Trainer(cfg(), sae(), synthetic, run_dir=tmp_path / "a", progress=False).fit()
    ckpt = killed_run(tmp_path / "b")
    flip_last_byte(ckpt / "sae.safetensors")
    shutil.rmtree(ckpt)
    with pytest.warns(UserWarning, match="step_0000010"):
        resumed = Trainer.resume(tmp_path / "b", synthetic, progress=False)
    assert resumed.step == 10
    resumed.fit()
    assert all(
        torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.sae.parameters(), strict=True)
    )


def test_a_checkpoint_without_checksums_loads_with_a_warning(tmp_path):
    ckpt = killed_run(tmp_path)
    (ckpt / "checksums.json").unlink(missing_ok=True)  # as written before checksums existed
    with pytest.warns(UserWarning, match="no checksums"):
        assert Trainer.resume(tmp_path, synthetic, progress=False).step == 20


def test_final_sae_carries_checksums(tmp_path):
    from saes.trainer import verify_checkpoint

    Trainer(cfg(total_steps=15), sae(), synthetic, run_dir=tmp_path, progress=False).fit()
    sums = json.loads((tmp_path / "final" / "checksums.json").read_text())["sha256"]
    assert {"cfg.json", "sae.safetensors", "run.json"} <= set(sums)
    assert all(sha256_file(tmp_path / "final" / n) == d for n, d in sums.items())
    flip_last_byte(tmp_path / "final" / "sae.safetensors")
    with pytest.raises(SAELoadError, match="sae.safetensors"):
        verify_checkpoint(tmp_path / "final")
    with pytest.raises(SAELoadError, match="sae.safetensors is corrupted: its sha256"):
        SAE.load(tmp_path / "final")  # plain loading checks too


def test_saving_over_a_checkpoint_rewrites_its_checksums(tmp_path):
    Trainer(cfg(total_steps=15), sae(), synthetic, run_dir=tmp_path, progress=False).fit()
    edited = SAE.load(tmp_path / "final")
    with torch.no_grad():
        edited.b_dec.add_(1.0)
    edited.save(tmp_path / "final")
    torch.testing.assert_close(SAE.load(tmp_path / "final").b_dec, edited.b_dec)


def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path):
    Trainer(cfg(), sae(), synthetic, run_dir=tmp_path / "a", progress=False).fit()
    killed_run(tmp_path / "b")
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 2')  # a line torn by the kill
    Trainer.resume(tmp_path / "b", synthetic, progress=False).fit()

    def steps(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines]

    assert steps("b") == steps("a") == list(range(5, 41, 5))


def test_batchtopk_threshold_is_calibrated_on_the_last_batches_only():
    # After the last step the threshold is the smallest value BatchTopK keeps on the last
    # calibration_batches batches (as one batch) under the final weights; 0 keeps the average.
    def run(n):
        c = cfg(calibration_batches=n, checkpoint_every=0)
        return Trainer(c, sae("batchtopk"), synthetic(), progress=False).fit()

    running, calibrated = run(0), run(3)
    for a, b in zip(running.parameters(), calibrated.parameters(), strict=True):
        assert torch.equal(a, b)  # calibration changes no weight
    last = torch.cat(list(itertools.islice(synthetic(), 40))[-3:])
    kept = calibrated.pre_acts(last).detach().relu().flatten().topk(4 * 3 * 64).values
    assert float(calibrated.act.threshold) == float(kept.min())
    assert float(running.act.threshold) != float(kept.min())
