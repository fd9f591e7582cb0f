"""Reward over-optimisation on the lab, caught by the default monitors and gate: a grid of PPO and GRPO runs.

    nice -n 19 .venv/bin/python bench/overoptimization.py --seeds 0 --threads 1     # one run (seed, threads)
    .venv/bin/python bench/overoptimization.py --algorithms grpo --biases 0.3 --seeds 0 --rewards single
    .venv/bin/python bench/overoptimization.py --seeds 0 1 --collect                  # the json of what finished

The lab has a gold reward (rlhfkit.lab.gold_reward), so Goodhart's law can be measured instead of argued. Per seed
an SFT nano model learns the list task; per labeler length bias and seed a reward ensemble (``--members`` reward
models, seeds seed..seed+K-1, plus a *validation member*, seed seed+K, held out of RL) learns from the majority votes
of 5 labelers who, with probability ``length_bias``, prefer the longer list (the demo pipeline's labelers and
agreement filtering otherwise). The *single* reward model is member 0; the *ensemble* rewards RL with
``mean_minus_std`` of members 0..K-1's standardised scores. Every cell of the grid, algorithm {ppo, grpo} x bias x
seed x reward {single, ensemble}, trains one RL run: the **warn-only twin**, every monitor ``stop`` turned into
``warn``, trained to the end with a checkpoint at every logged step (slimmed to the policy's weights). It gives the
whole gold / proxy curve and ``gold_final_unstopped``, and the **stopped** run a user gets -- identical to the twin up
to the stop -- is rebuilt from it for the default monitors (:func:`stopped_from_twin`, :func:`rebuild_returned`):
``stop_step``, ``averaged_steps`` and ``gold_returned``. ``--train-stopped`` also trains the stopped run and records
whether the rebuilt model equals it weight for weight (``trained_stopped``). ``bench/monitor_replay.py`` judges
other settings the same way, without training.

``--threads T`` sets torch's threads and ``OMP_NUM_THREADS`` for the whole run (SFT, reward models, RL): another
thread count makes other numbers, as another seed does, so the outputs go to ``<out>/t<T>/seed<S>/``.

Before RL the pipeline gates the reward model (``rlhfkit.reward.gate.rm_gate`` at its defaults, on the gold-labelled
held-out pairs its rm_eval stage scores; the record keeps the report). Where the gate refuses, ``rlhfkit run`` never
starts RL, so the record is what the user gets: the first stop is ``rm_gate`` at step 0 and the returned model is the
SFT model; the twin is still trained, and what the monitors alone did is kept under ``monitors_only``.

Gold and proxy are logged on the training batches (``rewards/gold/mean`` beside the reward; never optimised) and
smoothed with a centred moving average over ~:data:`SMOOTH_SAMPLES` sampled answers (GRPO: 3 logs of 5 steps x 64
completions; PPO: 15 updates of 64 prompts), so both algorithms' curves carry the same noise; ``gold_peak`` is the
smoothed curve's maximum, ``gold_smooth_se`` its standard error. Held-out scores sample ``--eval-prompts`` fresh lab
prompts at temperature 1 (the lab has only 72 distinct prompts; one model's score varies with std 0.0059 between
draws of 6000 prompts, 0.0125 at 1500); the validation member scores one answer per ``--check-prompts`` other prompts
(the do-no-harm check's signal, paired with the SFT policy's). Scores are cached beside each model. Results go to
``<out>/overoptimization-t<T>-s<seeds>.json``, each cell's ``record.json`` (with its curves) and a plot per cell.
Finished cells are skipped, so an interrupted grid resumes.

Deliberately left out: DPO / best-of-N, real models, and tuning RL hyperparameters per cell (one setting per
algorithm, with its KL coefficient at rlhfkit's default).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

SMOOTH_SAMPLES = 960  # sampled answers in the centred moving average of gold / proxy
MEMBERS = 3
GRPO = {"steps": 200, "lr": 5e-4, "beta": 0.2, "logging_steps": 5}  # the lab pipeline's GRPO, 3x longer
PPO = {"updates": 200, "lr": 1e-4, "kl_coef": 0.07}  # between the demo's 0.1 (never over-optimised) and 0.05 (at once)
RESPONSE_LENGTH = 24
EVAL_PROMPTS = 6000  # one model's held-out gold, std between 6 draws of prompts: 0.0125 at 1500, 0.0059 here
CHECK_PROMPTS = 512  # prompts of the do-no-harm check (rlhfkit.monitors.MonitorConfig.no_harm_prompts' default)
POLICY_FILE = "policy.safetensors"  # a slimmed twin checkpoint: the policy's weights alone


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench/overoptimization", help="output folder (models, runs, json)")
    p.add_argument("--algorithms", nargs="+", default=["ppo", "grpo"], choices=["ppo", "grpo"])
    p.add_argument("--biases", nargs="+", type=float, default=[0.3, 0.5], help="labelers' length bias")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--rewards", nargs="+", default=["single", "ensemble"], choices=["single", "ensemble"])
    p.add_argument("--members", type=int, default=MEMBERS, help="reward models in the ensemble")
    p.add_argument("--rm-steps", type=int, default=800, help="training steps of each reward model")
    p.add_argument("--coef", type=float, default=1.0, help="std weight of the ensemble's mean_minus_std")
    p.add_argument("--grpo-steps", type=int, default=GRPO["steps"])
    p.add_argument("--ppo-updates", type=int, default=PPO["updates"])
    p.add_argument("--eval-prompts", type=int, default=EVAL_PROMPTS, help="fresh prompts for each held-out gold score")
    p.add_argument("--unstopped-only", action="store_true", help="only the warn-only twins (to study the curves)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (and OMP_NUM_THREADS) of the whole run: SFT, reward models, RL; recorded, and "
        "the outputs go to <out>/t<threads>/seed<seed>/ so runs at 1 and 2 threads do not collide",
    )
    p.add_argument(
        "--check-prompts",
        type=int,
        default=CHECK_PROMPTS,
        help="held-out prompts the validation reward member scores (the do-no-harm check's signal)",
    )
    p.add_argument(
        "--train-stopped",
        action="store_true",
        help="also train the stopped run (it is otherwise rebuilt from its warn-only twin's checkpoints) "
        "and record whether the rebuilt returned model equals it, weight for weight",
    )
    p.add_argument(
        "--collect", action="store_true", help="train nothing: write the json from the finished runs (a partial grid)"
    )
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ recorders
def gold(prompts, completions, **kwargs):
    """The lab's gold reward of each completion (weight 0 / a metric: recorded, never optimised)."""
    from rlhfkit import lab

    return lab.gold_rewards(prompts, completions).tolist()


def items(prompts, completions, **kwargs):
    """Number of list items in each completion (the length the biased labelers rewarded)."""
    from rlhfkit import lab

    return [float(lab.count_items(c)) for c in completions]


# ------------------------------------------------------------------------------------------ SFT and reward models
COMMON = {"report_to": [], "lr_scheduler_type": "cosine", "warmup_steps": 10, "save_steps": 10_000,
          "logging_steps": 100, "disable_tqdm": True}  # fmt: skip


def sft_model(out: Path, seed: int, common: dict | None = None) -> Path:
    """The lab's SFT policy of ``seed`` (nano, 2000 demonstrations, 800 steps), trained once into ``<out>/sft``;
    ``common``: the trainer settings besides steps, batch and learning rate (default :data:`COMMON`)."""
    from trl import SFTConfig

    from rlhfkit import lab
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.sft import run_sft

    sft_dir = out / "sft" / "model"
    if not (sft_dir / "model.safetensors").exists():
        nano = lab.build_tiny_model(out / "nano", size="nano", seed=seed)
        cfg = trainer_config(SFTConfig, "sft", out / "sft", max_steps=800, per_device_train_batch_size=32,
                             learning_rate=3e-3, seed=seed, **(COMMON if common is None else common))  # fmt: skip
        run_sft(nano, lab.demonstrations(2000, seed), cfg)
    return sft_dir


@functools.cache  # the reward models' training pairs and the gate's held-out pairs: built once
def preferences(length_bias: float, seed: int):
    """The demo pipeline's preference data (its labelers, one unreliable, and agreement filtering) with labelers who
    prefer the longer list with probability ``length_bias``; ``.held_out`` are the gold-labelled pairs of rm_eval."""
    from rlhfkit import lab
    from rlhfkit.data.tables import lab_preferences

    pool = lab.LabelerPool(5, noise=[0.1, 0.15, 0.2, 0.25, 0.5], length_bias=length_bias, seed=seed)
    return lab_preferences(4000, pool, seed=seed, min_agreement=0.7)


def reward_ensemble(out: Path, sft_dir: Path, length_bias: float, seed: int, members: int, steps: int) -> Path:
    """Reward models from the demo pipeline's preference data with length-biased labelers: ``members + 1`` of them
    (seeds seed..seed+members), of which the first ``members`` are the RL ensemble (``model-rl/``; member 0 is the
    single one) and the last is the *validation member* (:func:`validation_member`), held out of RL: the signal
    the do-no-harm check judges by. Returns the RL ensemble's folder."""
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.reward.config import RewardConfig
    from rlhfkit.reward.ensemble import read_ensemble, write_ensemble
    from rlhfkit.reward.trainer import run_reward

    rm_out = out / f"rm-bias{length_bias:g}"
    if not (rm_out / "model" / "ensemble.json").exists():
        train = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in preferences(length_bias, seed).train]
        cfg = trainer_config(RewardConfig, "reward", rm_out, max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=1e-3, seed=seed, ensemble_size=members + 1, **COMMON)  # fmt: skip
        run_reward(sft_dir, train, cfg)
    rl_dir = rm_out / "model-rl"
    if not (rl_dir / "ensemble.json").exists():
        spec = json.loads((rm_out / "model" / "ensemble.json").read_text())
        write_ensemble(rl_dir, read_ensemble(rm_out / "model")[:members], spec["base_model"])
    return rl_dir


def validation_member(rl_dir: Path):
    """The reward ensemble's member held out of RL (:func:`reward_ensemble`): an EnsembleMember."""
    from rlhfkit.reward.ensemble import read_ensemble

    return read_ensemble(rl_dir.parent / "model")[-1]


def rm_gates(rm_dir: Path, length_bias: float, seed: int) -> dict[str, dict]:
    """The pipeline's gate before RL for the single reward model and the ensemble: ``rlhfkit.reward.gate.rm_gate`` at
    its defaults on the held-out pairs the demo pipeline's rm_eval stage scores (gold-labelled lab pairs), each
    scored as that stage scores it (the ensemble: the members' mean). A refused gate means ``rlhfkit run`` stops
    before the RL stage: the SFT model is what the user keeps. Each verdict keeps its report (``report``), so that
    ``bench/monitor_replay.py`` can judge other gate settings."""
    import dataclasses

    from rlhfkit.models.scoring import load_reward_function, load_scorer
    from rlhfkit.reward.ensemble import read_ensemble
    from rlhfkit.reward.evaluate import evaluate_ensemble, evaluate_reward_model
    from rlhfkit.reward.gate import rm_gate

    pairs = preferences(length_bias, seed).held_out
    model, tokenizer = load_scorer(str(read_ensemble(rm_dir)[0].model_dir))
    reports = {"single": evaluate_reward_model(model, tokenizer, pairs),
               "ensemble": evaluate_ensemble(load_reward_function(rm_dir), pairs).ensemble}  # fmt: skip
    gates = {}
    for reward, report in reports.items():
        verdict = rm_gate(report)
        gates[reward] = {"passed": verdict.passed, "summary": verdict.summary, "accuracy": report.accuracy,
                         "pairs": report.n_pairs, "pair_length_spearman": report.length_margin_spearman,
                         "report": dataclasses.asdict(report)}  # fmt: skip
    return gates


# ------------------------------------------------------------------------------------------ one RL run
def monitor_config(stop: bool):
    """The default monitors; the warn-only twin turns each ``stop`` action into ``warn``."""
    import dataclasses

    from rlhfkit.monitors import MonitorConfig

    cfg = MonitorConfig(health_extra_keys=["rewards/gold/mean", "rewards/items/mean"])
    if stop:
        return cfg
    stops = [f.name for f in dataclasses.fields(cfg) if f.name.endswith("_action") and getattr(cfg, f.name) == "stop"]
    return dataclasses.replace(cfg, **dict.fromkeys(stops, "warn"))


def rl_run(cell: dict, sft_dir: Path, rm_dir: Path, run_dir: Path, args, stop: bool):
    """Train one RL run; returns (RunResult, the monitor's timeline). The warn-only twin (``stop=False``) saves a
    checkpoint at every logged step (slimmed afterwards by :func:`slim_checkpoints`): a stopped run with any monitor
    setting returns an average of some of them (:func:`rebuild_returned`)."""
    from rlhfkit import lab
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.monitors import load_timeline
    from rlhfkit.reward.ensemble import read_ensemble
    from rlhfkit.rl.configs import grpo_config
    from rlhfkit.rl.grpo_rloo import run_grpo
    from rlhfkit.rl.ppo.config import PPOConfig
    from rlhfkit.rl.ppo.run import run_ppo

    seed = cell["seed"]
    members = read_ensemble(rm_dir)
    if cell["reward"] == "single":  # member 0 alone, normalised with its own statistics
        reward = {"reward_model": members[0].model_dir, "reward_mean": members[0].mean, "reward_std": members[0].std}
    else:
        reward = {"reward_model": rm_dir, "reward_aggregation": "mean_minus_std", "reward_ensemble_coef": args.coef}
    common = {"report_to": [], "seed": seed, "disable_tqdm": True, "save_total_limit": None}
    every_log = {"grpo": GRPO["logging_steps"], "ppo": 1}[cell["algorithm"]]
    save_steps = 10_000 if stop else every_log
    if cell["algorithm"] == "grpo":
        cfg = grpo_config(run_dir, beta=GRPO["beta"], learning_rate=GRPO["lr"], lr_scheduler_type="constant",
                          max_steps=args.grpo_steps,
                          per_device_train_batch_size=64, num_generations=8, max_completion_length=RESPONSE_LENGTH,
                          temperature=1.0, gradient_checkpointing=False, logging_steps=GRPO["logging_steps"],
                          save_steps=save_steps, **common)  # fmt: skip
        result = run_grpo(sft_dir, lab.make_prompts(args.grpo_steps * 8 + 64, seed=seed + 7), cfg,
                          reward_funcs=[gold, items], reward_weights=[1.0, 0.0, 0.0],
                          monitor_config=monitor_config(stop), **reward)  # fmt: skip
    else:
        cfg = trainer_config(PPOConfig, "ppo", run_dir, total_episodes=args.ppo_updates * 64,
                             per_device_train_batch_size=16, gradient_accumulation_steps=4, num_mini_batches=2,
                             learning_rate=PPO["lr"], kl_coef=PPO["kl_coef"], response_length=RESPONSE_LENGTH,
                             stop_token="eos", missing_eos_penalty=1.0, temperature=1.0, save_steps=save_steps,
                             num_sample_generations=0,
                             **common)  # fmt: skip
        result = run_ppo(sft_dir, lab.make_prompts(512, seed=seed + 7), cfg, metric_funcs=[gold, items],
                         monitor_config=monitor_config(stop), **reward)  # fmt: skip
    return result, load_timeline(run_dir)


def held_out_gold(model_dir: Path, seed: int, n: int) -> float:
    from rlhfkit import lab
    from rlhfkit.models.scoring import sample_responses

    prompts = lab.make_prompts(n, seed=10_000 + seed)
    return float(lab.gold_rewards(prompts, sample_responses(str(model_dir), prompts, RESPONSE_LENGTH, seed)).mean())


def check_scores(model_dir: Path, rl_dir: Path, seed: int, n: int) -> list[float]:
    """The validation member's standardised score of one sampled answer per check prompt (``n`` fresh lab prompts,
    other than the gold's): the label-free signal of the do-no-harm check, paired per prompt between models."""
    from rlhfkit import lab
    from rlhfkit.models.scoring import load_reward_function, sample_responses

    member = validation_member(rl_dir)
    prompts = lab.make_prompts(n, seed=20_000 + seed)
    texts = sample_responses(str(model_dir), prompts, RESPONSE_LENGTH, seed)
    return load_reward_function(member.model_dir, mean=member.mean, std=member.std)(prompts, texts)


def scored(model_dir: Path, cache: Path, seed: int, rl_dir: Path, args) -> dict:
    """``{"gold": held-out gold, "check": validation-member scores}`` of a model, cached in ``cache`` (measured
    again when the number of prompts differs)."""
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if data.get("eval_prompts") != args.eval_prompts:
        data.update(gold=held_out_gold(model_dir, seed, args.eval_prompts), eval_prompts=args.eval_prompts)
    if len(data.get("check", [])) != args.check_prompts:
        data["check"] = check_scores(model_dir, rl_dir, seed, args.check_prompts)
    cache.write_text(json.dumps(data) + "\n")
    return data


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def slim_checkpoints(run_dir: Path, algorithm: str) -> list[int]:
    """Reduce each ``checkpoint-N`` of a finished warn-only twin to its policy's weights (:data:`POLICY_FILE`: PPO's
    ``policy.*`` trainable tensors, GRPO's ``model.safetensors``); returns the steps."""
    from safetensors.torch import load_file, save_file

    steps = []
    for ckpt in sorted(run_dir.glob("checkpoint-*"), key=checkpoint_step):
        if not (ckpt / POLICY_FILE).exists():
            if algorithm == "ppo":
                weights = load_file(ckpt / "trainable.safetensors")
                weights = {k[len("policy.") :]: v for k, v in weights.items() if k.startswith("policy.")}
            else:
                weights = load_file(ckpt / "model.safetensors")
            save_file(weights, ckpt / "policy.tmp", metadata={"format": "pt"})
            (ckpt / "policy.tmp").rename(ckpt / POLICY_FILE)
        for f in ckpt.iterdir():
            if f.name != POLICY_FILE:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
        steps.append(checkpoint_step(ckpt))
    return steps


def rebuild_returned(run_dir: Path, sft_dir: Path, steps: list[int]) -> Path:
    """The model a stopped run returns when it averages the checkpoints of ``steps`` (oldest first), rebuilt from
    the warn-only twin's slimmed checkpoints exactly as ``rlhfkit.rl.healthy.load_average`` builds it (the sum in
    float32 in that order, divided, cast to the parameter's dtype); [] is the SFT model. Cached by steps."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not steps:
        return sft_dir
    out = run_dir / ("returned-" + "_".join(map(str, steps)))
    if (out / "model.safetensors").exists():
        return out
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    params = dict(model.named_parameters())
    sums: dict[str, torch.Tensor] = {}
    for step in steps:
        for name, value in load_file(run_dir / f"checkpoint-{step}" / POLICY_FILE).items():
            if name in params:
                value = value.to(torch.float32)
                sums[name] = sums[name] + value if name in sums else value.clone()
    with torch.no_grad():
        for name, total in sums.items():
            params[name].copy_((total / len(steps)).to(params[name].dtype) if len(steps) > 1 else total)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(sft_dir).save_pretrained(tmp)
    tmp.rename(out)
    return out


def stopped_from_twin(timeline: list[dict], config) -> dict:
    """What the stopped run with monitor ``config`` returns, from its warn-only twin's timeline: the monitor is a
    function of the logs and the stopped run is its twin up to the stop, so the stop step, the last healthy step
    and the healthy checkpoints it would have averaged follow from replaying the twin's logs (a checkpoint at each
    healthy logged step: ``healthy_checkpoint_steps`` 1, as the grid's monitors have it). ``averaged_steps`` []: the
    SFT model (a stop before any healthy step); None: no stop, the final model."""
    from rlhfkit.monitors import HealthMonitor

    if config.healthy_checkpoint_steps != 1:
        raise ValueError("stopped_from_twin rebuilds healthy_checkpoint_steps 1 only")
    monitor = HealthMonitor(config)
    for record in timeline:
        new = monitor._observe({k: v for k, v in record.items() if k not in ("active", "alerts", "stop")})
        stop = next((a for a in new if a.action == "stop"), None)
        if stop is not None:
            healthy = monitor._healthy_steps[-config.healthy_average :]
            return {"stop_step": stop.step, "first_alert": stop.signal, "last_healthy_step": monitor.last_healthy_step,
                    "returned_step": healthy[-1] if healthy else 0, "averaged_steps": healthy}  # fmt: skip
    return {"stop_step": None, "first_alert": None, "last_healthy_step": monitor.last_healthy_step,
            "returned_step": timeline[-1]["step"], "averaged_steps": None}  # fmt: skip


def load_timeline(run_dir: Path) -> list[dict]:
    with open(run_dir / "health.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------------ per-run summary
def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average (shorter at the ends)."""
    half = window // 2
    return [float(np.mean(values[max(0, i - half) : i + half + 1])) for i in range(len(values))]


def curve(log_history: list[dict]) -> dict:
    """Gold and proxy (smoothed too) and KL at each logged RL step of a run."""
    rows = [r for r in log_history if r.get("rewards/gold/mean") is not None]
    proxy_key = "objective/scores" if any("objective/scores" in r for r in rows) else "reward"
    gold_raw, proxy = [r["rewards/gold/mean"] for r in rows], [r[proxy_key] for r in rows]
    per_log = 64 * (GRPO["logging_steps"] if proxy_key == "reward" else 1)  # answers behind one logged value
    window = max(1, round(SMOOTH_SAMPLES / per_log)) // 2 * 2 + 1  # odd: centred
    gold_smooth = smooth(gold_raw, window)
    # the smoothed curve's standard error: the logged values' scatter around it, over the logs it averages
    se = float(np.std(np.subtract(gold_raw, gold_smooth)) / np.sqrt(window))
    return {"steps": [r["step"] for r in rows], "gold": gold_raw, "gold_smooth": gold_smooth, "gold_smooth_se": se,
            "proxy": proxy, "proxy_smooth": smooth(proxy, window)}  # fmt: skip


def replay(log_history: list[dict], batch_size: int):
    """The default monitor over a finished run's logs -- what it raised live, since it is a function of the logs
    (the stop action only ends a run; here every alert is recorded and the run goes on)."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from rlhfkit.monitors import HealthMonitor, MonitorConfig

    monitor = HealthMonitor(MonitorConfig(health_plots=False))
    state, args = TrainerState(train_batch_size=batch_size), SimpleNamespace(output_dir=None, save_total_limit=None)
    for logs in log_history:
        state.global_step = logs.get("step", state.global_step)
        monitor.on_log(args, state, TrainerControl(), logs=dict(logs))
    return monitor


def summarise(c: dict, monitor) -> dict:
    """The gold peak of the smoothed curve, where it first falls 10% below it, and the first stop alert."""
    i = int(np.argmax(c["gold_smooth"]))
    peak = c["gold_smooth"][i]
    below = next((s for s, g in zip(c["steps"][i:], c["gold_smooth"][i:]) if g < 0.9 * peak), None)
    first = next((a for a in monitor.alerts if a.action == "stop"), None)
    return {
        "gold_peak": peak,
        "gold_peak_step": c["steps"][i],
        "first_alert_step": first.step if first else None,
        "first_alert": first.signal if first else None,
        "gold_10pct_below_peak_step": below,
    }


# ------------------------------------------------------------------------------------------ plot
def plot_run(record: dict, c: dict, monitor, path: Path) -> None:
    from rlhfkit.core.io import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(8, 4.8))
    ax.plot(c["steps"], c["gold"], ".", color="tab:orange", alpha=0.35)
    ax.plot(c["steps"], c["gold_smooth"], "-", lw=2, color="tab:orange", label="gold (smoothed, training batches)")
    sft = f"gold of SFT (held out) {record['gold_sft']:.2f}"
    ax.axhline(record["gold_sft"], ls=":", color="tab:orange", lw=1, label=sft)
    ax.axhline(0.9 * record["gold_peak"], ls="--", color="tab:orange", lw=0.7, alpha=0.6, label="90% of gold peak")
    ax.set_ylabel("gold reward", color="tab:orange")
    ax.set_xlabel("RL step")
    right = ax.twinx()
    right.plot(c["steps"], c["proxy_smooth"], "-", lw=1.5, color="tab:blue", label="proxy (smoothed)")
    right.set_ylabel("proxy reward (what RL optimises)", color="tab:blue")
    seen = set()
    for a in monitor.alerts:
        stop = a.action == "stop"
        if (a.signal, stop) in seen:
            continue
        seen.add((a.signal, stop))
        ax.axvline(a.step, ls="--", lw=0.8, color="red" if stop else "gray")
        ax.annotate(f"{a.signal} ({a.action})", (a.step, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", fontsize=7, color="red" if stop else "gray")  # fmt: skip
    if not record["gate"]["passed"]:  # the pipeline's gate refused RL before step 0; what the monitors did, in grey
        ax.axvline(0, lw=1.5, color="red")
        ax.annotate("rm_gate refused RL (stop)", (0, 0.98), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    fontsize=7, color="red")  # fmt: skip
        alone = record["monitors_only"]
        if alone.get("returned_step") is not None and alone.get("gold_returned") is not None:
            ax.plot([alone["returned_step"]], [alone["gold_returned"]], "*", ms=10, color="gray",
                    label=f"monitors alone: returned step {alone['returned_step']}, "
                          f"held-out gold {alone['gold_returned']:.2f}")  # fmt: skip
    if record.get("returned_step") is not None and record.get("gold_returned") is not None:
        label = f"returned model (step {record['returned_step']}), held-out gold {record['gold_returned']:.2f}"
        ax.plot([record["returned_step"]], [record["gold_returned"]], "*", ms=14, color="green", label=label)
    if record.get("gold_final_unstopped") is not None:
        ax.plot([c["steps"][-1]], [record["gold_final_unstopped"]], "x", ms=10, color="black",
                label=f"unstopped final, held-out gold {record['gold_final_unstopped']:.2f}")  # fmt: skip
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    ax.set_title(f"{record['algorithm'].upper()}, length bias {record['length_bias']:g}, seed {record['seed']}, "
                 f"{record['reward']} reward model (alerts: red = stop, gray = warn)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------ main
def run_cell(cell: dict, sft_dir: Path, rm_dir: Path, sft: dict, gate: dict, out: Path, args) -> dict:
    """One grid cell: the warn-only twin (trained once, cached: its logs, its checkpoints at every logged step and its
    final model do not depend on the monitor's settings), the stopped run at the default monitors rebuilt from the
    twin's checkpoints (:func:`stopped_from_twin`, :func:`rebuild_returned`; with ``--train-stopped`` also trained,
    and the two compared weight for weight), the held-out scores, the summary and the plot. ``sft``: the SFT
    model's :func:`scored` dict.

    Where the reward model fails the pipeline's gate (``gate``, from :func:`rm_gates`) the pipeline never starts RL:
    the record's stop is the gate's at step 0 and the returned model is the SFT model (its held-out gold is
    ``gold_sft``: the same model on the same prompts and seed). The RL run is trained all the same, and what the
    monitors alone did there is kept under ``monitors_only``."""
    from rlhfkit.monitors import MonitorConfig

    run_dir = out / f"{cell['algorithm']}-{cell['reward']}"
    seed, t0, twin = cell["seed"], time.time(), run_dir / "unstopped"
    cache = twin / "result.json"
    if not cache.exists():
        result, _ = rl_run(cell, sft_dir, rm_dir, twin, args, stop=False)
        slim_checkpoints(twin, cell["algorithm"])
        record = {"log_history": result.log_history, "model_dir": str(result.model_dir), "seconds": time.time() - t0}
        cache.write_text(json.dumps(record) + "\n")
    unstopped = json.loads(cache.read_text())
    final = scored(Path(unstopped["model_dir"]), twin / "final-scored.json", seed, rm_dir, args)
    record = {**cell, "threads": args.threads, "gold_sft": sft["gold"], "gold_final_unstopped": final["gold"]}
    stopped = stopped_from_twin(load_timeline(twin), monitor_config(stop=True))
    steps = stopped["averaged_steps"]
    model = Path(unstopped["model_dir"]) if steps is None else rebuild_returned(twin, sft_dir, steps)
    if steps is None or not steps:  # no stop: the final model; a stop before any healthy step: the SFT model
        returned = final if steps is None else sft
    else:
        returned = scored(model, model / "scored.json", seed, rm_dir, args)
    record.update({**stopped, "gold_returned": returned["gold"]})
    if args.train_stopped:
        record["trained_stopped"] = train_stopped(cell, sft_dir, rm_dir, run_dir / "stopped", model, args)
    monitor = replay(unstopped["log_history"], 64)  # PPO: prompts per update; GRPO: completions per step
    c = curve(unstopped["log_history"])
    record.update(summarise(c, monitor), gold_smooth_se=c["gold_smooth_se"], eval_prompts=args.eval_prompts)
    record["gate"] = gate
    if not gate["passed"]:
        keys = ("first_alert_step", "first_alert", "stop_step", "returned_step", "gold_returned", "averaged_steps")
        record["monitors_only"] = {k: record.get(k) for k in keys}
        record.update(first_alert_step=0, first_alert="rm_gate", stop_step=0, returned_step=0, averaged_steps=[],
                      gold_returned=sft["gold"])  # fmt: skip
    record["seconds"] = unstopped.get("seconds", 0)
    record["monitor"] = dataclasses.asdict(MonitorConfig())
    plot_run(record, c, monitor, run_dir / "overoptimization.png")
    (run_dir / "record.json").write_text(json.dumps({**record, "curve": c}, indent=2) + "\n")
    return record


def train_stopped(cell: dict, sft_dir: Path, rm_dir: Path, run_dir: Path, rebuilt: Path, args) -> dict:
    """Train the stopped run itself (the default monitors, ``stop`` actions on) and compare its returned model with
    the one rebuilt from the twin: the largest absolute weight difference and both held-out golds."""
    import torch
    from safetensors.torch import load_file

    from rlhfkit.runs import remove_checkpoints

    t0 = time.time()
    result, _ = rl_run(cell, sft_dir, rm_dir, run_dir, args, stop=True)
    remove_checkpoints(run_dir)
    real, twin = load_file(result.model_dir / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    diff = max((real[k].float() - twin[k].float()).abs().max().item() for k in real if k in twin)
    keep = ("stop_step", "last_healthy_step", "returned_step", "averaged_steps", "returned_reason")
    return {**{k: result.metrics.get(k) for k in keep}, "max_abs_weight_diff": diff,
            "same_tensors": sorted(real) == sorted(twin) and all(torch.equal(real[k], twin[k]) for k in real),
            "gold_returned": held_out_gold(result.model_dir, cell["seed"], args.eval_prompts),
            "seconds": time.time() - t0}  # fmt: skip


KEYS = ("algorithm", "length_bias", "seed", "threads", "reward", "gold_sft", "gold_peak", "gold_peak_step",
        "first_alert_step", "first_alert", "stop_step", "returned_step", "averaged_steps", "gold_returned",
        "gold_final_unstopped", "gate", "monitors_only")  # fmt: skip


def seed_dir(out: Path, seed: int, threads: int) -> Path:
    """Where one seed's models and runs at ``threads`` torch threads go: runs at 1 and 2 threads do not collide."""
    return out / f"t{threads}" / f"seed{seed}"


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch is imported: its pools read them
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    records = []
    if args.collect:  # processes that ran parts of the grid into one folder, summarised together
        return _collect(out, args)
    for seed in args.seeds:
        root = seed_dir(out, seed, args.threads)
        sft_dir = sft_model(root, seed)
        for bias in args.biases:
            base = root / f"bias{bias:g}"
            rm_dir = reward_ensemble(base, sft_dir, bias, seed, args.members, args.rm_steps)
            gates = rm_gates(rm_dir, bias, seed)
            sft = scored(sft_dir, base / "sft-scored.json", seed, rm_dir, args)
            for algorithm in args.algorithms:
                for reward in args.rewards:
                    cell = {"algorithm": algorithm, "length_bias": bias, "seed": seed, "reward": reward}
                    r = run_cell(cell, sft_dir, rm_dir, sft, gates[reward], base, args)
                    records.append(r)
                    line = {k: r.get(k) for k in KEYS} | {"gate": r["gate"]["summary"]}
                    print(json.dumps(line), flush=True)
    summary = {"runs": [{k: r.get(k) for k in KEYS} for r in records], "wall_seconds": time.time() - t0}
    name = f"overoptimization-t{args.threads}-s{'_'.join(map(str, args.seeds))}.json"
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / name} ({time.time() - t0:.0f} s)")
    return records


def _collect(out: Path, args) -> list[dict]:
    """The records of the grid's finished runs (``record.json``) at ``--threads``, the missing cells named; the
    wall time is the sum of the twins' own times (RL runs; scoring, SFT and reward models not included)."""
    records, missing = [], []
    for seed in args.seeds:
        for bias in args.biases:
            for algorithm in args.algorithms:
                for reward in args.rewards:
                    run_dir = seed_dir(out, seed, args.threads) / f"bias{bias:g}" / f"{algorithm}-{reward}"
                    if (run_dir / "record.json").exists():
                        records.append(json.loads((run_dir / "record.json").read_text()))
                    else:
                        missing.append({"algorithm": algorithm, "length_bias": bias, "seed": seed, "reward": reward})
    summary = {"runs": [{k: r.get(k) for k in KEYS} for r in records], "missing": missing, "threads": args.threads,
               "run_seconds": sum(r.get("seconds", 0) for r in records)}  # fmt: skip
    path = out / f"overoptimization-t{args.threads}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}: {len(records)} runs, {len(missing)} missing")
    return records


if __name__ == "__main__":
    main()
