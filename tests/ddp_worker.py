"""One rlhfkit stage on a few lab rows, run by every process of ``torchrun`` (launched by tests/test_distributed.py).

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29511 tests/ddp_worker.py sft OUT --model M
    ... tests/ddp_worker.py reward OUT --model SFT_MODEL
    ... tests/ddp_worker.py ppo OUT --model SFT_MODEL --reward-model RM_MODEL
    ... tests/ddp_worker.py grpo OUT --model SFT_MODEL --reward-model RM_MODEL

The stage trains in ``OUT/run`` (its ``output_dir``). Every process then writes ``OUT/rank{R}.json``: what it saw
of the process group (rank, world size, ``accelerator.num_processes``, backend), its log history, a digest of
each tensor of its final trained weights, and stage-specific evidence (the prompts a PPO rank sampled, the size of
its share of the data). The test compares the ranks' files: nothing is asserted here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # two processes on two cores: one thread each

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from rlhfkit import lab  # noqa: E402
from rlhfkit.core.io import write_text  # noqa: E402

COMMON = {"report_to": [], "seed": 0, "disable_tqdm": True, "logging_steps": 1, "save_strategy": "no"}
SFT_ROWS, RM_ROWS, PER_DEVICE = 64, 64, 4


def digest(module: torch.nn.Module) -> dict[str, str]:
    """State-dict name -> blake2b of the tensor's exact bytes (comparable with a saved safetensors file)."""
    out = {}
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        out[name] = hashlib.blake2b(t.reshape(-1).view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
    return out


def group_info(num_processes: int) -> dict:
    import torch.distributed as dist

    return {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "backend": dist.get_backend(),
        "num_processes": num_processes,
        "env_rank": int(os.environ["RANK"]),
    }


class Record(TrainerCallback):
    """Captures, on every process, the group, the size of this rank's dataloader and the final weights."""

    def __init__(self):
        self.data: dict = {}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        from accelerate.state import AcceleratorState

        self.data.update(group_info(AcceleratorState().num_processes))
        self.data["args_world_size"] = args.world_size
        self.data["use_cpu"] = args.use_cpu
        if train_dataloader is not None:
            self.data["local_batches_per_epoch"] = len(train_dataloader)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.data["final_weights"] = digest(model)


class WriteAudit:
    """Every write this process makes under ``root`` (Python audit events): files opened for writing, folders
    made, renames and deletions, as ``[event, path relative to root]``. Writes done in native code without
    Python's ``open`` (safetensors, ``torch.save``) are not seen; the folders and JSON files beside them are."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root: Path):
        self.root = str(root.resolve())
        self.events: list[list[str]] = []
        sys.addaudithook(self)

    def _rel(self, path) -> str | None:
        if not isinstance(path, str | bytes | os.PathLike):
            return None
        path = os.path.abspath(os.fsdecode(path))
        return os.path.relpath(path, self.root) if path.startswith(self.root + os.sep) else None

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & self.WRITE_FLAGS
            paths = [path] if writes else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = [args[0]]
        elif event == "os.rename":
            paths = [args[0], args[1]]
        else:
            return
        rel = [r for r in map(self._rel, paths) if r is not None]
        if rel:
            self.events.append([event, *rel])


def majority_pairs(n: int) -> list[dict]:
    pool = lab.LabelerPool(5, noise=0.2, seed=0)
    rows = []
    for r in lab.comparison_dataset(n, pool, seed=1):
        votes = np.array(r["votes"])
        a_wins = (votes == 1).sum() > (votes == 0).sum()
        chosen, rejected = (r["response_a"], r["response_b"]) if a_wins else (r["response_b"], r["response_a"])
        rows.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return rows


# ---------------------------------------------------------------------------------------------- stages
def run_sft(out: Path, model: str) -> dict:
    from trl import SFTConfig

    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.sft import run_sft

    # save_steps=4: one Trainer checkpoint during the run (optimizer, per-rank RNG states) besides model/.
    cfg = trainer_config(SFTConfig, "sft", out, max_steps=4, per_device_train_batch_size=PER_DEVICE,
                       learning_rate=3e-3, **{**COMMON, "save_strategy": "steps", "save_steps": 4})  # fmt: skip
    record = Record()
    result = run_sft(model, lab.demonstrations(SFT_ROWS, 0), cfg, callbacks=[record])
    return {**record.data, "rows": SFT_ROWS, "per_device": PER_DEVICE, "log_history": result.log_history}


def run_reward(out: Path, model: str) -> dict:
    from trl import RewardConfig

    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.reward.trainer import run_reward

    cfg = trainer_config(RewardConfig, "reward", out, max_steps=4, per_device_train_batch_size=PER_DEVICE,
                       learning_rate=1e-3, **COMMON)  # fmt: skip
    record = Record()
    result = run_reward(model, majority_pairs(RM_ROWS), cfg, callbacks=[record])
    return {**record.data, "rows": RM_ROWS, "per_device": PER_DEVICE, "log_history": result.log_history}


def run_ppo(out: Path, model: str, reward_model: str, use_cpu: bool | None = None) -> dict:
    """rlhfkit's PPOTrainer assembled as recipes/ppo.py does: separate layout, monitors on, main process saves."""
    from rlhfkit.core.io import atomic_path
    from rlhfkit.models.loading import MODEL_SUBDIR
    from rlhfkit.monitors import build_monitors
    from rlhfkit.rl.ppo.config import PPOConfig
    from rlhfkit.rl.ppo.layouts import load_ppo_models
    from rlhfkit.rl.ppo.trainer import PPOTrainer

    args = PPOConfig(
        output_dir=str(out),
        # 4 prompts per process and update, in 2 micro-batches: gradients are synchronised only at the last one.
        per_device_train_batch_size=PER_DEVICE // 2,
        gradient_accumulation_steps=2,
        num_ppo_epochs=2,
        total_episodes=2 * PER_DEVICE * 2,  # two updates of 2 processes x 4 prompts
        response_length=8,
        local_rollout_forward_batch_size=PER_DEVICE,
        learning_rate=1e-3,
        stop_token="eos",
        num_sample_generations=0,
        use_cpu=use_cpu,  # None: from the hardware
        **{**COMMON, "save_strategy": "steps", "save_steps": 2},  # checkpoint-2: PPO's own checkpoint files
    )
    models = load_ppo_models(model, reward_model, preset="full")
    trainer = PPOTrainer(args, train_dataset=lab.make_prompts(32, seed=0), **models)
    for callback in build_monitors(trainer=trainer):
        trainer.add_callback(callback)
    sampled: list[list[int]] = []  # indices of the prompts this rank rolled out, per update
    local: list[dict[str, float]] = []  # this rank's own statistics of each rollout, before any gathering
    rollout = trainer._rollout

    def recorded_rollout(indices):
        batch = rollout(indices)
        sampled.append([int(i) for i in indices])
        lengths = batch.mask.sum(1).float()
        local.append({"scores": batch.raw_scores.mean().item(), "mean_length": lengths.mean().item()})
        return batch

    trainer._rollout = recorded_rollout
    trainer.train()
    if trainer.accelerator.is_main_process:
        with atomic_path(out / MODEL_SUBDIR) as tmp:
            trainer.save_model(str(tmp))
    trainer.accelerator.wait_for_everyone()
    return {
        **group_info(trainer.accelerator.num_processes),
        "use_cpu": args.use_cpu,
        "local_batch_size": trainer.local_batch_size,
        "batch_size": trainer.batch_size,
        "sampled_indices": sampled,
        "local_rollout_stats": local,
        "log_history": trainer.state.log_history,
        "final_weights": digest(trainer.policy),
        "final_value_weights": digest(trainer.model.value_model),
    }


def run_grpo(out: Path, model: str, reward_model: str) -> dict:
    from rlhfkit.rl.configs import grpo_config
    from rlhfkit.rl.grpo_rloo import run_grpo

    cfg = grpo_config(out, max_steps=2, per_device_train_batch_size=PER_DEVICE, num_generations=4,
                      max_completion_length=8, learning_rate=1e-3, **COMMON)  # fmt: skip
    record = Record()
    result = run_grpo(model, lab.make_prompts(32, seed=0), cfg, reward_model=reward_model, callbacks=[record])
    return {**record.data, "log_history": result.log_history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("sft", "reward", "ppo", "grpo"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--reward-model")
    parser.add_argument("--use-cpu", choices=("true", "false"), help="ppo only: PPOConfig.use_cpu (default: None)")
    a = parser.parse_args()
    run_dir = a.out / "run"
    audit = WriteAudit(run_dir)
    if a.stage in ("sft", "reward"):
        data = {"sft": run_sft, "reward": run_reward}[a.stage](run_dir, a.model)
    elif a.stage == "ppo":
        data = run_ppo(run_dir, a.model, a.reward_model, None if a.use_cpu is None else a.use_cpu == "true")
    else:
        data = run_grpo(run_dir, a.model, a.reward_model)
    data["writes"] = audit.events
    write_text(a.out / f"rank{os.environ['RANK']}.json", json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
