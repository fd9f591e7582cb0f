"""``rlhfkit eval-rm``: evaluate a reward model on held-out preference pairs and apply the gate before RL.

rlhfkit eval-rm ./runs/rm ../shared/data/hh-rlhf-harmless-base-test.jsonl.gz --out rm_eval --max-pairs 500

Exit codes: 0 = the gate passed, 1 = the gate failed (see the reasons printed and in report.md), 2 = a usage,
model or data error (one line on stderr).
"""

from __future__ import annotations

import argparse

FORMATS = ("auto", "hh", "columns")
EXTRA_COLUMNS = ("subset", "agreement")  # kept from `columns` rows for per-subset / per-agreement accuracy


def register(sub: argparse._SubParsersAction) -> None:
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
        choices=FORMATS,
        default="auto",
        help="hh: HH-RLHF transcripts; columns: prompt/chosen/rejected columns; auto (default): columns if the "
        "first row has a prompt, else hh",
    )
    p.add_argument("--min-accuracy", type=float, default=0.60, help="the gate's accuracy floor (default 0.60)")
    p.set_defaults(func=_eval_rm)


def _detect_format(path: str) -> str:
    from rlhfkit.data import read_rows
    from rlhfkit.errors import DataError

    name, rows, columns, _ = read_rows(path)
    first = next((record for _, record in rows if isinstance(record, dict)), None)
    keys = set(columns or []) | set(first or {})
    if "prompt" in keys:
        return "columns"
    if {"chosen", "rejected"} <= keys:
        return "hh"
    raise DataError(
        f"{name}: cannot tell the format from columns {sorted(keys)}; convert it with `rlhfkit data convert` "
        "or pass --format"
    )


def load_pairs(path: str, fmt: str = "auto", max_pairs: int | None = None) -> list[dict]:
    """Pairs in TRL's explicit-prompt format from a file, through :func:`rlhfkit.data.load_preferences`.

    ``columns`` files keep their ``subset`` / ``agreement`` columns (re-read from the file, row for row).
    """
    from rlhfkit.data import load_preferences, read_rows

    fmt = _detect_format(path) if fmt == "auto" else fmt
    pairs = load_preferences(path, fmt).pairs
    if fmt == "columns":
        records = [r for _, r in read_rows(path)[1]]
        if len(records) == len(pairs):  # bad rows raise, so the rows and pairs line up one to one
            for pair, record in zip(pairs, records):
                pair.update({k: record[k] for k in EXTRA_COLUMNS if k in record})
    return pairs[:max_pairs] if max_pairs is not None else pairs


def _table(report, verdict):
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

    from rlhfkit.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ConfigError(f"--max-pairs {args.max_pairs} must be >= 1")
    if not 0.0 <= args.min_accuracy <= 1.0:
        raise ConfigError(f"--min-accuracy {args.min_accuracy} must be in [0, 1], e.g. 0.6")
    console = Console()
    pairs = load_pairs(args.data, args.format, args.max_pairs)  # data errors before the (slow) model load

    from rlhfkit.models import load_reward_model
    from rlhfkit.rm_eval import evaluate_reward_model, rm_gate, write_report

    model, tokenizer = load_reward_model(args.model)
    if not any(a.endswith("ForSequenceClassification") for a in model.config.architectures or []):
        console.print(
            f"[yellow]warning:[/] {args.model} is not a sequence-classification checkpoint; its score head is "
            "freshly initialised, so these scores are random",
            highlight=False,
        )
    with console.status(f"scoring {len(pairs)} pairs"):
        report = evaluate_reward_model(model, tokenizer, pairs, batch_size=args.batch_size)
    verdict = rm_gate(report, min_accuracy=args.min_accuracy)
    paths = write_report(report, args.out, verdict=verdict)
    console.print(_table(report, verdict))
    for line in verdict.reasons:
        console.print(f"[red]gate:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in verdict.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {args.out}", highlight=False)
    return 0 if verdict.passed else 1
