"""Wrapper overhead: rlhfkit's run_sft / run_reward vs the same TRL trainer called directly.

    python bench/stage_overhead.py [--steps 200] [--repeats 3]

Both sides train the lab's nano model with identical settings (same config object fields, data, seed);
the rlhfkit side also loads through rlhfkit.models.loading, measures the held-out loss before/after (off here: no
eval set, to compare training alone) and saves the final model atomically. Runs alternate and the best
of ``--repeats`` is kept for each side. Goal: ratio within 1.05.
"""

import argparse
import tempfile
import time
from pathlib import Path


def _pairs(n):
    from rlhfkit import lab
    from rlhfkit.data import from_votes

    rows = lab.comparison_dataset(n, lab.LabelerPool(5, noise=0.2, seed=0), seed=1)
    return [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in from_votes(rows).pairs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    from rlhfkit import lab
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.reward.trainer import run_reward
    from rlhfkit.sft import run_sft

    tmp = Path(tempfile.mkdtemp())
    base = lab.build_tiny_model(tmp / "base", "nano")
    demos = Dataset.from_list(lab.demonstrations(2000))
    pairs = Dataset.from_list(_pairs(2000))
    common = dict(
        max_steps=args.steps,
        per_device_train_batch_size=32,
        learning_rate=1e-3,
        save_strategy="no",
        report_to=[],
        seed=0,
        logging_steps=1000,
        disable_tqdm=True,
    )

    def direct_sft(out):
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base)
        t = SFTTrainer(
            model=model,
            args=trainer_config(SFTConfig, "sft", out, **common),
            train_dataset=demos,
            processing_class=tok,
        )
        t.train()
        t.save_model(str(Path(out) / "model"))

    def direct_reward(out):
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        t = RewardTrainer(
            model=model,
            args=trainer_config(RewardConfig, "reward", out, **common),
            train_dataset=pairs,
            processing_class=tok,
        )
        t.train()
        t.save_model(str(Path(out) / "model"))

    sides = {
        "sft": (lambda out: run_sft(base, demos, trainer_config(SFTConfig, "sft", out, **common)), direct_sft),
        "reward": (
            lambda out: run_reward(base, pairs, trainer_config(RewardConfig, "reward", out, **common)),
            direct_reward,
        ),
    }
    print(f"{'stage':8} {'rlhfkit s':>10} {'TRL s':>10} {'ratio':>7}")
    for stage, (ours, theirs) in sides.items():
        best = {"rlhfkit": float("inf"), "trl": float("inf")}
        for i in range(args.repeats):
            for name, fn in (
                (("rlhfkit", ours), ("trl", theirs)) if i % 2 == 0 else (("trl", theirs), ("rlhfkit", ours))
            ):
                start = time.perf_counter()
                fn(tmp / f"{stage}-{name}-{i}")
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"{stage:8} {best['rlhfkit']:10.2f} {best['trl']:10.2f} {best['rlhfkit'] / best['trl']:7.3f}")


if __name__ == "__main__":
    main()
