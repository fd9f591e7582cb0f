"""Reward-model evaluation throughput: rm_eval's length-sorted batches vs a one-pair-at-a-time loop, side by side.

    .venv/bin/python bench/rm_eval_throughput.py                       # 512 HH-RLHF pairs, nano lab model
    .venv/bin/python bench/rm_eval_throughput.py --data lab --pairs 2000
    .venv/bin/python bench/rm_eval_throughput.py --model ./runs/rm --device cuda --batch-size 32

Both sides score the same pairs with the same model and the same token ids (``rlhfkit.rm_eval.tokenize_pair``,
i.e. RewardTrainer's formatting), and tokenization is timed on both sides. The loop is the way most tutorials
write it: for each pair, run chosen, then rejected, each as a batch of one, and compare. rm_eval scores all 2n
sequences in batches sorted by length (``evaluate_reward_model``, which also computes the full report). The two
accuracies are asserted equal (scores agree to 1e-4). The sides run alternately ``--repeats`` times and the best
time of each is reported, so that other load on the machine does not decide the ratio. Without ``--model`` a
random nano lab model is built in a temporary folder: its accuracy is chance, which does not matter for
throughput. ``--data hh`` reads the HH-RLHF harmless-base test split in ../shared/data; ``--data lab`` uses short
synthetic lab pairs.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

HH_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def lab_pairs(n: int, seed: int = 0) -> list[dict]:
    from rlhfkit import lab

    rng = random.Random(seed)
    pairs = []
    for prompt in lab.make_prompts(n, seed=seed):
        a, b = lab.candidates(prompt, 2, rng)
        if a != b:
            pairs.append({"prompt": prompt, "chosen": a, "rejected": b})
    return pairs


def one_at_a_time(model, tokenizer, pairs: list[dict], device) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial loop: two forward passes of one sequence per pair."""
    import torch

    from rlhfkit.scoring import tokenize_pair

    model.eval()
    r_chosen, r_rejected = [], []
    with torch.inference_mode():
        for pair in pairs:
            chosen, rejected = tokenize_pair(tokenizer, pair)
            r_chosen.append(model(input_ids=torch.tensor([chosen], device=device)).logits[0, 0].item())
            r_rejected.append(model(input_ids=torch.tensor([rejected], device=device)).logits[0, 0].item())
    return np.array(r_chosen), np.array(r_rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="reward model folder or hub id (default: a random nano lab model)")
    parser.add_argument("--data", choices=["hh", "lab"], default="hh", help="HH-RLHF test pairs or lab pairs")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: on a busy machine, OpenMP threads waiting for descheduled peers "
        "make multi-threaded timings erratic, up to 100x per forward pass); 0 = torch's default",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load reports / long-sequence warnings
    import torch
    import transformers

    from rlhfkit.lab import build_tiny_model
    from rlhfkit.models import load_reward_model
    from rlhfkit.rm_eval import evaluate_reward_model

    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data == "hh":
        from rlhfkit.data import from_hh

        pairs = from_hh(HH_FILE).pairs[: args.pairs]
    else:
        pairs = lab_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model, tokenizer = load_reward_model(args.model or build_tiny_model(Path(tmp) / "nano", size="nano"))
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(pairs)} {args.data} pairs, {n_params / 1e6:.2f}M-parameter reward model on {device}, "
        f"{torch.get_num_threads()} threads"
    )

    one_at_a_time(model, tokenizer, pairs[:4], device)  # warm-up (kernels, allocator, lazy imports)
    evaluate_reward_model(model, tokenizer, pairs[:4], batch_size=args.batch_size, device=device)
    loop_times, batched_times = [], []
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both sides alike
        t0 = time.perf_counter()
        loop_chosen, loop_rejected = one_at_a_time(model, tokenizer, pairs, device)
        loop_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        report = evaluate_reward_model(model, tokenizer, pairs, batch_size=args.batch_size, device=device)
        batched_times.append(time.perf_counter() - t0)
    loop_s, batched_s = min(loop_times), min(batched_times)
    print("runs (s): loop " + ", ".join(f"{t:.2f}" for t in loop_times), end="; ")
    print("rm_eval " + ", ".join(f"{t:.2f}" for t in batched_times) + "; the best of each is shown")

    loop_accuracy = float(np.mean(loop_chosen > loop_rejected))
    n = len(pairs)
    print(f"{'method':<52}{'seconds':>10}{'pairs/s':>10}{'accuracy':>10}")
    print(f"{'one pair at a time (tutorial loop)':<52}{loop_s:>10.2f}{n / loop_s:>10.1f}{loop_accuracy:>10.3f}")
    label = f"rm_eval (length-sorted, batch {args.batch_size}, full report)"
    print(f"{label:<52}{batched_s:>10.2f}{n / batched_s:>10.1f}{report.accuracy:>10.3f}")
    print(f"speed-up: {loop_s / batched_s:.1f}x")
    assert abs(report.chosen_mean - loop_chosen.mean()) < 1e-4, "batched and looped scores differ"
    assert report.accuracy == loop_accuracy, (report.accuracy, loop_accuracy)


if __name__ == "__main__":
    main()
