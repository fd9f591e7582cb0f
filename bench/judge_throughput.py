"""Judge throughput: the judge's batched both-order scoring vs a one-sequence-at-a-time loop, same probabilities.

    .venv/bin/python bench/judge_throughput.py                      # 256 lab pairs, a lab judge (built here)
    .venv/bin/python bench/judge_throughput.py --pairs 1000 --batch-size 32
    .venv/bin/python bench/judge_throughput.py --model ./runs/lab-judge --device cuda

Both sides score the same pairs, in both orders, under the same principle, with the same model, and both include
tokenization. The loop is the way a tutorial writes it: for each pair and each order, render the judging prompt with
the chat template, tokenize it, run one forward pass of one sequence and read ``P(1) / (P(1) + P(2))`` from the last
position's logits. The judge (:func:`rlhfkit.feedback.judge.score_pairs`) renders and tokenizes everything at once,
sorts the pairs by length and runs ``--batch-size`` pairs per pass (both orders of each in one batch), left
padded with counted positions, computing only the last position's logits. Every one of the 2n probabilities is
checked against the loop's (atol 1e-5). The sides run alternately ``--repeats`` times and the best wall time and best
CPU time of each are reported, so other load on the shared machine does not decide the ratio. Without ``--model`` a
lab judge is trained for ``--judge-steps`` steps in a temporary folder (competence does not matter for throughput;
the architecture and the prompt lengths do).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def lab_jobs(n: int, principle: str, seed: int = 0) -> list[tuple[str, str, str, str]]:
    from rlhfkit import lab

    rng = random.Random(seed)
    jobs = []
    for prompt in lab.make_prompts(2 * n, seed=seed):
        a, b = lab.candidates(prompt, 2, rng)
        if a != b and len(jobs) < n:
            jobs.append((principle, prompt, a, b))
    return jobs


def one_at_a_time(judge, jobs) -> np.ndarray:
    """The tutorial loop: one forward pass of one sequence per pair and order."""
    import torch

    from rlhfkit.feedback.judge import judging_messages

    device = next(judge.model.parameters()).device
    first, second = judge.answer_ids
    out = []
    with torch.inference_mode():
        for principle, prompt, a, b in jobs:
            probs = []
            for x, y in ((a, b), (b, a)):
                text = judge.tokenizer.apply_chat_template(
                    judging_messages(principle, prompt, x, y), add_generation_prompt=True, tokenize=False
                )
                ids = judge.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
                logits = judge.model(input_ids=ids).logits[0, -1].float()
                probs.append(torch.sigmoid(logits[first] - logits[second]).item())
            out.append([probs[0], 1.0 - probs[1]])
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="judge model folder or hub id (default: a lab judge built here)")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (x 2 orders)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    parser.add_argument("--judge-steps", type=int, default=50, help="training steps of the lab judge built here")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (default 1: steadier on a shared machine)"
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    from rlhfkit.feedback.judge import DEFAULT_CONSTITUTION, load_judge, score_pairs
    from rlhfkit.feedback.lab_judge import build_judge

    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_judge(Path(tmp) / "lab-judge", n_train=200, steps=args.judge_steps)
        judge = load_judge(model)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    judge.model.to(device)
    jobs = lab_jobs(args.pairs, DEFAULT_CONSTITUTION[0].text)
    n_params = sum(p.numel() for p in judge.model.parameters())
    threads = torch.get_num_threads()
    print(f"{len(jobs)} lab pairs x 2 orders, {n_params / 1e6:.2f}M-parameter judge on {device}, {threads} threads")

    one_at_a_time(judge, jobs[:4])  # warm-up (kernels, allocator, lazy imports)
    score_pairs(judge, jobs[:4], args.batch_size)
    times: dict[str, list[tuple[float, float]]] = {"loop": [], "batched": []}  # (wall, cpu) per run
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both sides alike
        wall, cpu = time.perf_counter(), time.process_time()
        looped = one_at_a_time(judge, jobs)
        times["loop"].append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        batched = score_pairs(judge, jobs, args.batch_size)
        times["batched"].append((time.perf_counter() - wall, time.process_time() - cpu))
    runs = "; ".join(f"{side} " + ", ".join(f"{w:.2f} / {c:.2f}" for w, c in t) for side, t in times.items())
    print(f"runs (wall / cpu s): {runs}; the best of each is shown")
    (loop_s, loop_cpu), (batched_s, batched_cpu) = (
        (min(w for w, _ in runs), min(c for _, c in runs)) for runs in times.values()
    )
    n = len(jobs)
    print(f"{'method':<60}{'wall s':>8}{'cpu s':>8}{'pairs/s':>9}")
    print(f"{'one sequence at a time (tutorial loop)':<60}{loop_s:>8.2f}{loop_cpu:>8.2f}{n / loop_s:>9.1f}")
    label = f"judge (length-sorted, {2 * args.batch_size} sequences per pass)"
    print(f"{label:<60}{batched_s:>8.2f}{batched_cpu:>8.2f}{n / batched_s:>9.1f}")
    print(f"speed-up: {loop_s / batched_s:.1f}x wall, {loop_cpu / batched_cpu:.1f}x cpu")
    diff = float(np.abs(batched - looped).max())
    print(f"largest probability difference, batched vs loop, over all {2 * n} one-order probabilities: {diff:.1e}")
    assert diff <= 1e-5, "batched and looped probabilities differ"


if __name__ == "__main__":
    main()
