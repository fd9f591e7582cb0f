"""The ``rlhfkit`` command: every subcommand, its parser and its handler, in this one module.

    rlhfkit demo [--print-config]                   the whole pipeline on the built-in lab
    rlhfkit run CONFIG [--from STAGE] [--set K=V]   run (or resume) the pipeline from a YAML config
    rlhfkit compare CONFIG|demo [--algorithms A,B]  PPO, GRPO, RLOO, DPO, best-of-N on the same data, one table
    rlhfkit presets list | show NAME [--stage S]    method / GPU-size presets and what they expand to
    rlhfkit data convert | agreement INPUT ...      preference data -> prompt/chosen/rejected; labeler agreement
    rlhfkit eval-rm MODEL DATA [--out DIR]          reward-model report and the gate before RL
    rlhfkit plan --model M --stage S | --config F   memory plan of a training run on a GPU

Exit codes: 0 = done; 1 = a verdict said no (``eval-rm``: the gate failed; ``plan``: it does not fit); 2 = an error
a user can fix (:class:`~rlhfkit.errors.RlhfkitError`, or a bad argument), printed as one ``error:`` line per problem
(``--debug`` shows the traceback; :mod:`rlhfkit.entry` is the error path the recipes share); 130 = interrupted. Every
command checks its inputs before it writes anything (:mod:`rlhfkit.validate`); ``run --check`` does only that.

``rlhfkit --help`` imports no torch: the rlhfkit modules that import torch, transformers, datasets or numpy when
loaded (``pipeline``, ``data``, ``rm_eval``) and rich / yaml are imported inside the handlers that need them. The
terminal tables (agreement, labelers, reward-model verdict, memory plan) live here: they are the CLI's rendering of
results whose content the library already owns (``rm_eval.headline_rows`` is shared with report.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from importlib.resources import files

from rlhfkit import __version__
from rlhfkit.entry import OneLineParser, run_guarded
from rlhfkit.errors import ConfigError, DataError, raise_problems
from rlhfkit.fastimport import import_trl_configs_fast
from rlhfkit.models import load_reward_model
from rlhfkit.planner import GIB, plan, plan_config
from rlhfkit.planner.plans import LAYOUTS
from rlhfkit.presets import GPU_SIZES, METHODS, TRAINERS, describe

# `data convert`: the column / option flags each format accepts (argparse dest -> converter keyword).
FORMAT_OPTIONS = {
    "hh": ("chosen_col", "rejected_col"),
    "columns": ("prompt_col", "chosen_col", "rejected_col"),
    "rankings": ("prompt_col", "responses_col", "ranking_col", "scores_col"),
    "scores": ("prompt_col", "responses_col", "scores_col", "text_key", "score_key", "rule", "min_gap", "seed"),
    "votes": (
        "prompt_col",
        "response_a_col",
        "response_b_col",
        "votes_col",
        "labeler_cols",
        "labels",
        "ties",
        "min_agreement",
    ),
}
VOTE_COLUMNS = ("prompt_col", "response_a_col", "response_b_col", "votes_col", "labeler_cols", "labels")
TIES_HELP = (
    "drop: tie items are not pairs (default); margin: keep items with more votes for one side and write the vote "
    "margin to TRL's margin column"
)
# `eval-rm` evaluates pairs: the formats that hold them (other formats are converted with `data convert` first).
EVAL_FORMATS = ("hh", "columns")
EXTRA_COLUMNS = ("subset", "agreement")  # kept from `columns` rows for per-subset / per-agreement accuracy


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(  # argparse errors are one line naming the valid choices (exit 2), as every other error
        prog="rlhfkit",
        description="InstructGPT-style RLHF: SFT -> reward model -> PPO/GRPO, over Hugging Face TRL.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_pipeline_commands(sub)  # the order here is the order in --help
    _add_compare(sub)
    _add_presets(sub)
    _add_data(sub)
    _add_eval_rm(sub)
    _add_plan(sub)
    return parser


def _quiet_known_noise() -> None:
    """Silence two messages every run prints that a user cannot act on: TRL 1.16's configs default the deprecated
    ``gradient_checkpointing`` name (transformers 5 warns), and bitsandbytes' CPU backend logs that the optional
    ``kernels`` package is missing (its fallback is what the CPU path uses)."""
    warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors a user can fix print one ``error:`` line per problem and return 2
    (:func:`rlhfkit.entry.run_guarded`: the same error path as the recipes)."""
    _quiet_known_noise()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()

    def handle() -> int:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)

    return run_guarded(handle, debug="--debug" in argv)


# ------------------------------------------------------------------------------------------ run / demo
def _add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
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
    _config_flags(p, with_out)
    p.add_argument(
        "--check", action="store_true", help="only check the config, data, model and output folder; run nothing"
    )


def _config_flags(p: argparse.ArgumentParser, with_out: bool = True) -> None:
    """``--set KEY=VALUE`` (repeatable) and ``--out``: overrides of a pipeline config (run, demo, compare)."""
    text = "override a config key, e.g. --set sft.max_steps=100 (YAML value syntax)"
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=text)
    if with_out:
        p.add_argument("--out", help="output folder (overrides output_dir)")


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
    from rlhfkit.pipeline import STAGES, parse_overrides
    from rlhfkit.validate import check_pipeline

    for flag, stage in (("--from", getattr(args, "from_stage", None)), ("--until", getattr(args, "until", None))):
        if stage is not None and stage not in STAGES:
            raise ConfigError(f"{flag} {stage!r} is not a stage; choose one of {list(STAGES)}")
    overrides = parse_overrides(args.set)
    if getattr(args, "out", None):
        overrides["output_dir"] = args.out
    return check_pipeline(source, overrides)


def _run_pipeline(source, args: argparse.Namespace) -> int:
    """Validate the whole config, then run it (``--check``: only validate, without importing peft or the trainers)."""
    if args.check:
        import_trl_configs_fast()
        _load_pipeline_config(source, args)
        print("config OK")
        return 0
    cfg = _load_pipeline_config(source, args)
    from rlhfkit.pipeline import run_and_report

    run_and_report(cfg, from_stage=args.from_stage, until=args.until)
    return 0


# ------------------------------------------------------------------------------------------ compare
def _add_compare(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    """Shared stages once, then every algorithm in its own resumable folder; prints compare.md."""
    import time

    import yaml
    from rich.console import Console

    from rlhfkit.compare import parse_algorithms, parse_ns, run_compare

    algorithms, ns = parse_algorithms(args.algorithms), parse_ns(args.best_of_n)
    demo = args.config == "demo"  # `rlhfkit demo`'s config: its finished stages are reused
    source = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text()) if demo else args.config
    cfg = _load_pipeline_config(source, args)
    console = Console()
    start = time.perf_counter()
    run_compare(cfg, algorithms, ns=ns, say=lambda m: console.print(m, markup=False, highlight=False))
    console.print((cfg.output_dir / "compare.md").read_text(), markup=False, highlight=False)
    console.print(f"compare: {time.perf_counter() - start:.0f} s wall; {cfg.output_dir / 'compare.md'}")
    return 0


# ------------------------------------------------------------------------------------------ presets
def _add_presets(sub: argparse._SubParsersAction) -> None:
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


# ------------------------------------------------------------------------------------------ data
def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="convert preference data; analyse and filter labeler agreement")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _add_data_convert(dsub)
    _add_data_agreement(dsub)


def _add_data_convert(dsub: argparse._SubParsersAction) -> None:
    convert = dsub.add_parser(
        "convert",
        help="normalise preference data into prompt/chosen/rejected pairs (TRL's explicit-prompt format)",
        description="Formats: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in FORMAT_OPTIONS.items()),
    )
    convert.add_argument("input", help="a .jsonl, .jsonl.gz, .json, .parquet or .csv file")
    convert.add_argument("--format", required=True, choices=list(FORMAT_OPTIONS), help="the input's layout")
    convert.add_argument("--out", required=True, help="output .jsonl, .jsonl.gz, .json or .parquet (atomic write)")
    columns = ("prompt", "chosen", "rejected", "responses", "ranking", "scores", "response-a", "response-b", "votes")
    for flag in columns:
        convert.add_argument(f"--{flag}-col", metavar="NAME", help=f"name of the {flag.replace('-', '_')} column")
    convert.add_argument("--text-key", help="scores: key of the text in each completion dict (default response)")
    convert.add_argument("--score-key", help="scores: key of the score in each completion dict (default score)")
    convert.add_argument("--rule", help="scores: best_vs_random (default) | best_vs_rest | best_vs_worst")
    convert.add_argument("--min-gap", type=float, help="scores: smallest score difference that makes a pair")
    convert.add_argument("--seed", type=int, help="scores: seed of best_vs_random")
    convert.add_argument("--min-agreement", type=float, help="votes: drop items below this agreement (default 0)")
    _add_vote_flags(convert)
    convert.add_argument("--ties", metavar="drop|margin", help="votes: " + TIES_HELP)
    _add_on_bad_row(convert)
    convert.set_defaults(func=_convert)


def _add_data_agreement(dsub: argparse._SubParsersAction) -> None:
    agree = dsub.add_parser(
        "agreement",
        help="labeler agreement report (kappa, alpha, per labeler) and filtered majority pairs",
        description="INPUT rows: prompt, response_a, response_b and the votes: a list column (--votes-col) or one "
        "column per labeler (--labeler-cols), read through --labels (default 1 = a, 0 = b, -1 = not rated; empty "
        "cells are missing votes). Ties are a category of the statistics; a tie item never becomes a pair.",
    )
    agree.add_argument("input", help="a .jsonl, .jsonl.gz, .json, .parquet or .csv file of comparisons with votes")
    agree.add_argument("--min-agreement", type=float, default=0.6, help="keep items whose majority share >= this")
    agree.add_argument(
        "--drop-unreliable", action="store_true", help="remove the votes of flagged labelers before filtering"
    )
    agree.add_argument(
        "--labeler-threshold",
        type=float,
        default=0.6,
        help="flag labelers agreeing with the others' majority less often than this (default 0.6)",
    )
    agree.add_argument(
        "--max-tie-rate",
        type=float,
        default=0.5,
        help="flag labelers who call more than this share of their items a tie (default 0.5)",
    )
    agree.add_argument("--ties", default="drop", metavar="drop|margin", help=TIES_HELP)
    agree.add_argument("--out", help="write the kept pairs (prompt/chosen/rejected/agreement/n_votes[/margin]) here")
    agree.add_argument(
        "--json",
        metavar="FILE",
        help="write the report as JSON: n_items, n_labelers, fleiss_kappa, krippendorff_alpha, cohen_kappa, "
        "labelers, kept, dropped",
    )
    for flag in ("prompt", "response-a", "response-b", "votes"):
        agree.add_argument(f"--{flag}-col", metavar="NAME", help=f"name of the {flag.replace('-', '_')} column")
    _add_vote_flags(agree)
    _add_on_bad_row(agree)
    agree.set_defaults(func=_agreement)


def _add_vote_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labeler-cols",
        metavar="COLS",
        help="votes: one column per labeler, comma-separated (e.g. ann1,ann2,ann3); the labelers are named after them",
    )
    parser.add_argument(
        "--labels",
        metavar="MAP",
        help='votes: what each value means, "1=a,2=b,0=tie" or "A=a,B=b,Tie=tie" (targets a, b, tie, missing; '
        "default 1=a,0=b,-1=missing); empty cells are missing votes",
    )


def _add_on_bad_row(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-row",
        choices=["error", "skip"],
        default="error",
        help="error: stop at the first malformed row (default); skip: skip and count malformed rows",
    )


def _convert_options(args: argparse.Namespace) -> dict:
    """The converter keywords the user set; a flag that does not apply to ``args.format`` is a ConfigError."""
    allowed = FORMAT_OPTIONS[args.format]
    every = {name for names in FORMAT_OPTIONS.values() for name in names}
    given = {name: getattr(args, name) for name in every if getattr(args, name, None) is not None}
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        takes = ", ".join("--" + name.replace("_", "-") for name in allowed)
        raise ConfigError(f"{flags} does not apply to --format {args.format}; it takes {takes}")
    return given


def _print_data_report(console, report) -> None:
    console.print(report.summary(), soft_wrap=True, highlight=False)
    for line in report.examples:
        console.print(f"  skipped: {line}", markup=False, highlight=False, soft_wrap=True)


def _convert(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.data import load_preferences
    from rlhfkit.validate import check_preference_file

    options = _convert_options(args)
    check_preference_file(args.input, args.out)  # readable input, --out a file (never an existing folder)
    data = load_preferences(args.input, args.format, on_bad_row=args.on_bad_row, **options)
    data.write(args.out)
    console = Console()
    _print_data_report(console, data.report)
    console.print(f"wrote {len(data)} pairs to {args.out}", highlight=False)
    return 0


def _agreement(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.data import agreement_summary, from_votes
    from rlhfkit.io import write_json
    from rlhfkit.validate import check_preference_file, output_file_problems

    thresholds = ("--min-agreement", "--labeler-threshold", "--max-tie-rate")
    values = (args.min_agreement, args.labeler_threshold, args.max_tie_rate)
    problems = [f"{flag} {value} must be in [0, 1], e.g. {flag} 0.6" for flag, value in zip(thresholds, values)]
    raise_problems(
        [p for p, value in zip(problems, values) if not 0.0 <= value <= 1.0]
        + (output_file_problems(args.json, "--json") if args.json else [])
    )
    check_preference_file(args.input, args.out)  # readable input, --out a file (never an existing folder)
    columns = {name: getattr(args, name) for name in VOTE_COLUMNS if getattr(args, name) is not None}
    data = from_votes(
        args.input,
        min_agreement=args.min_agreement,
        drop_unreliable=args.drop_unreliable,
        labeler_threshold=args.labeler_threshold,
        on_bad_row=args.on_bad_row,
        ties=args.ties,
        max_tie_rate=args.max_tie_rate,
        **columns,
    )
    console = Console()
    console.print(summary_table(data.agreement, args.min_agreement))
    console.print(labeler_table(data.agreement))
    console.print(cohen_table(data.agreement))
    _print_data_report(console, data.report)
    if args.json:
        write_json(args.json, agreement_summary(data))
        console.print(f"wrote the agreement report to {args.json}", highlight=False)
    if args.out:
        data.write(args.out)
        console.print(f"wrote {len(data)} pairs to {args.out}", highlight=False)
    return 0


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def summary_table(result, min_agreement: float):
    """Rich table of the dataset-level agreement statistics (``result``: an agreement ``FilterResult``) and what
    filtering kept."""
    from rich.table import Table

    r = result.report
    table = Table(title="labeler agreement", show_header=False)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("items x labelers", f"{r.n_items:,} x {r.n_labelers}")
    table.add_row("items with votes (the statistics cover these)", f"{r.n_rated_items:,}")
    table.add_row("votes cast", f"{r.n_votes:,}")
    table.add_row("tie votes", _fmt(r.share_tie_votes, pct=True))
    table.add_row("mean agreement with the majority (a, b or tie)", _fmt(r.mean_agreement, pct=True))
    table.add_row("unanimous items", _fmt(r.share_unanimous, pct=True))
    table.add_row("tie items (no a-or-b majority)", _fmt(r.share_ties, pct=True))
    table.add_row(f"items below {min_agreement:g} agreement (ties included)", _fmt(r.share_below, pct=True))
    table.add_row(
        "Fleiss' kappa", _fmt(r.fleiss_kappa) if r.fleiss_kappa is not None else f"n/a ({r.fleiss_kappa_note})"
    )
    alpha = r.krippendorff_alpha
    table.add_row(
        "Krippendorff's alpha (nominal)", _fmt(alpha) if alpha is not None else f"n/a ({r.krippendorff_alpha_note})"
    )
    dropped = ", ".join(f"{k} {v:,}" for k, v in result.dropped.items() if v) or "none"
    if result.dropped_labelers:
        names = ", ".join(r.labeler_names[j] for j in result.dropped_labelers)
        table.add_row("votes removed from labelers", names)
    table.add_row("items dropped", dropped)
    table.add_row("items kept", f"{result.n_kept:,} ({_fmt(result.n_kept / max(r.n_items, 1), pct=True)})")
    return table


def labeler_table(result):
    """Rich table of each labeler's agreement with the leave-one-out majority and tie rate, and why it is flagged."""
    from rich.table import Table

    from rlhfkit.data.agreement import flag_reasons

    r = result.report
    lab = r.labelers
    table = Table(
        title=f"labelers (flagged below {lab.threshold:g} agreement with the others' majority, or above "
        f"{lab.max_tie_rate:g} ties)"
    )
    for name in ("labeler", "rated", "compared", "agreement", "ties", "flagged"):
        table.add_column(name, justify="right" if name != "flagged" else "left")
    for j in range(len(lab.agreement)):
        flag = f"[red]yes: {', '.join(flag_reasons(lab, j))}[/red]" if lab.flagged[j] else "no"
        table.add_row(
            r.labeler_names[j],
            f"{lab.n_rated[j]:,}",
            f"{lab.n_compared[j]:,}",
            _fmt(lab.agreement[j], pct=True),
            _fmt(lab.tie_rate[j], pct=True),
            flag,
        )
    return table


def cohen_table(result, limit: int = 45):
    """Rich table of Cohen's kappa for every pair of labelers (the first ``limit`` pairs; ``--json`` has all)."""
    from rich.table import Table

    r = result.report
    pairs = list(r.cohen_kappa.items())
    more = f", first {limit} of {len(pairs)} (--json has all)" if len(pairs) > limit else ""
    table = Table(title=f"Cohen's kappa per pair of labelers (a / b / tie, on the items both rated{more})")
    for name in ("labelers", "items", "kappa"):
        table.add_column(name, justify="right" if name != "labelers" else "left")
    for key, kappa in pairs[:limit]:
        table.add_row(key, f"{r.cohen_kappa_items[key]:,}", _fmt(kappa))
    return table


# ------------------------------------------------------------------------------------------ eval-rm
def _add_eval_rm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval-rm",
        help="evaluate a reward model (accuracy, AUC, calibration, length bias) and apply the gate before RL",
        description="Scores every pair (chosen and rejected) with the reward model, formatted as TRL's "
        "RewardTrainer formats training data, writes report.json, report.md, reliability.png and rewards_hist.png "
        "to --out, and exits 0 if the gate passes, 1 if it fails, 2 on a usage, model or data error.",
    )
    p.add_argument("model", metavar="MODEL", help="reward model: a local folder or a hub id")
    p.add_argument("data", metavar="DATA", help="preference pairs: .jsonl, .jsonl.gz, .json, .parquet or .csv")
    p.add_argument("--out", default="rm_eval", help="folder for the report files (default: ./rm_eval)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    p.add_argument("--max-pairs", type=int, help="evaluate only the first N pairs (the gate needs at least 30)")
    p.add_argument(
        "--format",
        choices=("auto", *EVAL_FORMATS),
        default="auto",
        help="hh: HH-RLHF transcripts; columns: prompt/chosen/rejected columns; auto (default): detected from the "
        "columns as `rlhfkit data convert` does (prompt, chosen, rejected: columns; chosen, rejected: hh)",
    )
    p.add_argument("--min-accuracy", type=float, default=0.60, help="the gate's accuracy floor (default 0.60)")
    p.set_defaults(func=_eval_rm)


def load_eval_pairs(path: str, fmt: str = "auto", max_pairs: int | None = None) -> list[dict]:
    """Pairs in TRL's explicit-prompt format from a file, through :func:`rlhfkit.data.load_preferences` (``auto``:
    :func:`rlhfkit.data.detect_format`, which must find one of :data:`EVAL_FORMATS`).

    ``columns`` files keep their ``subset`` / ``agreement`` columns (re-read from the file, row for row).
    """
    from rlhfkit.data import detect_format, load_preferences, read_rows

    if fmt == "auto":
        convert = f"`rlhfkit data convert {path} --format FORMAT --out pairs.jsonl` (see its --help)"
        fmt = detect_format(path, fix=f"pass --format hh|columns, or convert it with {convert}")
        if fmt not in EVAL_FORMATS:
            raise DataError(
                f"{path}: holds {fmt} data, not preference pairs; convert it first (`rlhfkit data convert {path} "
                f"--format {fmt} --out pairs.jsonl`) and evaluate pairs.jsonl"
            )
    pairs = load_preferences(path, fmt).pairs
    if fmt == "columns":
        records = [r for _, r in read_rows(path)[1]]
        if len(records) == len(pairs):  # bad rows raise, so the rows and pairs line up one to one
            for pair, record in zip(pairs, records):
                pair.update({k: record[k] for k in EXTRA_COLUMNS if k in record})
    return pairs[:max_pairs] if max_pairs is not None else pairs


def rm_eval_table(report, verdict):
    """Rich table of a reward-model report's headline numbers (the rows of report.md) and per-group accuracy."""
    from rich.table import Table

    from rlhfkit.rm_eval import headline_rows

    colour = "green" if verdict.passed else "red"
    table = Table(title=f"reward model: gate [{colour}]{'passed' if verdict.passed else 'FAILED'}[/{colour}]")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in headline_rows(report):
        table.add_row(name, value)
    for title, groups in (("subset", report.subsets), ("agreement", report.agreement)):
        for key, g in groups.items():
            table.add_row(f"accuracy, {title} {key}", f"{g['accuracy']:.3f} ({g['n']} pairs)")
    return table


def _eval_rm(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from rlhfkit.rm_eval import evaluate_reward_model, rm_gate, write_report
    from rlhfkit.validate import data_problems, model_problems, output_dir_problems

    problems = []
    if args.batch_size < 1:
        problems.append(f"--batch-size {args.batch_size} must be >= 1, e.g. --batch-size 16")
    if args.max_pairs is not None and args.max_pairs < 1:
        problems.append(f"--max-pairs {args.max_pairs} must be >= 1 (the gate needs at least 30)")
    if not 0.0 <= args.min_accuracy <= 1.0:
        problems.append(f"--min-accuracy {args.min_accuracy} must be in [0, 1], e.g. 0.6")
    # Every problem at once, before the (slow) model load: a trained score head, pairs that decode and are pairs, a
    # writable --out folder.
    unreadable = data_problems(args.data, "DATA", (), "the evaluation")
    problems += model_problems(args.model, "MODEL", reward=True) + unreadable
    problems += output_dir_problems(args.out, "--out", run=False)
    pairs = []
    if not unreadable:
        try:
            pairs = load_eval_pairs(args.data, args.format, args.max_pairs)
        except DataError as e:
            problems += e.problems
    raise_problems(problems)
    console = Console()
    model, tokenizer = load_reward_model(args.model)
    with console.status(f"scoring {len(pairs)} pairs"):
        report = evaluate_reward_model(model, tokenizer, pairs, batch_size=args.batch_size)
    verdict = rm_gate(report, min_accuracy=args.min_accuracy)
    paths = write_report(report, args.out, verdict=verdict)
    console.print(rm_eval_table(report, verdict))
    for line in verdict.reasons:
        console.print(f"[red]gate:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in verdict.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {args.out}", highlight=False)
    return 0 if verdict.passed else 1


# ------------------------------------------------------------------------------------------ plan
def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="memory plan of a model x stage x preset on a GPU; fixes if it won't fit (exit 1)")
    p.add_argument("--model", help="hub id (offline table or HF cache) or local model folder")
    p.add_argument("--stage", choices=TRAINERS)
    p.add_argument(
        "--config",
        help="plan a recipe config (configs/<model>/<stage>.yaml) or a pipeline config (every training stage) "
        "with its preset, GPU and batch / length fields; --model replaces its model (e.g. the hub id of runs/.../sft)",
    )
    p.add_argument("--preset", default="qlora", choices=METHODS, help="method (default qlora)")
    p.add_argument("--gpu", type=float, default=24, help="GPU memory in GB (default 24)")
    p.add_argument("--layout", choices=LAYOUTS, help="PPO: separate models or one shared base")
    p.add_argument("--reward-members", type=int, default=1, help="RL stages: reward models of an ensemble (default 1)")
    p.add_argument("--batch-size", type=int, help="per_device_train_batch_size (default: the GPU preset's)")
    p.add_argument("--grad-accum", type=int, help="gradient_accumulation_steps (default: the GPU preset's)")
    p.add_argument("--seq-len", type=int, help="max_length (sft, reward) or response length (RL); default: preset's")
    p.add_argument("--prompt-length", type=int, help="RL stages: prompt tokens (default 256)")
    p.add_argument("--num-generations", type=int, help="GRPO: completions per prompt")
    ckpt = p.add_mutually_exclusive_group()
    ckpt.add_argument("--checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    ckpt.add_argument("--no-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    if args.config:
        import_trl_configs_fast()  # planning builds TRL configs, never a model
        from rlhfkit.validate import check_plan_config  # the config's values, checked as run / the recipes do

        check_plan_config(args.config, args.model)
        plans = list(plan_config(args.config, args.model).values())
    elif args.model and args.stage:
        names = ("layout", "reward_members", "batch_size", "grad_accum", "seq_len", "prompt_length")
        kwargs = {n: getattr(args, n) for n in (*names, "num_generations", "gradient_checkpointing")}
        plans = [plan(args.model, args.stage, args.preset, args.gpu, **kwargs)]
    else:
        raise ConfigError("rlhfkit plan needs --model and --stage (or --config FILE)")
    if args.json:
        out = [p.to_dict() for p in plans] if args.config else plans[0].to_dict()
        print(json.dumps(out, indent=2, default=str))
    else:
        for p in plans:
            print_plan(p)
    return 0 if all(p.verdict != "does not fit" for p in plans) else 1


def print_plan(result) -> None:
    """Print a :class:`rlhfkit.planner.Plan`: the memory breakdown, settings, notes, verdict and fixes."""
    from rich.console import Console
    from rich.table import Table

    def gb(n: int) -> str:
        return f"{n / GIB:.2f}"

    s = result.settings
    title = f"{result.model} · {result.trainer} · {result.preset} · {result.gpu_gb:g} GB"
    if s.get("layout"):
        title += f" · {s['layout']} layout"
    table = Table(title=title)
    table.add_column("memory")
    table.add_column("GiB", justify="right")
    ckpt = s["gradient_checkpointing"]
    for key, b in result.breakdown.items():
        label = key.replace("_", " ")
        if key == "activations":
            other = result.activations_full if ckpt else result.activations_checkpointed
            label += f" (checkpointing {'on' if ckpt else 'off'}; {'off' if ckpt else 'on'}: {gb(other)})"
        table.add_row(label, gb(b))
        if key == "weights" and len(result.copies) > 1:
            for name, copy_bytes in result.copies:
                table.add_row(f"  {name}", gb(copy_bytes), style="dim")
    table.add_row("total", gb(result.total_bytes), style="bold")
    table.add_row("GPU", gb(result.capacity_bytes))
    console = Console()
    console.print(table)
    shown = {k: v for k, v in s.items() if v is not None and k not in ("fused_lm_head", "precision")}
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    for note in result.notes:
        console.print(f"note: {note}")
    colour = {"fits": "green", "tight": "yellow"}.get(result.verdict, "red")
    console.print(
        f"verdict: [{colour}]{result.verdict}[/] ({result.total_bytes / result.capacity_bytes:.0%} of the GPU)"
    )
    for sug in result.suggestions:
        console.print(f"  fix: {sug.change}  -> {gb(sug.total_bytes)} GiB ({sug.verdict})")


if __name__ == "__main__":
    sys.exit(main())
