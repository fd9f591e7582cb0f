"""``rlhfkit presets list | show NAME [--stage S]``: the method and GPU-size presets and what they expand to."""

from __future__ import annotations

import argparse
import json

from rlhfkit.core.presets import GPU_SIZES, METHODS, TRAINERS, describe


# ------------------------------------------------------------------------------------------ presets
def add_commands(sub: argparse._SubParsersAction) -> None:
    presets = sub.add_parser("presets", help="list or show method / GPU-size presets")
    psub = presets.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    psub.add_parser("list", help="list the presets").set_defaults(func=_presets_list)
    show = psub.add_parser("show", help="show what a preset expands to (LoraConfig, BitsAndBytesConfig, kwargs)")
    show.add_argument("name", help=" | ".join([*METHODS, *map(str, GPU_SIZES)]))
    show.add_argument("--stage", choices=TRAINERS, help="GPU presets: only this stage")
    show.set_defaults(func=_presets_show)


def _presets_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rlhfkit presets")
    table.add_column("kind")
    table.add_column("names")
    table.add_column("what it sets")
    table.add_row("method", ", ".join(METHODS), "LoraConfig + BitsAndBytesConfig (qlora: 4-bit NF4 base)")
    table.add_row("gpu (GB)", ", ".join(map(str, GPU_SIZES)), "batch size, accumulation, checkpointing, lengths")
    Console().print(table)
    return 0


def _presets_show(args: argparse.Namespace) -> int:
    print(json.dumps(describe(args.name, args.stage), indent=2, default=str))
    return 0
