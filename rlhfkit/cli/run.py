"""``rlhfkit run``, ``rlhfkit demo`` and ``rlhfkit compare``: the pipeline from a YAML config (checked whole before
anything runs; ``--check`` stops there) and the algorithms side by side."""

from __future__ import annotations

import argparse
import os
from importlib.resources import files

from rlhfkit.core.errors import ConfigError


# ------------------------------------------------------------------------------------------ run / demo
def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run (or resume) the InstructGPT pipeline from a YAML config")
    run.add_argument("config", help="pipeline YAML (see configs/lab/pipeline.yaml)")
    _pipeline_flags(run)
    run.add_argument(
        "--min-votes",
        type=int,
        metavar="N",
        help="preferences.labels: people: go on once the votes file holds N votes (default: every pair labelled once)",
    )
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="the whole pipeline on the built-in lab (CPU, no network, ~5 min)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--print-config", action="store_true", help="print the demo's config and exit")
    _pipeline_flags(demo, with_out=False)
    demo.set_defaults(func=_demo)


def _pipeline_flags(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="redo STAGE and every stage after it")
    p.add_argument("--until", metavar="STAGE", help="stop after STAGE")
    _config_flags(p, with_out)
    _verbose_flag(p)
    p.add_argument(
        "--check", action="store_true", help="only check the config, data, model and output folder; run nothing"
    )


def _config_flags(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    """``--set KEY=VALUE`` (repeatable) and ``--out``: overrides of a pipeline config (run, demo, compare)."""
    text = "override a config key, e.g. --set sft.max_steps=100 (YAML value syntax)"
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)
    if with_out:
        p.add_argument("--out", help="output folder (overrides output_dir)")


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print every training log as TRL does (a dict per logged step, tqdm bars) instead of one progress bar "
        "per stage (the same as RLHFKIT_VERBOSE=1)",
    )


def _set_verbose(args: argparse.Namespace) -> None:
    """``--verbose``: every trainer keeps transformers' own bar and log printer (:mod:`rlhfkit.monitors.progress`
    reads ``RLHFKIT_VERBOSE``, as the recipes do)."""
    if args.verbose:
        from rlhfkit.monitors.progress import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


def _run(args: argparse.Namespace) -> int:
    return _run_pipeline(args.config, args)


def _demo(args: argparse.Namespace) -> int:
    text = files("rlhfkit").joinpath("demo.yaml").read_text()
    if args.print_config:
        print(text)
        return 0
    import yaml

    return _run_pipeline(yaml.safe_load(text), args)


def _load_pipeline_config(source, args: argparse.Namespace):
    """The whole config (``source``: a YAML path or a dict) with the ``--set`` / ``--out`` overrides, validated: every
    value, data source, the model and the output folder, all problems at once. ``rlhfkit.pipeline`` imports torch and
    TRL, hence the import here."""
    from rlhfkit.pipeline.config import STAGES, parse_overrides
    from rlhfkit.pipeline.validate import check_pipeline

    until = getattr(args, "until", None)
    if until is not None and until not in STAGES:
        raise ConfigError(f"--until {until!r} is not a stage; choose one of {list(STAGES)}")
    overrides = parse_overrides(args.set)
    if getattr(args, "out", None):
        overrides["output_dir"] = args.out
    if getattr(args, "min_votes", None) is not None:
        overrides["preferences.min_votes"] = args.min_votes
    cfg = check_pipeline(source, overrides)
    from_stage = getattr(args, "from_stage", None)
    if from_stage is not None and from_stage not in cfg.stages():  # a round's stage too: round-2/reward
        raise ConfigError(f"--from {from_stage!r} is not a stage; choose one of {list(cfg.stages())}")
    return cfg


def _run_pipeline(source, args: argparse.Namespace) -> int:
    """Validate the whole config, then run it (``--check``: only validate, without importing peft or the trainers)."""
    if args.check:
        _load_pipeline_config(source, args)
        print("config OK")
        return 0
    cfg = _load_pipeline_config(source, args)
    _set_verbose(args)
    from rlhfkit.pipeline.runner import run_and_report

    run_and_report(cfg, from_stage=args.from_stage, until=args.until)
    return 0


# ------------------------------------------------------------------------------------------ compare
def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="run PPO, GRPO, RLOO, DPO and best-of-N on the same SFT model, reward model and data"
    )
    p.add_argument("config", help="pipeline YAML (its sections configure each algorithm), or 'demo' for the demo's")
    p.add_argument(
        "--algorithms",
        default="ppo,grpo,rloo,dpo,best_of_n",
        help="comma-separated: ppo, grpo, rloo, dpo, best_of_n (default: all)",
    )
    p.add_argument("--best-of-n", default="1,2,4,8,16", help="N of the best-of-N curve (default: 1,2,4,8,16)")
    _config_flags(p)
    _verbose_flag(p)
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    """Shared stages once, then every algorithm in its own resumable folder; prints compare.md."""
    import time

    import yaml
    from rich.console import Console

    from rlhfkit.pipeline.compare import parse_algorithms, parse_ns, run_compare

    algorithms, ns = parse_algorithms(args.algorithms), parse_ns(args.best_of_n)
    demo = args.config == "demo"  # `rlhfkit demo`'s config: its finished stages are reused
    source = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text()) if demo else args.config
    cfg = _load_pipeline_config(source, args)
    _set_verbose(args)
    console = Console()
    start = time.perf_counter()
    run_compare(cfg, algorithms, ns=ns, say=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True))
    console.print((cfg.output_dir / "compare.md").read_text(), markup=False, highlight=False)
    console.print(f"compare: {time.perf_counter() - start:.0f} s wall; {cfg.output_dir / 'compare.md'}")
    return 0
