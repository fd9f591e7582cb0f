"""Iterative RLHF on the lab at an equal label budget: one round with the whole budget vs three rounds with a third.

    nice -n 10 .venv/bin/python bench/rounds.py --out runs/bench/rounds              # seeds 0 and 1, resumable
    .venv/bin/python bench/rounds.py --out runs/bench/rounds --seeds 0 --eval-prompts 200

Per seed and algorithm (``--algorithms``: PPO and DPO), two pipeline runs (``rlhfkit.pipeline.runner.run_pipeline``,
the demo's config shrunk by the flags) that share the seed's one SFT model (the later runs' manifests record the
first's sft stage):

* ``rounds: 1``: ``preferences.source: comparisons``, the SFT model's ``--k`` answers to ``--prompts`` lab prompts
  labelled by the demo's 5 lab labelers (agreement-filtered), a reward model, PPO for ``--ppo-updates`` updates (DPO:
  ``--dpo-steps`` steps on the labelled pairs);
* ``rounds: 3``: a third of the prompts in round 1 and a third in each of rounds 2 and 3 (answers of the last
  policy, ``rounds.reward_refresh: continue``, ``rounds.mix``), PPO for a third of the updates per round (DPO: a
  third of the steps, rounds 2 and 3 on each prompt's best vs worst answer by the refreshed reward model, RLHFlow's
  way): the same total comparisons and RL steps.

Measured on ``--eval-prompts`` held-out prompts (final_eval: one answer per prompt, paired with the SFT model's):
``gold_sft``, ``gold_policy`` (with ``gold_policy_se``: its standard error over prompts), ``win_rate_vs_sft`` (by
gold, ties one half); ``rm_accuracy_on_final_policy``: the run's last reward model's accuracy against gold on every
pair of ``--k`` answers of the returned policy to the held-out prompts (gold ties dropped). ``labels_total``: the
pairwise comparisons labelled over all rounds. Writes ``<out>/rounds.json`` and prints the table. The gate is
overridden in both conditions (a small budget; the bench compares, it does not gate).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from importlib.resources import files
from pathlib import Path

import yaml


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench/rounds", help="output folder (runs, rounds.json)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--prompts", type=int, default=72, help="prompts labelled in all (the lab has 72 distinct)")
    p.add_argument("--k", type=int, default=4, help="answers per prompt (k(k-1)/2 pairs each)")
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--rm-steps", type=int, default=300, help="reward-model steps per round")
    p.add_argument("--ppo-updates", type=int, default=24, help="PPO updates of 64 prompts in all")
    p.add_argument("--dpo-steps", type=int, default=60, help="DPO steps in all")
    p.add_argument("--algorithms", nargs="+", default=["ppo", "dpo"], choices=["ppo", "dpo"])
    p.add_argument("--mix", type=float, default=0.5)
    p.add_argument("--eval-prompts", type=int, default=300)
    return p.parse_args(argv)


def config(args, out: Path, seed: int, rounds: int, algorithm: str) -> dict:
    cfg = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())
    cfg.update(output_dir=str(out), seed=seed)
    cfg["lab"].update(demonstrations=1000, rl_prompts=512)
    cfg["sft"].update(max_steps=args.sft_steps, save_steps=10_000)
    cfg["reward"].update(max_steps=args.rm_steps, save_steps=10_000)
    cfg["data"] = {"eval_fraction": 0.2}
    per_round = args.prompts // rounds
    cfg["preferences"] = {"source": "comparisons", "prompts": per_round, "k": args.k, "max_new_tokens": 24}
    cfg["rounds"] = {"count": rounds, "prompts_per_round": per_round, "k": args.k, "mix": args.mix}
    cfg["gate"]["override"] = True
    cfg["ppo"].update(total_episodes=64 * (args.ppo_updates // rounds), save_steps=10_000)
    cfg["dpo"].update(max_steps=args.dpo_steps // rounds, save_steps=10_000)
    cfg["rl"]["algorithm"] = algorithm
    cfg["rl"]["eval_prompts"] = args.eval_prompts
    return cfg


def rm_accuracy_on_policy(cfg, manifest, k: int) -> float:
    """The last reward model's accuracy vs gold on every pair of ``k`` answers of the returned policy to the held-out
    prompts (pairs of equal gold dropped)."""
    from itertools import combinations

    from rlhfkit.data.comparisons import read_comparisons
    from rlhfkit.feedback.sample import sample_comparisons
    from rlhfkit.models.sampling import load_for_sampling
    from rlhfkit.models.scoring import load_scorer
    from rlhfkit.pipeline.round_config import round_stage
    from rlhfkit.pipeline.stages import gold_labelled, rl_prompts
    from rlhfkit.reward.evaluate import evaluate_reward_model

    last = cfg.rounds.count
    out = cfg.output_dir / "bench_rm_on_policy.jsonl"
    policy = manifest.stage(round_stage(last, "rl"))["outputs"]["model_dir"]
    model, tokenizer = load_for_sampling(policy, cfg.model.preset)
    prompts = list(dict.fromkeys(rl_prompts_of(cfg, rl_prompts)))
    sample_comparisons(model, tokenizer, prompts, k=k, out=out, model_name="final", max_new_tokens=24, seed=cfg.seed)
    pairs = [
        {"prompt": r["prompt"], "chosen": r["responses"][i], "rejected": r["responses"][j]}
        for r in read_comparisons(out)
        for i, j in combinations(range(len(r["responses"])), 2)
    ]
    rm, rm_tokenizer = load_scorer(manifest.stage(round_stage(last, "reward"))["outputs"]["model_dir"], "full")
    max_length = cfg.trainer_config("reward").max_length
    return evaluate_reward_model(rm, rm_tokenizer, gold_labelled(pairs), max_length=max_length).accuracy


def rl_prompts_of(cfg, rl_prompts) -> list:
    from rlhfkit.pipeline.context import StageContext

    return rl_prompts(StageContext(cfg=cfg, manifest=None, outputs={}, say=print))[1]  # the held-out prompts


def run_one(args, root: Path, seed: int, rounds: int, algorithm: str) -> dict:
    from rlhfkit.pipeline.config import load_config
    from rlhfkit.pipeline.manifest import Manifest
    from rlhfkit.pipeline.runner import run_pipeline

    out = root / f"seed{seed}" / f"{algorithm}-rounds{rounds}"
    cfg = load_config(config(args, out, seed, rounds, algorithm))
    first = root / f"seed{seed}" / f"{args.algorithms[0]}-rounds1"
    if out != first:  # the seed's first run's SFT model, shared
        base = Manifest(first).stage("sft")
        manifest = Manifest(out)
        if manifest.stage("sft") != base:
            manifest.data["stages"] = {"sft": base}
            manifest.save()
    start = time.perf_counter()
    manifest = run_pipeline(cfg, say=print)
    final = manifest.stage("final_eval")["metrics"]
    samples = [json.loads(line) for line in open(manifest.stage("final_eval")["outputs"]["samples"])]
    golds = [row["gold_rl"] for row in samples]
    mean = sum(golds) / len(golds)
    se = math.sqrt(sum((g - mean) ** 2 for g in golds) / (len(golds) - 1) / len(golds))
    labels = [manifest.stage(s)["metrics"].get("n_labelled_pairs", 0) for s in cfg.stages() if "preferences" in s]
    return {
        "algorithm": algorithm,
        "seed": seed,
        "rounds": rounds,
        "labels_total": sum(labels),
        "gold_sft": final["gold_sft"],
        "gold_policy": final["gold_rl"],
        "gold_policy_se": se,
        "gold_gain": final["gold_gain"],
        "gold_gain_se": final["gold_gain_sem"],
        "win_rate_vs_sft": final["win_rate_gold"],
        "rm_accuracy_on_final_policy": rm_accuracy_on_policy(cfg, manifest, args.k),
        "kl_to_sft": final["kl_rl"],
        "seconds": time.perf_counter() - start,
        "gold_per_prompt": golds,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        for algorithm in args.algorithms:
            for rounds in (1, 3):
                results.append(run_one(args, root, seed, rounds, algorithm))
                (root / "rounds.json").write_text(json.dumps(results, indent=1))
    print(
        f"\n{'alg':>4} {'seed':>4} {'rounds':>6} {'labels':>6} {'gold SFT':>9} {'gold policy':>15} {'win vs SFT':>10} "
        f"{'RM acc. final policy':>20} {'KL':>6}"
    )
    for r in results:
        print(
            f"{r['algorithm']:>4} {r['seed']:>4} {r['rounds']:>6} {r['labels_total']:>6} {r['gold_sft']:>9.4f} "
            f"{r['gold_policy']:>8.4f} ± {r['gold_policy_se']:.4f} {r['win_rate_vs_sft']:>10.3f} "
            f"{r['rm_accuracy_on_final_policy']:>20.3f} {r['kl_to_sft']:>6.2f}"
        )
    for seed, algorithm in ((s, a) for s in args.seeds for a in args.algorithms):
        one, three = (
            next(r for r in results if (r["seed"], r["algorithm"], r["rounds"]) == (seed, algorithm, n))
            for n in (1, 3)
        )
        diff = [b - a for a, b in zip(one["gold_per_prompt"], three["gold_per_prompt"])]  # the same prompts
        mean = sum(diff) / len(diff)
        se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff))
        print(
            f"{algorithm} seed {seed}: 3 rounds - 1 round, gold {mean:+.4f} ± {se:.4f} (paired SE over prompts); "
            f"RM accuracy on the final policy {three['rm_accuracy_on_final_policy']:.3f} vs "
            f"{one['rm_accuracy_on_final_policy']:.3f}"
        )


if __name__ == "__main__":
    main()
