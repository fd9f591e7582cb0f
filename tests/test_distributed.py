"""Real 2-process DDP on the CPU: ``torchrun --nproc_per_node 2`` (gloo) runs each stage in tests/ddp_worker.py.

The stages are chained as in the pipeline (nano model -> SFT -> reward model -> PPO / GRPO), a few steps each.
Every rank writes ``rank{R}.json`` (see the worker's docstring); the tests check that the processes really formed
one group of two, sharded the data, logged the same (all-reduced) metrics, ended with bit-identical weights, and
that only rank 0 wrote the outputs: ``model/`` once, complete, as safetensors, with no temporary names left.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_worker.py"
WORLD = 2
TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time", "eps"}
TIMING_PREFIX = "time/"  # PPO's per-update wall-clock seconds, per rank
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stage: str, out: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 tests/ddp_worker.py STAGE OUT ARGS`` on a free port; returns the finished run."""
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", port, str(WORKER), stage, str(out), *args]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",  # CPU DDP (gloo) even on a GPU machine, where rlhfkit would pick the GPU
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    # A new session: on a timeout the whole group (torchrun and its workers) is killed.
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the session this launch started
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun {stage} timed out after {timeout} s\n--- stderr ---\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def run_stage(stage: str, out: Path, *args: str) -> list[dict]:
    """Launch a stage that must succeed; return the ranks' records (rank 0 first)."""
    done = launch(stage, out, *args)
    assert done.returncode == 0, (
        f"torchrun {stage} failed (exit {done.returncode})\n--- stderr (workers) ---\n{done.stderr[-8000:]}"
        f"\n--- stdout ---\n{done.stdout[-2000:]}"
    )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def file_digest(model_dir: Path) -> dict[str, str]:
    """Tensor name -> blake2b of its bytes in ``model.safetensors`` (the worker's ``digest`` of the same tensors)."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(model_dir / "model.safetensors")
    return {
        name: hashlib.blake2b(t.reshape(-1).view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
        for name, t in tensors.items()
    }


# ---------------------------------------------------------------------------------------------- shared checks
def assert_one_group_of_two(ranks: list[dict]) -> None:
    for r, rec in enumerate(ranks):
        assert rec["rank"] == rec["env_rank"] == r
        assert rec["world_size"] == WORLD and rec["num_processes"] == WORLD, rec  # accelerator.num_processes == 2
        assert rec["backend"] == "gloo" and rec["use_cpu"] is True


def assert_same_logs(ranks: list[dict], required: tuple[str, ...]) -> list[dict]:
    """Every rank logged the same steps and values (timings aside); returns rank 0's training logs."""

    def numbers(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in TIMING_KEYS and not k.startswith(TIMING_PREFIX)}

    logs = [[numbers(row) for row in rec["log_history"]] for rec in ranks]
    assert logs[0] == logs[1], "the ranks logged different metrics: they are not all-reduced"
    steps = [row for row in logs[0] if any(k in row for k in required)]
    assert steps, f"no log row has any of {required}: {logs[0]}"
    for key in required:
        assert all(isinstance(row.get(key), float) and math.isfinite(row[key]) for row in steps), (key, steps)
    return steps


def assert_same_final_weights(ranks: list[dict], key: str = "final_weights") -> dict[str, str]:
    w0, w1 = ranks[0][key], ranks[1][key]
    assert w0 and w0.keys() == w1.keys()
    differ = sorted(n for n in w0 if w0[n] != w1[n])
    assert not differ, f"{len(differ)} of {len(w0)} tensors differ between ranks after training: {differ[:5]}"
    return w0


def assert_written_once_by_rank0(run: Path, ranks: list[dict], start_model: Path) -> None:
    """model/ is complete, equals the trained weights, was renamed into place once by rank 0, and rank 1 wrote
    nothing but its own checkpoint RNG file (Trainer makes each rank's checkpoint-N folder for it)."""
    model = run / "model"
    missing = [f for f in MODEL_FILES if not (model / f).is_file()]
    assert not missing, f"model/ lacks {missing}; it holds {sorted(p.name for p in model.iterdir())}"
    from transformers import AutoConfig

    AutoConfig.from_pretrained(model)  # a loadable config
    saved, trained = file_digest(model), ranks[0]["final_weights"]
    assert saved and set(saved) <= set(trained), sorted(set(saved) - set(trained))[:5]
    assert all(saved[n] == trained[n] for n in saved), "model/ does not hold the final trained weights"
    start = file_digest(start_model)
    assert any(saved[n] != start[n] for n in saved.keys() & start.keys()), "training changed no weight"

    renames = [e for e in ranks[0]["writes"] if e[0] == "os.rename" and e[-1] == "model"]
    assert len(renames) == 1, f"rank 0 renamed into model/ {len(renames)} times: {renames}"
    stray = [e for e in ranks[1]["writes"] if not (e[0] == "os.mkdir" and e[1].startswith("checkpoint-"))]
    assert not stray, f"rank 1 wrote into the output folder: {stray[:10]}"
    leftovers = [str(p.relative_to(run)) for p in run.rglob("*") if p.name.startswith((".", "tmp")) or
                 p.name.endswith(".tmp")]  # fmt: skip
    assert not leftovers, f"temporary files/folders left behind: {leftovers}"


def assert_checkpoint_complete(folder: Path, *names: str) -> None:
    expected = {*names, "trainer_state.json", "optimizer.pt", "scheduler.pt"} | {f"rng_state_{r}.pth" for r in
                                                                                 range(WORLD)}  # fmt: skip
    have = {p.name for p in folder.iterdir()}
    assert expected <= have, f"{folder.name} lacks {sorted(expected - have)}"


# ---------------------------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def sft_run(nano_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_sft")
    return out, run_stage("sft", out, "--model", str(nano_model))


@pytest.fixture(scope="module")
def reward_run(sft_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_reward")
    return out, run_stage("reward", out, "--model", str(sft_run[0] / "run" / "model"))


def _rl_args(sft_run, reward_run) -> list[str]:
    return ["--model", str(sft_run[0] / "run" / "model"), "--reward-model", str(reward_run[0] / "run" / "model")]


def assert_sharded(ranks: list[dict]) -> None:
    """Each rank's dataloader holds half the rows: the global batch is 2 x per_device_train_batch_size."""
    rec = ranks[0]
    expected = math.ceil(rec["rows"] / (WORLD * rec["per_device"]))
    assert [r["local_batches_per_epoch"] for r in ranks] == [expected] * WORLD


def test_sft_ranks_agree(sft_run, nano_model):
    out, ranks = sft_run
    assert_one_group_of_two(ranks)
    assert_sharded(ranks)
    steps = assert_same_logs(ranks, ("loss", "grad_norm"))
    assert len(steps) == 4 and steps[-1]["loss"] < steps[0]["loss"]  # 4 steps, logging_steps=1; it learns
    assert_same_final_weights(ranks)
    assert_written_once_by_rank0(out / "run", ranks, nano_model)
    assert_checkpoint_complete(out / "run" / "checkpoint-4", "model.safetensors")


def test_reward_ranks_agree(reward_run, sft_run):
    out, ranks = reward_run
    assert_one_group_of_two(ranks)
    assert_sharded(ranks)
    assert_same_logs(ranks, ("loss", "accuracy", "margin"))
    assert_same_final_weights(ranks)
    assert_written_once_by_rank0(out / "run", ranks, sft_run[0] / "run" / "model")


def test_ppo_ranks_agree_and_gather_metrics(sft_run, reward_run, tmp_path):
    ranks = run_stage("ppo", tmp_path, *_rl_args(sft_run, reward_run))
    assert_one_group_of_two(ranks)
    # Global batch = 2 x local: each update samples different prompts on each rank.
    assert [(r["local_batch_size"], r["batch_size"]) for r in ranks] == [(4, 8)] * WORLD
    p0, p1 = ranks[0]["sampled_indices"], ranks[1]["sampled_indices"]
    assert len(p0) == len(p1) == 2 and all(len(b) == 4 for b in p0 + p1)  # 2 updates x 4 prompts per rank
    assert all(len(set(a) | set(b)) == 8 for a, b in zip(p0, p1)), f"ranks sampled the same prompts: {p0} {p1}"
    # The logged metrics are gathered: the same on both ranks, and the mean of the ranks' own rollouts.
    steps = assert_same_logs(ranks, ("objective/kl", "objective/scores", "loss/policy_avg", "loss/value_avg"))
    assert len(steps) == 2 and [s["episode"] for s in steps] == [8, 16]
    local = [r["local_rollout_stats"] for r in ranks]
    for step, s0, s1 in zip(steps, *local):
        assert s0["scores"] != s1["scores"]  # different prompts, different scores
        assert step["objective/scores"] == pytest.approx((s0["scores"] + s1["scores"]) / 2, abs=1e-6)
        assert step["completions/mean_length"] == pytest.approx((s0["mean_length"] + s1["mean_length"]) / 2)
    assert_same_final_weights(ranks)
    assert_same_final_weights(ranks, "final_value_weights")
    run = tmp_path / "run"
    assert_written_once_by_rank0(run, ranks, sft_run[0] / "run" / "model")
    assert_checkpoint_complete(run / "checkpoint-2", "trainable.safetensors", "ppo_state.json")
    health = [json.loads(line) for line in (run / "health.jsonl").read_text().splitlines()]
    assert [h["step"] for h in health] == [1, 2]  # one timeline, one record per update (rank 0 only)
    assert [h["kl"] for h in health] == [s["objective/kl"] for s in steps]


def test_ppo_refuses_to_run_as_independent_copies(sft_run, reward_run, tmp_path):
    """use_cpu=False on a machine without a GPU (the launch hides every GPU): the accelerator does not join torchrun's
    group. PPO must stop instead of training two copies that overwrite each other's model/."""
    done = launch("ppo", tmp_path, *_rl_args(sft_run, reward_run), "--use-cpu", "false")
    assert done.returncode != 0, f"PPO trained as independent copies:\n{done.stderr[-3000:]}"
    assert "processes were launched (WORLD_SIZE) but the accelerator trains with 1" in done.stderr, done.stderr[-6000:]
    assert not (tmp_path / "run" / "model").exists()


def test_grpo_ranks_agree(sft_run, reward_run, tmp_path):
    ranks = run_stage("grpo", tmp_path, *_rl_args(sft_run, reward_run))
    assert_one_group_of_two(ranks)
    steps = assert_same_logs(ranks, ("loss", "reward", "kl", "completions/mean_length"))
    assert len(steps) == 2
    assert_same_final_weights(ranks)
    run = tmp_path / "run"
    assert_written_once_by_rank0(run, ranks, sft_run[0] / "run" / "model")
    health = [json.loads(line) for line in (run / "health.jsonl").read_text().splitlines()]
    assert [h["step"] for h in health] == [1, 2] and all(h["stage"] == "grpo" for h in health)
