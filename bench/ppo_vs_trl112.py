"""Peer benchmark: rlhfkit's PPOTrainer against TRL 1.12's experimental PPOTrainer, side by side, on the CPU.

    python bench/ppo_vs_trl112.py                 # ~5 min on 2 cores; --updates / --hidden to change the size

TRL deleted its PPOTrainer in 1.13, so the peer runs in a side virtual environment (``--venv``, default
``/tmp/rlhfkit-trl112-venv``; created on first use, reused after) holding ``trl==1.12.0`` with the same torch,
transformers and accelerate versions as this one (no ``--system-site-packages``: TRL 1.16 would shadow 1.12).

Identical inputs for all runs: one tiny random Llama policy (saved once, loaded by every run), a random one-label
reward model, the value model initialised from it, the lab's prompts, and TRL 1.12's hyperparameter names with the
same values (batch 32 = 8 x 4 accumulation, one mini-batch, 4 PPO epochs, response 16 tokens, EOS stop,
temperature 1, kl_coef 0.05, fp32, one thread). Gradient clipping is off in rlhfkit because TRL 1.12's loop never
clips. Three runs, each in its own process:

* ``trl112``: TRL 1.12, its only layout (policy, reference, reward, value: four models);
* ``separate``: rlhfkit, the same four models;
* ``shared``: rlhfkit's shared base: one base + policy / value LoRA adapters (r=16) + the reward model (separate).

Measured: seconds per update (median over updates after the first, which pays one-time costs), peak memory
above the process's footprint after imports (``ru_maxrss`` minus RSS before any model is built), and the reward
gain (mean ``objective/scores`` of the last 3 updates minus the first update's). Ratios are rlhfkit / TRL 1.12.
Goals: separate layout no slower per update (ratio <= 1), shared layout at most 0.6x the peer's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
PEER_REQUIREMENTS = ("trl==1.12.0", "pandas", "rich")  # pandas / rich: imported by TRL 1.12's PPO module


# ============================================================================================== shared inputs
def hyperparameters(updates: int) -> dict:
    """PPOConfig fields, identical for both trainers (TRL 1.12's names)."""
    return dict(
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        num_mini_batches=1,
        num_ppo_epochs=4,
        total_episodes=32 * updates,
        response_length=16,
        stop_token="eos",
        temperature=1.0,
        kl_coef=0.05,
        cliprange=0.2,
        vf_coef=0.1,
        cliprange_value=0.2,
        gamma=1.0,
        lam=0.95,
        learning_rate=3e-4,
        lr_scheduler_type="linear",
        local_rollout_forward_batch_size=32,
        num_sample_generations=0,
        bf16=False,
        fp16=False,
        use_cpu=True,
        seed=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def build_inputs(work: Path, hidden: int, layers: int) -> None:
    """Save the tokenizer, policy, reward model and prompts every run loads."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from rlhfkit.lab import build_tiny_model, make_prompts

    build_tiny_model(work / "lab", size="nano", seed=0)  # for its lab-trained BPE tokenizer (512 tokens)
    tok = AutoTokenizer.from_pretrained(work / "lab")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=128,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        num_labels=1,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    policy.generation_config.pad_token_id = tok.pad_token_id
    policy.generation_config.eos_token_id = tok.eos_token_id
    policy.save_pretrained(work / "policy")
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(work / "reward")
    for folder in ("policy", "reward"):
        tok.save_pretrained(work / folder)
    (work / "prompts.json").write_text(json.dumps(make_prompts(256, seed=0)))


# ============================================================================================== workers
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def worker(kind: str, work: Path, updates: int, threads: int) -> dict:
    """One run in this process; returns its measurements. ``trl112`` must not import rlhfkit (side venv)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )

    if kind == "trl112":
        from datasets import Dataset
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    else:
        import peft  # noqa: F401  (imported before the baseline, as the peer imports all it needs)

        from rlhfkit.rl.ppo.config import PPOConfig
        from rlhfkit.rl.ppo.layouts import build_shared_base
        from rlhfkit.rl.ppo.trainer import PPOTrainer
    torch.set_num_threads(threads)

    class Clock(TrainerCallback):
        def __init__(self):
            self.stamps, self.scores = [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                self.scores.append(float(logs["objective/scores"]))

    baseline = rss_mb()
    hp = hyperparameters(updates)
    tok = AutoTokenizer.from_pretrained(work / "policy")
    prompts = json.loads((work / "prompts.json").read_text())
    policy = AutoModelForCausalLM.from_pretrained(work / "policy")
    reward = AutoModelForSequenceClassification.from_pretrained(work / "reward", num_labels=1).requires_grad_(False)
    clock = Clock()
    out_dir = str(work / f"out-{kind}")
    if kind == "trl112":
        tok.padding_side = "left"  # TRL 1.12's PPO examples: left-padded queries
        ids = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in prompts]})
        ref = AutoModelForCausalLM.from_pretrained(work / "policy")
        value = AutoModelForSequenceClassification.from_pretrained(work / "reward", num_labels=1)
        args = PPOConfig(output_dir=out_dir, **hp)
        trainer = PPOTrainer(
            args=args,
            processing_class=tok,
            model=policy,
            ref_model=ref,
            reward_model=reward,
            train_dataset=ids,
            value_model=value,
            eval_dataset=ids.select(range(8)),
            callbacks=[clock],
        )
    else:
        args = PPOConfig(output_dir=out_dir, max_grad_norm=0.0, **hp)  # TRL 1.12 never clips gradients
        if kind == "separate":
            ref = AutoModelForCausalLM.from_pretrained(work / "policy").requires_grad_(False)
            value = AutoModelForSequenceClassification.from_pretrained(work / "reward", num_labels=1)
            trainer = PPOTrainer(args, tok, policy, ref, reward, prompts, value, callbacks=[clock])
        else:
            from peft import LoraConfig

            lora = LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
            )
            shared = build_shared_base(policy, lora)
            trainer = PPOTrainer(args, tok, shared, reward_model=reward, train_dataset=prompts, callbacks=[clock])
    trainer.train()
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    timed = sorted(steps[1:]) or steps
    return {
        "kind": kind,
        "updates": len(steps),
        "sec_per_update": timed[len(timed) // 2],
        "first_update_sec": steps[0],
        "peak_mb": peak_mb() - baseline,
        "baseline_mb": baseline,
        "score_first": clock.scores[0],
        "score_last3": sum(clock.scores[-3:]) / len(clock.scores[-3:]),
        "reward_gain": sum(clock.scores[-3:]) / len(clock.scores[-3:]) - clock.scores[0],
    }


# ============================================================================================== driver
def ensure_peer_venv(venv: Path) -> Path:
    """Create (or reuse) the side venv with TRL 1.12 and this environment's torch / transformers / accelerate."""
    import accelerate
    import datasets
    import torch
    import transformers

    python = venv / "bin" / "python"
    check = "import trl, sys; from trl.experimental.ppo import PPOTrainer; sys.exit(trl.__version__ != '1.12.0')"
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with trl==1.12.0 ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pins = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"accelerate=={accelerate.__version__}",
        f"datasets=={datasets.__version__}",
        *PEER_REQUIREMENTS,
    ]
    subprocess.run([python, "-m", "pip", "install", "-q", *pins], check=True)
    return python


def run_worker(python: Path, kind: str, work: Path, updates: int, threads: int) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    if kind != "trl112":
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(python), str(HERE), "--worker", kind, "--work", str(work), "--updates", str(updates)]
    proc = subprocess.run(cmd + ["--threads", str(threads)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--hidden", type=int, default=512, help="model width (multiple of 64)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (same for all)")
    p.add_argument("--venv", type=Path, default=Path("/tmp/rlhfkit-trl112-venv"))
    p.add_argument("--work", type=Path, default=Path("/tmp/rlhfkit-ppo-bench"))
    p.add_argument("--worker", choices=["trl112", "separate", "shared"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.work, a.updates, a.threads)), flush=True)
        return

    peer_python = ensure_peer_venv(a.venv)
    a.work.mkdir(parents=True, exist_ok=True)
    build_inputs(a.work, a.hidden, a.layers)
    results = {}
    for kind in ("trl112", "separate", "shared"):
        print(f"running {kind} ...", flush=True)
        results[kind] = run_worker(
            peer_python if kind == "trl112" else Path(sys.executable), kind, a.work, a.updates, a.threads
        )

    peer = results["trl112"]
    print(f"\nPPO, Llama {a.layers}x{a.hidden}, {a.updates} updates of 32 prompts, CPU, {a.threads} thread(s)")
    print(f"{'run':<10} {'s/update':>9} {'peak MB':>9} {'score 1st':>10} {'last 3':>8} {'gain':>7}")
    for kind, r in results.items():
        print(
            f"{kind:<10} {r['sec_per_update']:>9.3f} {r['peak_mb']:>9.1f} {r['score_first']:>10.3f} "
            f"{r['score_last3']:>8.3f} {r['reward_gain']:>7.3f}"
        )
    ratios = {
        "separate_time_ratio": results["separate"]["sec_per_update"] / peer["sec_per_update"],
        "shared_time_ratio": results["shared"]["sec_per_update"] / peer["sec_per_update"],
        "separate_memory_ratio": results["separate"]["peak_mb"] / peer["peak_mb"],
        "shared_memory_ratio": results["shared"]["peak_mb"] / peer["peak_mb"],
    }
    print("\nratios (rlhfkit / TRL 1.12):")
    for k, v in ratios.items():
        print(f"  {k:<24} {v:.3f}")
    print(f"  goal: separate time ratio <= 1.0: {'met' if ratios['separate_time_ratio'] <= 1.0 else 'MISSED'}")
    print(f"  goal: shared memory ratio <= 0.6: {'met' if ratios['shared_memory_ratio'] <= 0.6 else 'MISSED'}")
    (a.work / "results.json").write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
