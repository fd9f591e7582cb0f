"""``rlhfkit demo``, ``rlhfkit run CONFIG`` (the pipeline) and ``rlhfkit presets``."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    register_pipeline(sub)
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


# ------------------------------------------------------------------------------------------ run / demo
def register_pipeline(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run (or resume) the InstructGPT pipeline from a YAML config")
    run.add_argument("config", help="pipeline YAML (see configs/lab/pipeline.yaml)")
    _pipeline_flags(run)
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="the whole pipeline on the built-in lab (CPU, no network, ~5 min)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--print-config", action="store_true", help="print the demo's config and exit")
    _pipeline_flags(demo, with_out=False)
    demo.set_defaults(func=_demo)


def _pipeline_flags(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="redo STAGE and every stage after it")
    p.add_argument("--until", metavar="STAGE", help="stop after STAGE")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set sft.max_steps=100 (YAML value syntax)",
    )
    if with_out:
        p.add_argument("--out", help="output folder (overrides output_dir)")


def _overrides(args: argparse.Namespace) -> dict:
    from rlhfkit.pipeline import parse_overrides

    out = parse_overrides(args.set)
    if getattr(args, "out", None):
        out["output_dir"] = args.out
    return out


def _run(args: argparse.Namespace) -> int:
    from rlhfkit.pipeline import load_config

    return _execute(load_config(args.config, _overrides(args)), args)


def _demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    import yaml

    from rlhfkit.pipeline import load_config

    text = files("rlhfkit").joinpath("demo.yaml").read_text()
    if args.print_config:
        print(text)
        return 0
    return _execute(load_config(yaml.safe_load(text), _overrides(args)), args)


def _execute(cfg, args: argparse.Namespace) -> int:
    from rlhfkit.pipeline import run_and_report

    run_and_report(cfg, from_stage=args.from_stage, until=args.until)
    return 0
