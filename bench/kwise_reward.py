"""InstructGPT's K-wise reward loss vs pairwise expansion of the same rankings, side by side on the lab.

    .venv/bin/python bench/kwise_reward.py                          # K = 4 and K = 9, 2 epochs each
    .venv/bin/python bench/kwise_reward.py --k 4 --rankings 300 --epochs 3

For each K the lab's simulated labelers (the pipeline's default pool, one random labeler per ranking) rank K
candidate answers for ``--rankings`` prompts (``rlhfkit.lab.ranking_dataset``), expanded to their untied pairs by
``rlhfkit.data.from_rankings``. Two reward models start from the same nano lab model (built once, not SFT-trained)
with the same seed, learning rate, schedule and epochs:

* pairwise: every pair is a batch element (``group_rankings: false``, TRL's loss): 2 forward sequences per pair;
* K-wise: every ranking is a batch element (``group_rankings: true``, InstructGPT's loss): K sequences per ranking.

Both arms put the same number of sequences in a forward pass (pairwise ``--seqs / 2`` pairs, K-wise ``--seqs / K``
rankings per batch), so a step costs the same and the difference per epoch is how many sequences each needs.
Reported: wall time per epoch (the Trainer's ``train_runtime`` / epochs: the training loop, not tokenization),
optimizer steps, and accuracy against the gold reward on held-out comparisons (``rlhfkit.reward.evaluate``; pairs with
equal gold rewards left out). The arms run one after the other on a shared machine, so other load moves the times.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from rlhfkit import lab
from rlhfkit.core.arguments import trainer_config
from rlhfkit.data import from_rankings
from rlhfkit.models.loading import load_reward_model
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.evaluate import evaluate_reward_model
from rlhfkit.reward.trainer import run_reward


def gold_pairs(n: int, seed: int) -> list[dict]:
    """Held-out comparisons labelled by the gold reward (ties in gold left out)."""
    rows = lab.comparison_dataset(n, lab.LabelerPool(1, noise=0.0), seed=seed)
    return [
        {
            "prompt": r["prompt"],
            "chosen": r["response_a"] if r["gold_a"] > r["gold_b"] else r["response_b"],
            "rejected": r["response_b"] if r["gold_a"] > r["gold_b"] else r["response_a"],
        }
        for r in rows
        if r["gold_a"] != r["gold_b"]
    ]


def run_arm(base: str, pairs: list[dict], held_out: list[dict], out: Path, grouped: bool, batch: int, args) -> dict:
    config = trainer_config(
        RewardConfig,
        "reward",
        out,
        group_rankings=grouped,
        per_device_train_batch_size=batch,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # a share of the steps
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=0,
        disable_tqdm=True,
    )
    result = run_reward(base, pairs, config)
    model, tokenizer = load_reward_model(result.model_dir)
    report = evaluate_reward_model(model, tokenizer, held_out)
    return {
        "epoch_s": result.metrics["train_runtime"] / args.epochs,
        "steps": result.log_history[-1]["step"],
        "accuracy": report.accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 9], help="responses per ranking")
    parser.add_argument("--rankings", type=int, nargs="+", default=[300, 100], help="rankings, one number per K")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seqs", type=int, default=72, help="sequences per forward pass in both arms")
    parser.add_argument("--held-out", type=int, default=600, help="held-out comparisons (gold-labelled)")
    args = parser.parse_args()
    if len(args.rankings) != len(args.k):
        parser.error("--rankings takes one number per --k")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    held_out = gold_pairs(args.held_out, seed=9)
    pool = lab.LabelerPool(len(lab.DEFAULT_NOISE), noise=lab.DEFAULT_NOISE, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = str(lab.build_tiny_model(Path(tmp) / "base", "nano", seed=0))
        for k, n in zip(args.k, args.rankings):
            pairs = from_rankings(lab.ranking_dataset(n, k, pool, seed=k)).pairs
            pairwise = run_arm(base, pairs, held_out, Path(tmp) / f"pairs{k}", False, args.seqs // 2, args)
            kwise = run_arm(base, pairs, held_out, Path(tmp) / f"kwise{k}", True, max(1, args.seqs // k), args)
            rows.append((k, n, len(pairs), pairwise, kwise))
    print(f"{args.epochs:g} epochs, lr {args.lr:g}, {args.seqs} sequences per forward pass", end=", ")
    print(f"{len(held_out)} held-out pairs")
    print(f"{'K':>3}{'rankings':>10}{'pairs':>7}  {'arm':<10}{'s/epoch':>9}{'steps':>7}{'acc vs gold':>13}")
    for k, n, n_pairs, pairwise, kwise in rows:
        for name, arm in (("pairwise", pairwise), ("K-wise", kwise)):
            print(
                f"{k:>3}{n:>10}{n_pairs:>7}  {name:<10}{arm['epoch_s']:>9.1f}{arm['steps']:>7}{arm['accuracy']:>13.3f}"
            )
        speedup, gain = pairwise["epoch_s"] / kwise["epoch_s"], kwise["accuracy"] - pairwise["accuracy"]
        print(f"    K = {k}: K-wise takes {speedup:.1f}x less time per epoch; accuracy {gain:+.3f}")


if __name__ == "__main__":
    main()
