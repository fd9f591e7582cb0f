"""``rlhfkit presets``: list and show presets. (``demo`` and ``run`` are added by the pipeline.)"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    presets = sub.add_parser("presets", help="list or show method / GPU-size presets")
    psub = presets.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    psub.add_parser("list", help="list the presets").set_defaults(func=_presets_list)
    show = psub.add_parser("show", help="show what a preset expands to (LoraConfig, BitsAndBytesConfig, kwargs)")
    show.add_argument("name", help="full | lora | qlora | 8 | 12 | 16 | 24 | 48 | 80")
    show.add_argument("--stage", choices=["sft", "reward", "ppo", "grpo"], help="GPU presets: only this stage")
    show.set_defaults(func=_presets_show)


def _presets_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.presets import GPU_SIZES, METHODS

    table = Table(title="rlhfkit presets")
    table.add_column("kind")
    table.add_column("names")
    table.add_column("what it sets")
    table.add_row("method", ", ".join(METHODS), "LoraConfig + BitsAndBytesConfig (qlora: 4-bit NF4 base)")
    table.add_row("gpu (GB)", ", ".join(map(str, GPU_SIZES)), "batch size, accumulation, checkpointing, lengths")
    Console().print(table)
    return 0


def _presets_show(args: argparse.Namespace) -> int:
    from rlhfkit.presets import describe

    print(json.dumps(describe(args.name, args.stage), indent=2, default=str))
    return 0
