"""Reward-model evaluation throughput: rm_eval's length-sorted batches vs a one-pair-at-a-time loop, side by side.

    .venv/bin/python bench/rm_eval_throughput.py                       # 512 HH-RLHF pairs, nano lab model
    .venv/bin/python bench/rm_eval_throughput.py --data lab --pairs 2000
    .venv/bin/python bench/rm_eval_throughput.py --padding-side left   # the attention-mask path, for comparison
    .venv/bin/python bench/rm_eval_throughput.py --model ./runs/rm --device cuda --batch-size 32

Both sides score the same pairs with the same model and the same token ids (``rlhfkit.models.scoring.tokenize_pair``,
i.e. RewardTrainer's formatting), and tokenization is timed on both sides. The loop is the way most tutorials
write it: for each pair, run chosen, then rejected, each as a batch of one, and compare. rm_eval scores all 2n
sequences in batches sorted by length (``evaluate_reward_model``, which also computes the full report). Every one
of the 2n scores is checked against the loop's (``rlhfkit.models.scoring.score_token_ids`` with the same arguments,
untimed: atol 1e-5) and the two accuracies are asserted equal. The sides run alternately ``--repeats`` times and
the best wall time and the best CPU time of each are reported (on a shared machine the CPU time shows the work,
the wall time also the waiting), so that other load on the machine does not decide the ratio. Without
``--model`` a random nano lab model is built in a temporary folder: its accuracy is chance, which does not matter
for throughput. ``--data hh`` reads the HH-RLHF harmless-base test split in ../shared/data; ``--data lab`` uses
short synthetic lab pairs.

What decides the ratio on one CPU thread (nano model, 2026-12-01): the loop pays ~1.3 ms of Python and dispatch per
forward pass, which batching removes; the rest is arithmetic that batching barely reduces. Lab pairs (11-25
tokens) are almost all overhead, so batches win several times over (6-7x). HH-RLHF sequences (median 349 tokens,
up to 2,731) are compute-bound: per sequence, a batch of 16 costs within ~20% of a batch of one, and the loop's
overhead is ~1.3 s of its 6-8 s CPU, so batched scoring stays at 1.2-1.6x there (3x would need less arithmetic,
more threads or a GPU). The 0.6-0.9x measured before came from the attention mask: padded batches passed one, so
transformers built a ``(batch, 1, L, L)`` mask and SDPA attended to every key instead of running its causal kernel,
1.6x the CPU time of the same batches unmasked. Right-padded batches of a causal model now run without it
(``rlhfkit.models.scoring.score_token_ids``); ``--padding-side left`` still needs it and shows that path.
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

    from rlhfkit.models.scoring import tokenize_pair

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
    parser.add_argument(
        "--padding-side",
        choices=["right", "left"],
        default="right",
        help="rm_eval's padding (default right, as in training); left keeps the attention mask on padded batches",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load reports / long-sequence warnings
    import torch
    import transformers

    from rlhfkit.lab import build_tiny_model
    from rlhfkit.models.loading import load_reward_model
    from rlhfkit.models.scoring import resolve_pad_token_id, score_token_ids, tokenize_pair
    from rlhfkit.reward.evaluate import evaluate_reward_model

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

    def rm_eval(rows):
        return evaluate_reward_model(
            model, tokenizer, rows, batch_size=args.batch_size, device=device, padding_side=args.padding_side
        )

    one_at_a_time(model, tokenizer, pairs[:4], device)  # warm-up (kernels, allocator, lazy imports)
    rm_eval(pairs[:4])
    times: dict[str, list[tuple[float, float]]] = {"loop": [], "rm_eval": []}  # (wall, cpu) per run
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both sides alike
        wall, cpu = time.perf_counter(), time.process_time()
        loop_chosen, loop_rejected = one_at_a_time(model, tokenizer, pairs, device)
        times["loop"].append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        report = rm_eval(pairs)
        times["rm_eval"].append((time.perf_counter() - wall, time.process_time() - cpu))
    runs = "; ".join(f"{side} " + ", ".join(f"{w:.2f} / {c:.2f}" for w, c in t) for side, t in times.items())
    print(f"runs (wall / cpu s): {runs}; the best of each is shown")
    (loop_s, loop_cpu), (batched_s, batched_cpu) = (
        (min(w for w, _ in runs), min(c for _, c in runs)) for runs in times.values()
    )

    loop_accuracy = float(np.mean(loop_chosen > loop_rejected))
    n = len(pairs)
    print(f"{'method':<64}{'wall s':>8}{'cpu s':>8}{'pairs/s':>9}{'accuracy':>10}")
    label = "one pair at a time (tutorial loop)"
    print(f"{label:<64}{loop_s:>8.2f}{loop_cpu:>8.2f}{n / loop_s:>9.1f}{loop_accuracy:>10.3f}")
    label = f"rm_eval (length-sorted, batch {args.batch_size}, {args.padding_side} padding, full report)"
    print(f"{label:<64}{batched_s:>8.2f}{batched_cpu:>8.2f}{n / batched_s:>9.1f}{report.accuracy:>10.3f}")
    print(f"speed-up: {loop_s / batched_s:.1f}x wall, {loop_cpu / batched_cpu:.1f}x cpu")

    # the scores behind the report: the same call evaluate_reward_model makes, checked one by one against the loop
    ids = [tokenize_pair(tokenizer, pair) for pair in pairs]
    scores = score_token_ids(
        model,
        [c for c, _ in ids] + [r for _, r in ids],
        pad_token_id=resolve_pad_token_id(model, tokenizer),
        batch_size=args.batch_size,
        padding_side=args.padding_side,
        device=device,
    )
    diff = float(np.abs(scores - np.concatenate([loop_chosen, loop_rejected])).max())
    print(f"largest score difference, batched vs loop, over all {2 * n} sequences: {diff:.1e}")
    assert diff <= 1e-5, "batched and looped scores differ"
    assert abs(report.chosen_mean - scores[:n].mean()) < 1e-9, "the report is not built on these scores"
    assert report.accuracy == loop_accuracy, (report.accuracy, loop_accuracy)


if __name__ == "__main__":
    main()
