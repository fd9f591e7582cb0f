"""Sampling throughput: ``rlhfkit sample``'s batched sampler vs a one-prompt-at-a-time ``model.generate`` loop, side by
side, with greedy decoding so that both must produce the same tokens.

    .venv/bin/python bench/sample_throughput.py                          # 96 lab prompts, K = 4, a demo-size model
    .venv/bin/python bench/sample_throughput.py --prompts 128 --max-new-tokens 64
    .venv/bin/python bench/sample_throughput.py --model ./runs/demo/sft/model --device cuda

Batched: :func:`rlhfkit.models.sampling.generate` at ``temperature=0`` (greedy: ``do_sample=False``), the
``generate_ids`` loop ``rlhfkit sample`` and the final evaluation sample with: K sequences per prompt, left-padded
batches of ``--batch-size`` sequences (the CLI's default 64: 16 prompts at K = 4). The loop is what a script without
rlhfkit would write: for each prompt, one ``model.generate`` call on the prompt repeated K times, unpadded (greedy
decoding refuses ``num_return_sequences``; K rows of one prompt are what it would run). Tokenization is timed on both
sides. Every response's token ids (up to the first EOS, as ``generate_ids`` keeps them) are asserted equal between
the two. The sides run alternately ``--repeats`` times and the best wall and CPU time of each are reported (on a
shared machine the CPU time shows the work, the wall time also the waiting). Without ``--model`` a random lab model
of ``--size`` is built in a temporary folder: it rarely emits EOS, so every response runs to ``--max-new-tokens`` on
both sides, which is what throughput is measured on.

Greedy decoding gives K identical responses per prompt; ``rlhfkit sample`` samples (temperature > 0) through the same
batches, so the timing carries over, while the identity check needs greedy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def one_prompt_at_a_time(model, tokenizer, prompts, k: int, max_new_tokens: int, stop: set[int]) -> list[list[int]]:
    """The loop: per prompt, ``model.generate`` on K unpadded copies; each response cut after its first stop token."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device).expand(k, -1)
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in generated[:, ids.shape[1] :].tolist():
                end = next((t + 1 for t, token in enumerate(row) if token in stop), None)
                out.append(row[:end])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="policy folder or hub id (default: a random lab model of --size)")
    parser.add_argument("--size", choices=["nano", "demo"], default="demo", help="the lab model's size (default demo)")
    parser.add_argument("--prompts", type=int, default=96, help="lab prompts (default 96)")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per batch (default 64, as the CLI)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: on a busy machine, OpenMP threads waiting for descheduled peers make "
        "multi-threaded timings erratic); 0 = torch's default",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    from rlhfkit import lab
    from rlhfkit.lab import build_tiny_model
    from rlhfkit.models.sampling import generate, load_for_sampling

    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_for_sampling(args.model or build_tiny_model(Path(tmp) / "lab", size=args.size))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    prompts = lab.make_prompts(args.prompts, seed=0)
    configured = model.generation_config.eos_token_id
    stop = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(prompts)} lab prompts x K={args.k}, {args.max_new_tokens} new tokens, greedy; "
        f"{n_params / 1e6:.2f}M-parameter policy on {device}, {torch.get_num_threads()} threads"
    )

    def batched(rows):
        return generate(
            model,
            tokenizer,
            rows,
            max_new_tokens=args.max_new_tokens,
            temperature=0,
            num_samples=args.k,
            batch_size=args.batch_size,
        ).response_ids

    def loop(rows):
        return one_prompt_at_a_time(model, tokenizer, rows, args.k, args.max_new_tokens, stop)

    batched(prompts[:2]), loop(prompts[:2])  # warm-up (kernels, allocator, lazy imports)
    times: dict[str, list[tuple[float, float]]] = {"loop": [], "batched": []}  # (wall, cpu) per run
    outputs = {}
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both sides alike
        for side, fn in (("loop", loop), ("batched", batched)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[side] = fn(prompts)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[side].append((time.perf_counter() - wall, time.process_time() - cpu))
    runs = "; ".join(f"{side} " + ", ".join(f"{w:.2f} / {c:.2f}" for w, c in t) for side, t in times.items())
    print(f"runs (wall / cpu s): {runs}; the best of each is shown")
    best = {side: (min(w for w, _ in t), min(c for _, c in t)) for side, t in times.items()}
    (loop_s, loop_cpu), (batched_s, batched_cpu) = best["loop"], best["batched"]

    same = sum(a == b for a, b in zip(outputs["loop"], outputs["batched"], strict=True))
    tokens = sum(len(r) for r in outputs["batched"])
    n = len(outputs["batched"])
    print(f"{'method':<60}{'wall s':>8}{'cpu s':>8}{'tokens/s':>10}")
    label = "one prompt at a time (model.generate per prompt, K rows)"
    print(f"{label:<60}{loop_s:>8.2f}{loop_cpu:>8.2f}{tokens / loop_s:>10.0f}")
    label = f"rlhfkit sample's sampler (left-padded batches of {args.batch_size})"
    print(f"{label:<60}{batched_s:>8.2f}{batched_cpu:>8.2f}{tokens / batched_s:>10.0f}")
    print(f"identical greedy responses: {same} of {n} ({tokens} tokens)")
    print(f"speed-up, batched / loop: {loop_s / batched_s:.1f}x wall, {loop_cpu / batched_cpu:.1f}x cpu")
    assert same == n, "batched and one-at-a-time greedy responses differ"


if __name__ == "__main__":
    main()
