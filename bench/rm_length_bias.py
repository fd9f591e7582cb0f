"""Length bias of saved lab reward models, before any RL: rm_eval's statistics on held-out gold-labelled lab pairs
and, on the SFT policy's own samples, the within-prompt Spearman of the reward (and of the gold reward) with length.

    OMP_NUM_THREADS=1 python bench/rm_length_bias.py NAME=REWARD_DIR:SFT_DIR:SEED [...] --out rm_length.json
    # e.g. the demo's and bench/overoptimization.py's reward models:
    python bench/rm_length_bias.py demo=runs/demo/reward/model:runs/demo/sft/model:0 \
        bias0.5=GRID/seed0/bias0.5/rm-bias0.5/model:GRID/seed0/sft/model:0

An ensemble (``ensemble.json``) is reported as member 0 and as the members' mean standardised score
(:func:`rlhfkit.reward.evaluate.evaluate_ensemble`). ``length_margin_spearman`` (margin vs length difference within
pairs) does not depend on the labels; rm_eval warns above 0.3 and ``gate.max_pair_length_bias`` can refuse RL.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

KEYS = ("accuracy", "length_spearman", "length_margin_spearman", "longer_preferred_rate", "chosen_longer_rate",
        "accuracy_chosen_longer", "accuracy_chosen_shorter")  # fmt: skip


def held_out_pairs(seed: int) -> list[dict]:
    """The rm_eval stage's lab pairs (:func:`rlhfkit.data.tables.lab_preferences`: chosen = higher gold)."""
    from rlhfkit import lab

    rows = lab.comparison_dataset(600, lab.LabelerPool(1, seed=seed), seed=seed + 2)
    return [{"prompt": r["prompt"], "chosen": r["response_a"] if r["gold_a"] > r["gold_b"] else r["response_b"],
             "rejected": r["response_b"] if r["gold_a"] > r["gold_b"] else r["response_a"]}
            for r in rows if r["gold_a"] != r["gold_b"]]  # fmt: skip


def within_prompt(score, sft: str, seed: int, n_prompts: int = 64, k: int = 8) -> tuple[float, float]:
    """Mean over prompts of Spearman(score, length) and Spearman(gold, length) over k samples of the SFT policy."""
    from scipy.stats import spearmanr

    from rlhfkit import lab
    from rlhfkit.models.scoring import sample_responses

    prompts = [p for p in lab.make_prompts(n_prompts, seed=20_000 + seed) for _ in range(k)]
    texts = sample_responses(sft, prompts, 24, seed)
    s, g = np.asarray(score(prompts, texts), float), np.asarray(lab.gold_rewards(prompts, texts), float)
    length = np.array([len(t) for t in texts], float)
    out = []
    for values in (s, g):
        rhos = [spearmanr(values[i : i + k], length[i : i + k]).statistic for i in range(0, len(texts), k)
                if np.ptp(values[i : i + k]) > 0 and np.ptp(length[i : i + k]) > 0]  # fmt: skip
        out.append(float(np.nanmean(rhos)))
    return out[0], out[1]


def measure(rm_dir: str, sft: str, seed: int) -> dict[str, dict]:
    from rlhfkit.models.scoring import load_reward_function, load_scorer
    from rlhfkit.reward.evaluate import evaluate_ensemble, evaluate_reward_model

    pairs, fn = held_out_pairs(seed), load_reward_function(rm_dir)
    if hasattr(fn, "members"):
        ens = evaluate_ensemble(fn, pairs)
        reports = {"member0": ens.members[0], "ensemble": ens.ensemble}
        scores = {"member0": lambda p, c: fn.member_scores(p, c)[0].tolist(),
                  "ensemble": lambda p, c: fn.member_scores(p, c).float().mean(0).tolist()}  # fmt: skip
    else:
        model, tokenizer = load_scorer(rm_dir)
        reports, scores = {"single": evaluate_reward_model(model, tokenizer, pairs)}, {"single": fn}
    out = {}
    for name, report in reports.items():
        rm, gold = within_prompt(scores[name], sft, seed)
        out[name] = {**{k: getattr(report, k) for k in KEYS}, "within_prompt_spearman": rm, "gold_within_prompt": gold}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="NAME=REWARD_DIR:SFT_DIR:SEED")
    p.add_argument("--out", default="rm_length.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = {}
    for spec in args.models:
        name, rest = spec.split("=", 1)
        rm_dir, sft, seed = rest.rsplit(":", 2)
        for kind, row in measure(rm_dir, sft, int(seed)).items():
            results[f"{name} {kind}"] = row
            print(f"{name} {kind}", json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
