"""Why the lab judge is weak: its accuracy against gold beside simple rules' on the same held-out pairs.

    nice -n 5 .venv/bin/python bench/lab_judge_probe.py                               # the default judge, seed 0
    nice -n 5 .venv/bin/python bench/lab_judge_probe.py --hidden 128 --layers 4 --heads 4
    nice -n 5 .venv/bin/python bench/lab_judge_probe.py --lr 4e-3 --steps 800 --lm-weight 2.0 --equal-share 0.2

Builds one lab judge (:func:`rlhfkit.feedback.lab_judge.build_judge`; ``--hidden/--layers/--heads`` replace
``rlhfkit.lab.TINY_SIZES["judge"]`` in this process only, ``--lm-weight`` replaces ``LM_WEIGHT``), labels held-out
lab pairs through :func:`rlhfkit.feedback.judge.judge_file` (both orders, one principle per pair, tie margin 0) and
prints one JSON line: build seconds, the final training loss of the answer token, accuracy against gold (both
orders and one order), the share of length-differing pairs where the judge picks the longer answer (and where gold
does), and the accuracy of four rules that read no model on the same pairs: ``shorter`` (fewer items wins),
``closer_to_n`` (item count nearer the requested count), ``fewer_wrong`` (fewer items outside the category) and
``right_minus_wrong``. A judge whose accuracy and longer-pick rate match ``shorter`` has learned only to count.

``--pretrain-steps K`` runs K steps of (almost) only the judging prompts' LM loss first (a small pre-training).
``--equal-share q`` is a curriculum probe: the taught comparisons keep every pair of equal item counts (whose only
signal is which items belong to the category) and a share ``q`` of the others.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path


def rules(prompt: str, a: str, b: str) -> dict[str, int]:
    """Each rule's sign: > 0 prefers ``a``, < 0 ``b``, 0 a tie."""
    from rlhfkit import lab

    category, n = lab.parse_prompt(prompt)
    words = set(lab.CATEGORIES[category])

    def wrong(x: str) -> int:
        return sum(item not in words for item in lab.parse_items(x))

    def right(x: str) -> int:
        return sum(item in words for item in lab.parse_items(x))

    ca, cb = lab.count_items(a), lab.count_items(b)
    return {
        "shorter": cb - ca,
        "closer_to_n": abs(cb - n) - abs(ca - n),
        "fewer_wrong": wrong(b) - wrong(a),
        "right_minus_wrong": (right(a) - wrong(a)) - (right(b) - wrong(b)),
    }


def _equal_share_examples(original, share: float):
    """``training_examples`` keeping every equal-length comparison and a ``share`` of the others."""
    from rlhfkit import lab

    def examples(n_train, principles, **knobs):
        pool, out, rng = original(4 * n_train, principles, **knobs), [], random.Random(99)
        for i in range(0, len(pool), 2):
            text = pool[i][0][0]["content"]
            first = text.split("Response 1: ")[1].split("\n\nResponse 2: ")[0]
            second = text.split("Response 2: ")[1].split("\n\nWhich")[0]
            if lab.count_items(first) == lab.count_items(second) or rng.random() < share:
                out += pool[i : i + 2]
            if len(out) >= 2 * n_train:
                break
        return out

    return examples


def _with_pretraining(lab_judge, pretrain_steps: int):
    """``_train`` preceded by ``pretrain_steps`` steps whose loss is the prompts' LM loss x 100 plus the answer's:
    the model learns the lab's words (which items go with which category) before it learns to judge."""
    original, weight = lab_judge._train, lab_judge.LM_WEIGHT

    def train(model, ids, targets, pad_token_id, *, steps, learning_rate, seed):
        lab_judge.LM_WEIGHT = 100.0
        original(model, ids, targets, pad_token_id, steps=pretrain_steps, learning_rate=learning_rate, seed=seed)
        lab_judge.LM_WEIGHT = weight
        return original(model, ids, targets, pad_token_id, steps=steps, learning_rate=learning_rate, seed=seed + 1)

    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=None, help="judge hidden size (default: TINY_SIZES['judge'])")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--lm-weight", type=float, default=None)
    ap.add_argument("--equal-share", type=float, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="steps of (almost) only the prompts' LM loss first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-prompts", type=int, default=400, help="held-out prompts (seed 777), one pair each")
    args = ap.parse_args()

    import rlhfkit.feedback.lab_judge as lab_judge
    from rlhfkit import lab

    saved = lab.TINY_SIZES["judge"], lab_judge.LM_WEIGHT, lab_judge.training_examples, lab_judge._train
    try:
        _probe(args, saved[0])
    finally:  # the overrides are this process's; put them back (the benchmark test runs it in pytest's process)
        lab.TINY_SIZES["judge"], lab_judge.LM_WEIGHT, lab_judge.training_examples, lab_judge._train = saved


def _probe(args, base) -> None:
    """Build, judge and print (module docstring)."""
    import dataclasses

    import numpy as np

    import rlhfkit.feedback.lab_judge as lab_judge
    from rlhfkit import lab
    from rlhfkit.data.comparisons import comparison_row
    from rlhfkit.data.judge_votes import gold_accuracy
    from rlhfkit.data.votelog import read_vote_log
    from rlhfkit.feedback.judge import judge_file

    hidden = args.hidden or base.hidden_size
    lab.TINY_SIZES["judge"] = dataclasses.replace(
        base,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=args.layers or base.num_hidden_layers,
        num_attention_heads=args.heads or base.num_attention_heads,
    )
    if args.lm_weight is not None:
        lab_judge.LM_WEIGHT = args.lm_weight
    if args.equal_share is not None:
        lab_judge.training_examples = _equal_share_examples(lab_judge.training_examples, args.equal_share)
    if args.pretrain_steps:
        lab_judge._train = _with_pretraining(lab_judge, args.pretrain_steps)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        path = lab_judge.build_judge(
            Path(tmp) / "judge", n_train=args.n_train, steps=args.steps, learning_rate=args.lr, seed=args.seed
        )
        build_s = time.time() - start
        rng, rows = random.Random(12345), []
        for prompt in lab.make_prompts(args.eval_prompts, seed=777):
            a, b = lab.candidates(prompt, 2, rng)
            if a != b:
                rows.append(comparison_row(prompt, [a, b]))
        comparisons = Path(tmp) / "comparisons.jsonl"
        comparisons.write_text("".join(json.dumps(r) + "\n" for r in rows))
        judge_file(comparisons, Path(tmp) / "votes.jsonl", model=path, principles_per_pair=1, tie_margin=0.0)
        votes = read_vote_log(Path(tmp) / "votes.jsonl")
        final_loss = json.loads((path / "lab_judge.json").read_text())["final_loss"]

    hits: dict[str, list[float]] = {name: [] for name in rules("Q: List 1 fruits.\nA:", "a.", "b.")}
    judge_longer, gold_longer = [], []
    for r in votes:
        i, j = r["pair"]
        prompt, a, b = r["prompt"], r["responses"][i], r["responses"][j]
        ga, gb = lab.gold_reward(prompt, a), lab.gold_reward(prompt, b)
        if ga == gb:
            continue
        for name, sign in rules(prompt, a, b).items():
            hits[name].append(0.5 if sign == 0 else float((sign > 0) == (ga > gb)))
        if lab.count_items(a) != lab.count_items(b):
            a_longer = lab.count_items(a) > lab.count_items(b)
            judge_longer.append(float((r["label"] == "a") == a_longer))
            gold_longer.append(float((ga > gb) == a_longer))
    accuracy, n = gold_accuracy(votes)
    print(
        json.dumps(
            {
                **vars(args),
                "size": dataclasses.asdict(lab.TINY_SIZES["judge"]),
                "build_s": round(build_s, 1),
                "final_loss": round(final_loss, 3),
                "accuracy": round(accuracy, 3),
                "accuracy_one_order": round(gold_accuracy(votes, order=0)[0], 3),
                "n_pairs": n,
                "judge_picks_longer": round(float(np.mean(judge_longer)), 3),
                "gold_picks_longer": round(float(np.mean(gold_longer)), 3),
                "rules": {name: round(float(np.mean(h)), 3) for name, h in hits.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
