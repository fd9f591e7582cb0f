"""``rlhfkit eval-rm MODEL DATA``: a reward model on held-out pairs, its report and the gate's verdict (exit 1 when
the gate refuses RL)."""

from __future__ import annotations

import argparse

from rlhfkit.core.errors import DataError, raise_problems
from rlhfkit.models.loading import load_reward_model

# `eval-rm` evaluates pairs: the formats that hold them (other formats are converted with `data convert` first).
EVAL_FORMATS = ("hh", "columns")


EXTRA_COLUMNS = ("subset", "agreement")  # kept from `columns` rows for per-subset / per-agreement accuracy


# ------------------------------------------------------------------------------------------ eval-rm
def add_commands(sub: argparse._SubParsersAction) -> None:
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

    from rlhfkit.reward.report import headline_rows

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

    from rlhfkit.core.checks import folder_problems
    from rlhfkit.data.checks import data_problems
    from rlhfkit.models.checks import model_problems
    from rlhfkit.reward.evaluate import evaluate_reward_model
    from rlhfkit.reward.gate import rm_gate
    from rlhfkit.reward.report import write_report

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
    problems += folder_problems(args.out, "--out")
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
