"""RLHF vs RLAIF on the lab: the same SFT model, comparisons and label budget, labelled by people or by a judge.

    nice -n 10 .venv/bin/python bench/rlaif.py --out runs/bench/rlaif            # seeds 0 and 1: ~11 min, resumable
    .venv/bin/python bench/rlaif.py --out runs/bench/rlaif --seeds 0             # one seed

Per seed, with the demo pipeline's sizes (rlhfkit/demo.yaml):

1. SFT: a nano lab model on 2000 demonstrations, 800 steps.
2. The label budget: the demo's 4000 lab comparisons (``rlhfkit.lab.comparison_dataset`` at seed + 1: a prompt and
   two candidates), written as a comparisons file (each distinct comparison once); every condition labels exactly
   these (a comparison that repeats gets the judge's one vote again, as the people vote on it again).
3. Labels, four ways (``labels`` in the json):

   * ``people``: the demo's 5 simulated labelers (noise 0.1 ... 0.5) with agreement filtering
     (``rlhfkit.data.tables.lab_preferences``): 5 votes per comparison, the majority of the kept items;
   * ``judge``: a lab judge (``rlhfkit.feedback.lab_judge.build_judge``: 4000 taught comparisons, ``--judge-steps``)
     labels the file with ``judge_file``: one principle of the default constitution per pair (seeded), both orders,
     tie margin 0 (``TIE_MARGIN``: every comparison gets a label, as Lee et al.'s judge labels every pair; the
     default 0.05 turns most of a position-biased judge's averaged votes into ties);
   * ``judge_soft``: the same judge's votes as soft labels (``reward.soft_labels``, Lee et al.'s cross-entropy on
     the both-order probability ``p``): every comparison is a pair, ``chosen`` = the first response, ``p`` = the
     judge's probability that it is better (ties included: they carry ``p`` near 0.5);
   * ``judge_biased``: a lab judge taught with ``position_bias`` 0.4, both orders averaged;
   * ``judge_biased_one_order``: that judge's votes read from one order only (``p_orders[0]``: the file's first
     response shown first), as a judge that is never swapped labels.

4. A reward model per condition: the demo's (from the SFT model, 800 steps, lr 1e-3); ``rm_accuracy_vs_gold`` on the
   demo's 600 held-out gold-labelled pairs.
5. PPO per condition: the demo's (60 updates of 64 prompts, kl_coef 0.1, scores normalised with the reward model's
   held-out mean / std), monitors at their defaults.
6. ``gold_sft`` / ``gold_policy``: the lab's gold reward of one sampled answer per prompt on ``--eval-prompts``
   held-out prompts (temperature 1; both policies draw the same random numbers per prompt, so they are paired);
   ``win_rate_vs_sft``: the share of those prompts where the policy's answer has the higher gold reward (ties one
   half). ``label_accuracy_vs_gold``: the share of the training pairs whose chosen answer has the higher gold reward
   (pairs of equal gold left out).

Writes ``<out>/rlaif.json`` (one record per seed and labels, the keys above plus ``n_pairs``, ``rm_steps``,
``gold_gain``, ``gold_gain_se``) and prints the table. Finished runs are kept: a rerun measures only what is missing.
Deliberately left out: the pipeline's ``preferences.source: judge`` (the bench calls the step
functions, as ``bench/overoptimization.py`` does), real models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: bench.* from the repo root

from bench import overoptimization as grid  # noqa: E402

LABELS = ("people", "judge", "judge_soft", "judge_biased", "judge_biased_one_order")
NOISE = [0.1, 0.15, 0.2, 0.25, 0.5]  # the demo's labelers
COMPARISONS = 4000
EVAL_COMPARISONS = 600
RESPONSE_LENGTH = 24
POSITION_BIAS = 0.4
TIE_MARGIN = 0.0
COMMON = {"report_to": [], "lr_scheduler_type": "cosine", "warmup_steps": 20, "save_steps": 10_000,
          "logging_steps": 100, "disable_tqdm": True}  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench/rlaif", help="output folder (models, votes, rlaif.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--comparisons", type=int, default=COMPARISONS, help="the label budget: comparisons labelled")
    p.add_argument("--rm-steps", type=int, default=800)
    p.add_argument("--ppo-updates", type=int, default=60)
    p.add_argument("--judge-steps", type=int, default=800, help="training steps of each lab judge")
    p.add_argument("--eval-prompts", type=int, default=2000, help="held-out prompts for gold and win rate")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared CPU)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ models
def sft_model(out: Path, seed: int) -> Path:
    """The over-optimisation grid's SFT policy, with this bench's warmup (:data:`COMMON`)."""
    return grid.sft_model(out, seed, common=COMMON)


def lab_judge(out: Path, seed: int, position_bias: float, steps: int) -> Path:
    from rlhfkit.feedback.lab_judge import build_judge

    path = out / ("judge" if position_bias == 0 else f"judge-bias{position_bias:g}")
    if not (path / "lab_judge.json").exists():
        build_judge(path, n_train=4000, steps=steps, position_bias=position_bias, seed=seed)
    return path


# ------------------------------------------------------------------------------------------ labels -> pairs
def people(n: int, seed: int):
    """The demo's preference data: 5 labelers' votes, agreement-filtered majority pairs, held-out gold pairs."""
    from rlhfkit import lab
    from rlhfkit.data.tables import lab_preferences

    pool = lab.LabelerPool(5, noise=NOISE, seed=seed)
    return lab_preferences(n, pool, seed=seed, eval_comparisons=EVAL_COMPARISONS, min_agreement=0.7)


def comparisons_file(out: Path, n: int, seed: int) -> tuple[Path, list[str]]:
    """The comparisons the people voted on as a comparisons file (each distinct one once: the lab has 72 prompts, so
    some comparisons repeat) and the ``item_id`` of every comparison, in the people's order."""
    from rlhfkit import lab
    from rlhfkit.data.comparisons import comparison_row

    path = out / "comparisons.jsonl"
    rows = lab.comparison_dataset(n, lab.LabelerPool(1), seed=seed + 1)  # the pairs do not depend on the pool
    items = [comparison_row(r["prompt"], [r["response_a"], r["response_b"]]) for r in rows]
    if not path.exists():
        unique = {item["item_id"]: item for item in items}
        path.write_text("".join(json.dumps(item) + "\n" for item in unique.values()))
    return path, [item["item_id"] for item in items]


def judge_votes(out: Path, comparisons: Path, judge: Path, seed: int) -> list[dict]:
    from rlhfkit.data.votelog import read_vote_log
    from rlhfkit.feedback.judge import judge_file

    votes = out / f"votes-{judge.name}.jsonl"
    judge_file(comparisons, votes, model=judge, principles_per_pair=1, seed=seed, batch_size=32, tie_margin=TIE_MARGIN)
    return read_vote_log(votes)


def vote_pairs(votes: list[dict], ids: list[str], *, one_order: bool = False) -> list[dict]:
    """Training pairs from judge votes, one per comparison in ``ids`` (a repeated comparison gets its one vote
    again): the two-order label, or the first order's probability; ties dropped."""
    from rlhfkit.feedback.judge import vote_label

    by_item = {v["item_id"]: v for v in votes}  # one principle per pair: one vote per item
    pairs = []
    for item in ids:
        v = by_item[item]
        label = vote_label(v["p_orders"][0], TIE_MARGIN) if one_order else v["label"]
        if label == "tie":
            continue
        i, j = v["pair"] if label == "a" else v["pair"][::-1]
        pairs.append({"prompt": v["prompt"], "chosen": v["responses"][i], "rejected": v["responses"][j]})
    return pairs


def soft_pairs(votes: list[dict], ids: list[str]) -> list[dict]:
    """Soft-label pairs from judge votes, one per comparison in ``ids``: ``chosen`` / ``rejected`` in the file's
    order, ``p`` = the judge's both-order probability that ``chosen`` is better."""
    by_item = {v["item_id"]: v for v in votes}
    pairs = []
    for item in ids:
        v = by_item[item]
        i, j = v["pair"]
        pairs.append({"prompt": v["prompt"], "chosen": v["responses"][i], "rejected": v["responses"][j], "p": v["p"]})
    return pairs


def label_accuracy(pairs: list[dict]) -> float:
    from rlhfkit import lab

    gold = [(lab.gold_reward(p["prompt"], p["chosen"]), lab.gold_reward(p["prompt"], p["rejected"])) for p in pairs]
    # a soft label is right when it leans the gold way (p > 0.5 for chosen better)
    lean = [p.get("p", 1.0) for p in pairs]
    return float(np.mean([(c > r) == (q > 0.5) for (c, r), q in zip(gold, lean) if c != r and q != 0.5]))


# ------------------------------------------------------------------------------------------ reward model and RL
def reward_model(
    out: Path, sft_dir: Path, pairs: list[dict], held_out: list[dict], seed: int, steps: int, soft: bool = False
) -> dict:
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.models.scoring import load_scorer
    from rlhfkit.reward.config import RewardConfig
    from rlhfkit.reward.evaluate import evaluate_reward_model
    from rlhfkit.reward.trainer import run_reward

    if not (out / "model" / "model.safetensors").exists():
        cfg = trainer_config(RewardConfig, "reward", out, max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=1e-3, seed=seed, soft_labels=soft, **COMMON)  # fmt: skip
        run_reward(sft_dir, pairs, cfg)
    model, tokenizer = load_scorer(str(out / "model"))
    report = evaluate_reward_model(model, tokenizer, held_out)
    return {"model_dir": out / "model", "accuracy": report.accuracy, "mean": report.reward_mean,
            "std": report.reward_std}  # fmt: skip


def ppo(out: Path, sft_dir: Path, rm: dict, seed: int, updates: int) -> Path:
    from rlhfkit import lab
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.rl.ppo.config import PPOConfig
    from rlhfkit.rl.ppo.run import run_ppo

    if not (out / "model" / "model.safetensors").exists():
        cfg = trainer_config(PPOConfig, "ppo", out, total_episodes=updates * 64, per_device_train_batch_size=16,
                             gradient_accumulation_steps=4, num_mini_batches=2, num_ppo_epochs=4, learning_rate=1e-4,
                             kl_coef=0.1, response_length=RESPONSE_LENGTH, stop_token="eos", missing_eos_penalty=1.0,
                             temperature=1.0, logging_steps=1, save_steps=10, save_total_limit=4,
                             num_sample_generations=0, report_to=[], seed=seed, disable_tqdm=True)  # fmt: skip
        run_ppo(sft_dir, lab.make_prompts(512, seed=seed), cfg, reward_model=rm["model_dir"],
                reward_mean=rm["mean"], reward_std=rm["std"], metric_funcs=[lab.lab_gold])  # fmt: skip
    return out / "model"


def held_out_gold(model_dir: Path, prompts: list[str], seed: int) -> np.ndarray:
    """Gold of one answer per prompt, sampled with a seed per batch (two policies draw the same random numbers)."""
    from rlhfkit import lab
    from rlhfkit.models.sampling import generate, load_for_sampling

    model, tokenizer = load_for_sampling(model_dir)
    samples = generate(model, tokenizer, prompts, max_new_tokens=RESPONSE_LENGTH, seed=seed, seed_each_batch=True)
    return lab.gold_rewards(prompts, samples.texts)


# ------------------------------------------------------------------------------------------ one seed
def run_seed(seed: int, args) -> list[dict]:
    from rlhfkit import lab
    from rlhfkit.rl.policy_eval import paired_gain

    out = Path(args.out) / f"seed{seed}"
    cache = out / "records.json"
    records = {r["labels"]: r for r in json.loads(cache.read_text())} if cache.exists() else {}
    if all(label in records for label in LABELS):
        return [records[label] for label in LABELS]
    start = time.perf_counter()
    sft_dir = sft_model(out, seed)
    prefs = people(args.comparisons, seed)
    comparisons, ids = comparisons_file(out, args.comparisons, seed)
    fair = judge_votes(out, comparisons, lab_judge(out, seed, 0.0, args.judge_steps), seed)
    biased = judge_votes(out, comparisons, lab_judge(out, seed, POSITION_BIAS, args.judge_steps), seed)
    pairs = {
        "people": [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in prefs.train],
        "judge": vote_pairs(fair, ids),
        "judge_soft": soft_pairs(fair, ids),
        "judge_biased": vote_pairs(biased, ids),
        "judge_biased_one_order": vote_pairs(biased, ids, one_order=True),
    }
    prompts = lab.make_prompts(args.eval_prompts, seed=20_000 + seed)
    gold_sft = held_out_gold(sft_dir, prompts, seed)
    for label in LABELS:
        if label in records:
            continue
        soft = label == "judge_soft"
        rm = reward_model(out / f"rm-{label}", sft_dir, pairs[label], prefs.held_out, seed, args.rm_steps, soft)
        policy = ppo(out / f"ppo-{label}", sft_dir, rm, seed, args.ppo_updates)
        gold = held_out_gold(policy, prompts, seed)
        gain, se = paired_gain(gold_sft, gold)
        records[label] = {
            "seed": seed, "labels": label, "n_pairs": len(pairs[label]),
            "label_accuracy_vs_gold": label_accuracy(pairs[label]), "rm_accuracy_vs_gold": rm["accuracy"],
            "gold_sft": float(gold_sft.mean()), "gold_policy": float(gold.mean()), "gold_gain": gain,
            "gold_gain_se": se, "win_rate_vs_sft": float(np.mean((gold > gold_sft) + 0.5 * (gold == gold_sft))),
            "rm_steps": args.rm_steps, "eval_prompts": args.eval_prompts,
        }  # fmt: skip
        cache.write_text(json.dumps(list(records.values()), indent=1) + "\n")
    print(f"seed {seed}: {time.perf_counter() - start:.0f} s")
    return [records[label] for label in LABELS]


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [record for seed in args.seeds for record in run_seed(seed, args)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "rlaif.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"{'seed':>4} {'labels':<24}{'pairs':>6}{'label acc':>10}{'RM acc':>8}{'gold SFT':>9}{'gold RL':>8}"
          f"{'gain ± SE':>16}{'win rate':>9}")  # fmt: skip
    for r in runs:
        print(f"{r['seed']:>4} {r['labels']:<24}{r['n_pairs']:>6}{r['label_accuracy_vs_gold']:>10.3f}"
              f"{r['rm_accuracy_vs_gold']:>8.3f}{r['gold_sft']:>9.3f}{r['gold_policy']:>8.3f}"
              f"{r['gold_gain']:>+9.3f} ± {r['gold_gain_se']:.3f}{r['win_rate_vs_sft']:>9.3f}")  # fmt: skip
    for seed in args.seeds:
        gains = {r["labels"]: r["gold_gain"] for r in runs if r["seed"] == seed}
        print(f"seed {seed}: RLAIF gold gain / RLHF gold gain = {gains['judge'] / gains['people']:.2f} "
              f"(goal >= 0.80)")  # fmt: skip
    return runs


if __name__ == "__main__":
    main()
