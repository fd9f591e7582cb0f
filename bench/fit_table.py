"""Print the "what fits where" table of docs/memory.md from the memory planner (no GPU, no network).

    python bench/fit_table.py                 # markdown table: least-compressed method that fits per cell
    python bench/fit_table.py --checkpointing # the same with gradient checkpointing forced on at every size

Each cell plans the model with the GPU-size preset of that column (batch size, lengths, checkpointing from
``rlhfkit presets show <GB>``) and names the first of full / lora / qlora whose plan uses at most 90% of the
GPU ("—": none does). PPO uses the shared-base layout with lora/qlora. Formulas: ``rlhfkit/planner/memory.py``.
"""

from __future__ import annotations

import argparse

from rlhfkit import planner

MODELS = [
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--checkpointing", action="store_true", help="force gradient checkpointing on")
    args = parser.parse_args()
    rows = planner.fit_table(args.models, gradient_checkpointing=True if args.checkpointing else None)
    print(planner.fit_table_markdown(rows))


if __name__ == "__main__":
    main()
