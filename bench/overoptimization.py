"""Reward over-optimisation on the lab, observed: proxy reward vs gold reward under GRPO, and when the monitor fires.

    .venv/bin/python bench/overoptimization.py                       # ~2 min on 2 CPU cores (models are cached)
    .venv/bin/python bench/overoptimization.py --beta 0.3            # a tighter KL leash
    .venv/bin/python bench/overoptimization.py --length-bias 0.5 --lr 1e-3 --stop

The lab has a gold reward (rlhfkit.lab.gold_reward), so Goodhart's law can be measured instead of argued:

1. an SFT nano model learns the list task from demonstrations (gold ~0.72);
2. a reward model (the *proxy*) learns from the majority votes of LENGTH-BIASED labelers
   (``LabelerPool(length_bias=0.3)``: with that probability a labeler prefers the longer list);
3. GRPO optimises the proxy with a small KL coefficient (beta 0.01); two extra reward functions with weight 0,
   ``gold`` and ``items``, score the same sampled completions with the gold reward and the item count, so TRL
   logs ``rewards/gold/mean`` beside ``rewards/reward_model/mean`` at every logging step without changing the
   training signal; the monitor keeps them in its timeline and plots (``MonitorConfig.health_extra_keys``).

Two monitors watch the run: rlhfkit's defaults (KL levels of 8 / 15 nats per sequence, quoted for chat-length
answers) and the same levels rescaled to the lab's ~6-token answers (:data:`SCALED`). Both only warn (``--stop``
lets the default one end the run), so the whole curve is seen. The script prints a table (step, proxy reward,
gold reward, KL in nats per sequence, mean tokens and list items, new alerts of each monitor), the gold peak and
where each monitor first fired relative to it, and saves ``overoptimization.png``, ``overoptimization.json`` and
the monitor's ``health.jsonl`` and plots in the run folder under ``--out``. Gold and proxy are measured on the
training samples (temperature 1): each point averages the logging interval (10 steps x 64 completions).

Deliberately left out: PPO (rlhfkit.ppo was not committed when this was written; its trainer logs the same
metric names, so the same recorders and monitors apply), and evaluation on held-out prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench/overoptimization", help="output folder (models, logs, plot)")
    p.add_argument("--length-bias", type=float, default=0.3, help="labelers' probability of judging by length")
    p.add_argument("--beta", type=float, default=0.01, help="GRPO KL coefficient (rlhfkit's default is 0.04)")
    p.add_argument("--lr", type=float, default=2e-4, help="GRPO learning rate")
    p.add_argument("--steps", type=int, default=300, help="GRPO steps (8 prompts x 8 completions each)")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="store_true", help="let the monitor stop the run (default: warn only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared CPU)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ reward recorders
def gold(prompts, completions, **kwargs):
    """The lab's gold reward of each completion (weight 0: recorded, never optimised)."""
    from rlhfkit import lab

    return lab.gold_rewards(prompts, completions).tolist()


def items(prompts, completions, **kwargs):
    """Number of list items in each completion (weight 0: the length the biased labelers rewarded)."""
    from rlhfkit import lab

    return [float(lab.count_items(c)) for c in completions]


# ------------------------------------------------------------------------------------------ stages
def train_sft_and_biased_rm(out: Path, length_bias: float, seed: int) -> tuple[Path, Path, dict]:
    """SFT nano model and a reward model on length-biased majority votes (reused when already in ``out``)."""
    from trl import RewardConfig, SFTConfig

    from rlhfkit import lab
    from rlhfkit.config import trainer_config
    from rlhfkit.train import run_reward, run_sft

    common = {"report_to": [], "seed": seed, "lr_scheduler_type": "cosine", "warmup_steps": 10, "save_steps": 10_000,
              "logging_steps": 100, "disable_tqdm": True}  # fmt: skip
    sft_dir, rm_dir = out / "sft" / "model", out / f"rm-bias{length_bias:g}" / "model"
    if not (sft_dir / "model.safetensors").exists():
        nano = lab.build_tiny_model(out / "nano", size="nano", seed=seed)
        cfg = trainer_config(SFTConfig, "sft", out / "sft", max_steps=800, per_device_train_batch_size=32,
                           learning_rate=3e-3, **common)  # fmt: skip
        run_sft(nano, lab.demonstrations(2000, seed), cfg)
    pool = lab.LabelerPool(5, noise=0.2, length_bias=length_bias, seed=seed)
    rows = lab.comparison_dataset(4000, pool, seed=seed + 1)
    pairs = []
    for r in rows:
        v = np.array(r["votes"])
        a_wins = (v == 1).sum() > (v == 0).sum()
        chosen, rejected = (r["response_a"], r["response_b"]) if a_wins else (r["response_b"], r["response_a"])
        pairs.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    if not (rm_dir / "model.safetensors").exists():
        cfg = trainer_config(RewardConfig, "reward", rm_dir.parent, max_steps=800, per_device_train_batch_size=32,
                           learning_rate=1e-3, **common)  # fmt: skip
        run_reward(sft_dir, pairs, cfg)
    return sft_dir, rm_dir, reward_model_report(rm_dir, seed)


def reward_model_report(rm_dir: Path, seed: int) -> dict:
    """The proxy's accuracy against the gold preference, overall and where gold prefers the SHORTER list."""
    from rlhfkit import lab
    from rlhfkit.models import load_reward_model
    from rlhfkit.scoring import RewardModelScorer

    rows = [r for r in lab.comparison_dataset(1000, lab.LabelerPool(1, seed=seed), seed=seed + 99)
            if r["gold_a"] != r["gold_b"]]  # fmt: skip
    scorer = RewardModelScorer(*load_reward_model(rm_dir))
    prompts = [r["prompt"] for r in rows]
    sa = np.array(scorer(prompts, [r["response_a"] for r in rows]))
    sb = np.array(scorer(prompts, [r["response_b"] for r in rows]))
    gold_a = np.array([r["gold_a"] > r["gold_b"] for r in rows])
    correct = (sa > sb) == gold_a
    len_a = np.array([lab.count_items(r["response_a"]) for r in rows])
    len_b = np.array([lab.count_items(r["response_b"]) for r in rows])
    shorter_better = np.where(gold_a, len_a < len_b, len_b < len_a)
    return {"accuracy": float(correct.mean()), "shorter_better_accuracy": float(correct[shorter_better].mean())}


# The monitor's default KL levels, 8 (caution) and 15 (limit) nats per sequence, are quoted for chat-length
# responses; at ~100 tokens they mean ~0.08 and ~0.15 nats per token. Lab answers are ~6 tokens, where the same
# per-token levels are ~0.5 and ~0.9 nats per sequence; the KL-race slope is scaled the same way (0.5 -> 0.03).
# Chosen from that arithmetic, not fitted to this run.
SCALED = {"kl_caution": 0.5, "kl_limit": 1.0, "reward_kl_slope": 0.03}


def run_grpo_with_gold(sft_dir: Path, rm_dir: Path, out: Path, args):
    """GRPO against the proxy, recording gold and item count.

    Returns (TRL log history, the default monitor's timeline, the length-scaled monitor's timeline).
    """
    from rlhfkit import lab
    from rlhfkit.grpo import grpo_config
    from rlhfkit.monitors import HealthMonitor, MonitorConfig, load_timeline
    from rlhfkit.train import remove_checkpoints, run_grpo

    cfg = grpo_config(
        out,
        beta=args.beta,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        max_steps=args.steps,
        per_device_train_batch_size=64,  # 8 prompts x 8 completions per step
        num_generations=8,
        max_completion_length=32,
        temperature=1.0,
        gradient_checkpointing=False,
        logging_steps=args.logging_steps,
        save_steps=args.logging_steps * 5,
        report_to=[],
        seed=args.seed,
        disable_tqdm=True,
    )
    # warn-only by default so the whole curve is seen; the table marks where kl_limit's stop action would end the run
    actions = {} if args.stop else {"kl_limit_action": "warn"}
    extra = ["rewards/gold/mean", "rewards/items/mean"]
    monitor = MonitorConfig(health_extra_keys=extra, **actions)
    # A second monitor with the default KL levels rescaled to the lab's answer length, written to its own file.
    scaled = HealthMonitor(MonitorConfig(health_file="health_scaled.jsonl", health_plots=False, **SCALED, **actions))
    result = run_grpo(
        sft_dir,
        lab.make_prompts(args.steps * 8 + 64, seed=args.seed + 7),
        cfg,
        reward_model=rm_dir,
        reward_funcs=[gold, items],
        reward_weights=[1.0, 0.0, 0.0],  # only the proxy is optimised; gold and items are recorded
        monitor_config=monitor,
        callbacks=[scaled],
    )
    remove_checkpoints(out)
    return [h for h in result.log_history if "reward" in h], load_timeline(out), scaled.timeline


# ------------------------------------------------------------------------------------------ report
def table_rows(logs: list[dict], timeline: list[dict], scaled_timeline: list[dict]) -> list[dict]:
    health = {r["step"]: r for r in timeline}
    scaled = {r["step"]: r for r in scaled_timeline}
    rows = []
    for h in logs:
        record = health.get(h["step"], {})
        rows.append(
            {
                "step": h["step"],
                "proxy": h["rewards/reward_model/mean"],
                "gold": h["rewards/gold/mean"],
                "kl": record.get("kl"),
                "tokens": h["completions/mean_length"],
                "items": h["rewards/items/mean"],
                "alerts": [a["signal"] for a in record.get("alerts", [])],
                "scaled_alerts": [a["signal"] for a in scaled.get(h["step"], {}).get("alerts", [])],
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'step':>5} {'proxy':>7} {'gold':>7} {'KL/seq':>7} {'tokens':>7} {'items':>6}"
    print(f"{head}  {'new alerts (default)':<34}new alerts (length-scaled KL levels)")
    for r in rows:
        kl = f"{r['kl']:.2f}" if r["kl"] is not None else "-"
        alerts, scaled = ", ".join(r["alerts"]) or "-", ", ".join(r["scaled_alerts"]) or "-"
        print(f"{r['step']:>5} {r['proxy']:>7.3f} {r['gold']:>7.3f} {kl:>7} {r['tokens']:>7.2f} {r['items']:>6.2f}  "
              f"{alerts:<34}{scaled}")  # fmt: skip


def first_alert(rows: list[dict], peak: dict, key: str) -> dict:
    first = next((r for r in rows if r[key]), None)
    if first is None:
        return {"step": None}
    return {"step": first["step"], "signals": first[key], "gold": first["gold"], "kl": first["kl"],
            "gold_below_peak": peak["gold"] - first["gold"] if first["step"] > peak["step"] else 0.0}  # fmt: skip


def summarise(rows: list[dict]) -> dict:
    peak = max(rows, key=lambda r: r["gold"])
    return {
        "gold_start": rows[0]["gold"],
        "gold_peak": peak["gold"],
        "gold_peak_step": peak["step"],
        "gold_final": rows[-1]["gold"],
        "proxy_start": rows[0]["proxy"],
        "proxy_final": rows[-1]["proxy"],
        "kl_at_gold_peak": peak["kl"],
        "first_alert": first_alert(rows, peak, "alerts"),
        "first_alert_scaled": first_alert(rows, peak, "scaled_alerts"),
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    from rlhfkit.io import pyplot, save_figure

    steps = [r["step"] for r in rows]
    fig, (ax, ax2) = pyplot().subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    ax.plot(steps, [r["proxy"] for r in rows], "o-", ms=3, color="tab:blue", label="proxy (reward model)")
    ax.set_ylabel("proxy reward", color="tab:blue")
    right = ax.twinx()
    right.plot(steps, [r["gold"] for r in rows], "s-", ms=3, color="tab:orange", label="gold (lab)")
    right.set_ylabel("gold reward", color="tab:orange")
    ax2.plot(steps, [r["items"] for r in rows], "o-", ms=3, color="tab:green", label="mean items")
    ax2.set_ylabel("mean list items", color="tab:green")
    kl = [(r["step"], r["kl"]) for r in rows if r["kl"] is not None]
    if kl:
        ax2r = ax2.twinx()
        ax2r.plot([s for s, _ in kl], [k for _, k in kl], "^-", ms=3, color="tab:gray")
        ax2r.set_ylabel("KL (nats/sequence)", color="tab:gray")
    for key, colour, y in (("alerts", "red", 1.0), ("scaled_alerts", "purple", 0.5)):
        seen = set()
        for r in rows:
            for signal in r[key]:
                for a in (ax, ax2):
                    a.axvline(r["step"], ls="--", lw=0.8, color=colour)
                if signal not in seen:
                    ax.annotate(signal, (r["step"], y), xycoords=("data", "axes fraction"), rotation=90, va="top",
                                ha="right", fontsize=7, color=colour)  # fmt: skip
                    seen.add(signal)
    ax2.set_xlabel("GRPO step (alerts: red = default monitor, purple = length-scaled KL levels)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()

    # ---------------------------------------------------------------- SFT + length-biased reward model
    sft_dir, rm_dir, rm_report = train_sft_and_biased_rm(out, args.length_bias, args.seed)
    print(f"reward model from labelers with length_bias={args.length_bias}: accuracy vs gold "
          f"{rm_report['accuracy']:.3f}, on pairs where the shorter list is better "
          f"{rm_report['shorter_better_accuracy']:.3f} ({time.time() - t0:.0f} s)")  # fmt: skip

    # ---------------------------------------------------------------- GRPO with gold recorded
    t1 = time.time()
    run_dir = out / f"grpo-bias{args.length_bias:g}-beta{args.beta:g}-lr{args.lr:g}-seed{args.seed}"
    logs, timeline, scaled_timeline = run_grpo_with_gold(sft_dir, rm_dir, run_dir, args)
    print(f"GRPO: {args.steps} steps, beta={args.beta:g}, lr={args.lr:g} ({time.time() - t1:.0f} s)\n")

    # ---------------------------------------------------------------- report
    rows = table_rows(logs, timeline, scaled_timeline)
    print_table(rows)
    summary = {"args": vars(args), "reward_model": rm_report, **summarise(rows)}
    s = summary
    print(f"\ngold: {s['gold_start']:.3f} at step {rows[0]['step']} -> peak {s['gold_peak']:.3f} at step "
          f"{s['gold_peak_step']} -> {s['gold_final']:.3f} at the end; proxy {s['proxy_start']:.3f} -> "
          f"{s['proxy_final']:.3f}")  # fmt: skip
    print(f"KL at the gold peak: {s['kl_at_gold_peak']:.2f} nats/sequence")
    for name, key in (("default", "first_alert"), (f"length-scaled KL levels {SCALED}", "first_alert_scaled")):
        a = s[key]
        if a["step"] is None:
            print(f"monitor ({name}): no alert")
        else:
            print(f"monitor ({name}): first alert at step {a['step']} ({', '.join(a['signals'])}), KL {a['kl']:.2f}, "
                  f"gold {a['gold']:.3f} = {a['gold_below_peak']:.3f} below its peak")  # fmt: skip
    title = (f"GRPO on a reward model from length-biased labelers (bias {args.length_bias:g}), beta={args.beta:g}, "
             f"lr={args.lr:g}")  # fmt: skip
    plot(rows, run_dir / "overoptimization.png", title)
    (run_dir / "overoptimization.json").write_text(json.dumps({**summary, "rows": rows}, indent=2) + "\n")
    print(f"saved {run_dir / 'overoptimization.png'}, {run_dir / 'health.jsonl'} and the monitor's plots")
    return summary


if __name__ == "__main__":
    main()
