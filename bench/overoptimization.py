"""Reward over-optimisation on the lab, caught by the default monitors: a grid of PPO and GRPO runs.

    nice -n 10 .venv/bin/python bench/overoptimization.py                  # the whole grid, resumable
    .venv/bin/python bench/overoptimization.py --algorithms grpo --biases 0.3 --seeds 0 --rewards single

The lab has a gold reward (rlhfkit.lab.gold_reward), so Goodhart's law can be measured instead of argued. Per seed
an SFT nano model learns the list task; per labeler length bias and seed a reward ensemble (``--members`` reward
models, seeds seed..seed+K-1) learns from the majority votes of 5 labelers who, with probability ``length_bias``,
prefer the longer list (the demo pipeline's labelers and agreement filtering otherwise). The *single* reward model
is member 0 of that ensemble; the *ensemble* rewards RL with ``mean_minus_std`` of the members' standardised
scores. Every cell of the grid, algorithm {ppo, grpo} x bias x seed x reward {single, ensemble}, runs RL with the
monitors at their defaults (:class:`rlhfkit.monitors.MonitorConfig`) twice:

* **stopped**: exactly as a user gets it (``run_ppo`` / ``run_grpo``): a stop alert ends the run, and ``model/`` is
  the last healthy checkpoint -- ``returned_step``, scored on held-out prompts as ``gold_returned``;
* **unstopped**: the same run with every ``stop`` action turned into ``warn`` (a warn-only twin, same seeds, so it
  is identical up to the stop), trained to the end: the whole gold / proxy curve, and ``gold_final_unstopped``.

Before RL the pipeline gates the reward model (``rlhfkit.reward.gate.rm_gate`` at its defaults, on the gold-labelled
held-out pairs its rm_eval stage scores). Where the gate refuses, ``rlhfkit run`` never starts RL, so the record is
what the user gets: the first stop is ``rm_gate`` at step 0 and the returned model is the SFT model; both RL runs are
still trained, and what the monitors alone did is kept under ``monitors_only`` (grey in the plot).

Gold and proxy are logged on the training batches (``rewards/gold/mean`` beside the reward; never optimised) and
smoothed with a centred moving average over ~:data:`SMOOTH_SAMPLES` sampled answers (GRPO: 3 logs of 5 steps x 64
completions; PPO: 15 updates of 64 prompts), so both algorithms' curves carry the same noise; ``gold_peak`` is the
smoothed curve's maximum. Held-out scores sample ``--eval-prompts`` fresh lab prompts at temperature 1 (the lab has
only 72 distinct prompts; one model's score varies with std 0.0059 between draws of 6000 prompts, 0.0125 at 1500).
Results go to ``<out>/overoptimization.json`` (one record per run with the grid's keys, ``gate`` and
``monitors_only``), each run's ``record.json`` (with its curves) and a plot per run (``overoptimization.png``).
Finished runs are skipped, so an interrupted grid resumes; a cached score measured on another ``--eval-prompts`` is
measured again on the run's saved model.

Deliberately left out: DPO / best-of-N, real models, and tuning RL hyperparameters per cell (one setting per
algorithm, with its KL coefficient at rlhfkit's default).
"""

from __future__ import annotations

import argparse
import functools
import json
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
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared CPU)")
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


def sft_model(out: Path, seed: int) -> Path:
    from trl import SFTConfig

    from rlhfkit import lab
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.sft import run_sft

    sft_dir = out / "sft" / "model"
    if not (sft_dir / "model.safetensors").exists():
        nano = lab.build_tiny_model(out / "nano", size="nano", seed=seed)
        cfg = trainer_config(SFTConfig, "sft", out / "sft", max_steps=800, per_device_train_batch_size=32,
                             learning_rate=3e-3, seed=seed, **COMMON)  # fmt: skip
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
    """Reward models from the demo pipeline's preference data with length-biased labelers (``members`` of them;
    member 0 is the single one)."""
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.reward.config import RewardConfig
    from rlhfkit.reward.trainer import run_reward

    rm_out = out / f"rm-bias{length_bias:g}"
    if not (rm_out / "model" / "ensemble.json").exists():
        train = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in preferences(length_bias, seed).train]
        cfg = trainer_config(RewardConfig, "reward", rm_out, max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=1e-3, seed=seed, ensemble_size=members, **COMMON)  # fmt: skip
        run_reward(sft_dir, train, cfg)
    return rm_out / "model"


def rm_gates(rm_dir: Path, length_bias: float, seed: int) -> dict[str, dict]:
    """The pipeline's gate before RL for the single reward model and the ensemble: ``rlhfkit.reward.gate.rm_gate`` at
    its defaults on the held-out pairs the demo pipeline's rm_eval stage scores (gold-labelled lab pairs), each
    scored as that stage scores it (the ensemble: the members' mean). A refused gate means ``rlhfkit run`` stops
    before the RL stage: the SFT model is what the user keeps."""
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
                         "pairs": report.n_pairs, "pair_length_spearman": report.length_margin_spearman}  # fmt: skip
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
    """Train one RL run; returns (RunResult, the monitor's timeline)."""
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
    if cell["algorithm"] == "grpo":
        cfg = grpo_config(run_dir, beta=GRPO["beta"], learning_rate=GRPO["lr"], lr_scheduler_type="constant",
                          max_steps=args.grpo_steps,
                          per_device_train_batch_size=64, num_generations=8, max_completion_length=RESPONSE_LENGTH,
                          temperature=1.0, gradient_checkpointing=False, logging_steps=GRPO["logging_steps"],
                          save_steps=10_000, **common)  # fmt: skip
        result = run_grpo(sft_dir, lab.make_prompts(args.grpo_steps * 8 + 64, seed=seed + 7), cfg,
                          reward_funcs=[gold, items], reward_weights=[1.0, 0.0, 0.0],
                          monitor_config=monitor_config(stop), **reward)  # fmt: skip
    else:
        cfg = trainer_config(PPOConfig, "ppo", run_dir, total_episodes=args.ppo_updates * 64,
                             per_device_train_batch_size=16, gradient_accumulation_steps=4, num_mini_batches=2,
                             learning_rate=PPO["lr"], kl_coef=PPO["kl_coef"], response_length=RESPONSE_LENGTH,
                             stop_token="eos", missing_eos_penalty=1.0, temperature=1.0, save_steps=10_000,
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


def rescored(cache: Path, key: str, seed: int, n: int) -> dict:
    """A finished run's cached record; its held-out score ``key`` is measured again on the saved ``model/`` (beside
    the cache) when it was measured on another number of prompts (records without ``eval_prompts`` used 1500)."""
    data = json.loads(cache.read_text())
    if data.get("eval_prompts", 1500) != n:
        data.update({key: held_out_gold(cache.parent / "model", seed, n), "eval_prompts": n})
        cache.write_text(json.dumps(data) + "\n")
    return data


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
    return {"steps": [r["step"] for r in rows], "gold": gold_raw, "gold_smooth": smooth(gold_raw, window),
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
def run_cell(cell: dict, sft_dir: Path, rm_dir: Path, gold_sft: float, gate: dict, out: Path, args) -> dict:
    """One grid cell: the unstopped twin (cached: its logs and held-out final gold do not depend on the monitor's
    settings), the stopped run (cached per monitor config), the summary and the plot.

    Where the reward model fails the pipeline's gate (``gate``, from :func:`rm_gates`) the pipeline never starts RL:
    the record's stop is the gate's at step 0 and the returned model is the SFT model (its held-out gold is
    ``gold_sft``: the same model on the same prompts and seed). The RL runs are trained all the same, and what the
    monitors alone did there is kept under ``monitors_only``."""
    import dataclasses

    from rlhfkit.monitors import MonitorConfig
    from rlhfkit.runs import remove_checkpoints

    run_dir = out / f"{cell['algorithm']}-{cell['reward']}"
    seed, t0 = cell["seed"], time.time()
    cache = run_dir / "unstopped" / "result.json"
    if not cache.exists():
        result, _ = rl_run(cell, sft_dir, rm_dir, run_dir / "unstopped", args, stop=False)
        gold_final = held_out_gold(result.model_dir, seed, args.eval_prompts)
        remove_checkpoints(run_dir / "unstopped")
        record = {"log_history": result.log_history, "gold_final_unstopped": gold_final,
                  "eval_prompts": args.eval_prompts, "seconds": time.time() - t0}  # fmt: skip
        cache.write_text(json.dumps(record) + "\n")
    unstopped = rescored(cache, "gold_final_unstopped", seed, args.eval_prompts)
    record = {**cell, "gold_sft": gold_sft, "gold_final_unstopped": unstopped["gold_final_unstopped"]}
    stopped = {}
    if not args.unstopped_only:
        defaults = dataclasses.asdict(MonitorConfig())
        cache = run_dir / "stopped" / "result.json"
        if cache.exists() and json.loads(cache.read_text())["monitor"] != defaults:
            shutil.rmtree(run_dir / "stopped")  # the defaults changed: run it again
        if not cache.exists():
            t1 = time.time()
            result, _ = rl_run(cell, sft_dir, rm_dir, run_dir / "stopped", args, stop=True)
            keep = ("stop_step", "last_healthy_step", "returned_step", "averaged_steps", "returned_reason")
            stopped = {k: result.metrics.get(k) for k in keep}
            stopped["gold_returned"] = held_out_gold(result.model_dir, seed, args.eval_prompts)
            remove_checkpoints(run_dir / "stopped")
            cache.write_text(json.dumps({**stopped, "monitor": defaults, "eval_prompts": args.eval_prompts,
                                         "seconds": time.time() - t1}) + "\n")  # fmt: skip
        stopped = rescored(cache, "gold_returned", seed, args.eval_prompts)
        record.update({k: stopped[k] for k in ("stop_step", "returned_step", "gold_returned", "returned_reason")})
    batch = 64  # PPO: prompts per update; GRPO: completions per step
    monitor = replay(unstopped["log_history"], batch)
    c = curve(unstopped["log_history"])
    record.update(summarise(c, monitor))
    record["gate"] = gate
    if not gate["passed"]:
        keys = ("first_alert_step", "first_alert", "stop_step", "returned_step", "gold_returned", "returned_reason")
        record["monitors_only"] = {k: record.get(k) for k in keys}
        reason = (f"rm_eval's gate refused RL ({gate['summary']}): the pipeline stops before the RL stage and the "
                  f"SFT model is what it returns")  # fmt: skip
        record.update(first_alert_step=0, first_alert="rm_gate", stop_step=0, returned_step=0, gold_returned=gold_sft,
                      returned_reason=reason)  # fmt: skip
    record["seconds"] = unstopped.get("seconds", 0) + stopped.get("seconds", 0)
    plot_run(record, c, monitor, run_dir / "overoptimization.png")
    (run_dir / "record.json").write_text(json.dumps({**record, "curve": c}, indent=2) + "\n")
    return record


KEYS = ("algorithm", "length_bias", "seed", "reward", "gold_sft", "gold_peak", "gold_peak_step", "first_alert_step",
        "first_alert", "stop_step", "returned_step", "gold_returned", "gold_final_unstopped", "gate",
        "monitors_only")  # fmt: skip


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    records = []
    if args.collect:  # processes that ran parts of the grid into one folder, summarised together
        return _collect(out, args)
    for seed in args.seeds:
        sft_dir = sft_model(out / f"seed{seed}", seed)
        gold_sft = held_out_gold(sft_dir, seed, args.eval_prompts)
        for bias in args.biases:
            base = out / f"seed{seed}" / f"bias{bias:g}"
            rm_dir = reward_ensemble(base, sft_dir, bias, seed, args.members, args.rm_steps)
            gates = rm_gates(rm_dir, bias, seed)
            for algorithm in args.algorithms:
                for reward in args.rewards:
                    cell = {"algorithm": algorithm, "length_bias": bias, "seed": seed, "reward": reward}
                    r = run_cell(cell, sft_dir, rm_dir, gold_sft, gates[reward], base, args)
                    records.append(r)
                    print(json.dumps({k: r.get(k) for k in KEYS}), flush=True)
    (out / "overoptimization.json").write_text(
        json.dumps(
            {"runs": [{k: r.get(k) for k in KEYS} for r in records], "wall_seconds": time.time() - t0}, indent=2
        )
        + "\n"  # fmt: skip
    )
    print(f"wrote {out / 'overoptimization.json'} ({time.time() - t0:.0f} s)")
    return records


def _collect(out: Path, args) -> list[dict]:
    """The records of the grid's finished runs (``record.json``), the missing cells named; the wall time is the sum
    of the runs' own times (RL runs and their held-out scoring; SFT and reward models not included)."""
    records, missing = [], []
    for seed in args.seeds:
        for bias in args.biases:
            for algorithm in args.algorithms:
                for reward in args.rewards:
                    path = out / f"seed{seed}" / f"bias{bias:g}" / f"{algorithm}-{reward}" / "record.json"
                    if path.exists():
                        records.append(json.loads(path.read_text()))
                    else:
                        missing.append({"algorithm": algorithm, "length_bias": bias, "seed": seed, "reward": reward})
    summary = {"runs": [{k: r.get(k) for k in KEYS} for r in records], "missing": missing,
               "run_seconds": sum(r.get("seconds", 0) for r in records)}  # fmt: skip
    (out / "overoptimization.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out / 'overoptimization.json'}: {len(records)} runs, {len(missing)} missing")
    return records


if __name__ == "__main__":
    main()
