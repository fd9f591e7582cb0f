"""``rlhfkit data``: convert preference data to TRL's format, and analyse / filter labeler agreement.

rlhfkit data convert hh-rlhf.jsonl.gz --format hh --out pairs.jsonl
rlhfkit data convert ranked.parquet --format rankings --responses-col outputs --out pairs.parquet
rlhfkit data agreement votes.jsonl --min-agreement 0.8 --drop-unreliable --out pairs.jsonl
"""

from __future__ import annotations

import argparse

from rlhfkit.errors import ConfigError

# Which column/option flags each format accepts (argparse dest -> converter keyword).
FORMAT_OPTIONS = {
    "hh": ("chosen_col", "rejected_col"),
    "columns": ("prompt_col", "chosen_col", "rejected_col"),
    "rankings": ("prompt_col", "responses_col", "ranking_col", "scores_col"),
    "scores": ("prompt_col", "responses_col", "scores_col", "text_key", "score_key", "rule", "min_gap", "seed"),
    "votes": ("prompt_col", "response_a_col", "response_b_col", "votes_col", "min_agreement"),
}
VOTE_COLUMNS = ("prompt_col", "response_a_col", "response_b_col", "votes_col")


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="convert preference data; analyse and filter labeler agreement")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    convert = dsub.add_parser(
        "convert",
        help="normalise preference data into prompt/chosen/rejected pairs (TRL's explicit-prompt format)",
        description="Formats: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in FORMAT_OPTIONS.items()),
    )
    convert.add_argument("input", help="a .jsonl, .jsonl.gz, .json, .parquet or .csv file")
    convert.add_argument("--format", required=True, choices=list(FORMAT_OPTIONS), help="the input's layout")
    convert.add_argument("--out", required=True, help="output .jsonl, .jsonl.gz, .json or .parquet (atomic write)")
    for flag in (
        "prompt",
        "chosen",
        "rejected",
        "responses",
        "ranking",
        "scores",
        "response-a",
        "response-b",
        "votes",
    ):
        convert.add_argument(f"--{flag}-col", metavar="NAME", help=f"name of the {flag.replace('-', '_')} column")
    convert.add_argument("--text-key", help="scores: key of the text in each completion dict (default response)")
    convert.add_argument("--score-key", help="scores: key of the score in each completion dict (default score)")
    convert.add_argument("--rule", help="scores: best_vs_random (default) | best_vs_rest | best_vs_worst")
    convert.add_argument("--min-gap", type=float, help="scores: smallest score difference that makes a pair")
    convert.add_argument("--seed", type=int, help="scores: seed of best_vs_random")
    convert.add_argument("--min-agreement", type=float, help="votes: drop items below this agreement (default 0)")
    _add_on_bad_row(convert)
    convert.set_defaults(func=_convert)

    agree = dsub.add_parser(
        "agreement",
        help="labeler agreement report (kappa, alpha, per labeler) and filtered majority pairs",
        description="INPUT rows: prompt, response_a, response_b, votes (per labeler: 1 = a, 0 = b, -1 = not rated).",
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
    agree.add_argument("--out", help="write the kept pairs (prompt/chosen/rejected/agreement/n_votes) here")
    for flag in ("prompt", "response-a", "response-b", "votes"):
        agree.add_argument(f"--{flag}-col", metavar="NAME", help=f"name of the {flag.replace('-', '_')} column")
    _add_on_bad_row(agree)
    agree.set_defaults(func=_agreement)


def _add_on_bad_row(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-row",
        choices=["error", "skip"],
        default="error",
        help="error: stop at the first malformed row (default); skip: skip and count malformed rows",
    )


def _options(args: argparse.Namespace, allowed: tuple[str, ...], fmt: str) -> dict:
    """The converter keywords the user set; a flag that does not apply to ``fmt`` is a ConfigError."""
    every = {name for names in FORMAT_OPTIONS.values() for name in names}
    given = {name: getattr(args, name) for name in every if getattr(args, name, None) is not None}
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        takes = ", ".join("--" + name.replace("_", "-") for name in allowed)
        raise ConfigError(f"{flags} does not apply to --format {fmt}; it takes {takes}")
    return given


def _print_report(console, report) -> None:
    console.print(report.summary(), soft_wrap=True, highlight=False)
    for line in report.examples:
        console.print(f"  skipped: {line}", markup=False, highlight=False, soft_wrap=True)


def _convert(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.data import load_preferences

    options = _options(args, FORMAT_OPTIONS[args.format], args.format)
    data = load_preferences(args.input, args.format, on_bad_row=args.on_bad_row, **options)
    data.write(args.out)
    console = Console()
    _print_report(console, data.report)
    console.print(f"wrote {len(data)} pairs to {args.out}", highlight=False)
    return 0


def _agreement(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.data import from_votes

    columns = {name: getattr(args, name) for name in VOTE_COLUMNS if getattr(args, name) is not None}
    data = from_votes(
        args.input,
        min_agreement=args.min_agreement,
        drop_unreliable=args.drop_unreliable,
        labeler_threshold=args.labeler_threshold,
        on_bad_row=args.on_bad_row,
        **columns,
    )
    console = Console()
    console.print(summary_table(data.agreement, args.min_agreement))
    console.print(labeler_table(data.agreement))
    _print_report(console, data.report)
    if args.out:
        data.write(args.out)
        console.print(f"wrote {len(data)} pairs to {args.out}", highlight=False)
    return 0


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def summary_table(result, min_agreement: float):
    """Rich table of the dataset-level agreement statistics and what filtering kept."""
    from rich.table import Table

    r = result.report
    table = Table(title="labeler agreement", show_header=False)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("items x labelers", f"{r.n_items:,} x {r.n_labelers}")
    table.add_row("votes cast", f"{r.n_votes:,}")
    table.add_row("mean agreement with the majority", _fmt(r.mean_agreement, pct=True))
    table.add_row("unanimous items", _fmt(r.share_unanimous, pct=True))
    table.add_row("ties (no majority)", _fmt(r.share_ties, pct=True))
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
        table.add_row("votes removed from labelers", ", ".join(map(str, result.dropped_labelers)))
    table.add_row("items dropped", dropped)
    table.add_row("items kept", f"{result.n_kept:,} ({_fmt(result.n_kept / max(r.n_items, 1), pct=True)})")
    return table


def labeler_table(result):
    """Rich table of each labeler's agreement with the leave-one-out majority."""
    from rich.table import Table

    lab = result.report.labelers
    table = Table(title=f"labelers (flagged below {lab.threshold:g} agreement with the others' majority)")
    for name in ("labeler", "rated", "compared", "agreement", "flagged"):
        table.add_column(name, justify="right" if name != "flagged" else "left")
    for j in range(len(lab.agreement)):
        flag = "[red]yes[/red]" if lab.flagged[j] else "no"
        table.add_row(str(j), f"{lab.n_rated[j]:,}", f"{lab.n_compared[j]:,}", _fmt(lab.agreement[j], pct=True), flag)
    return table
