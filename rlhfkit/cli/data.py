"""``rlhfkit data convert`` (a preference format -> prompt / chosen / rejected pairs, with a conversion report) and
``rlhfkit data agreement`` (labeler agreement: Fleiss, Krippendorff, Cohen per pair, per-labeler tables, filtering)."""

from __future__ import annotations

import argparse

from rlhfkit.core.errors import ConfigError, raise_problems

# `data convert`: the column / option flags each format accepts (argparse dest -> converter keyword).
FORMAT_OPTIONS = {
    "hh": ("chosen_col", "rejected_col"),
    "columns": ("prompt_col", "chosen_col", "rejected_col", "p_col"),
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
    "label-studio": ("prompt_col", "responses_col", "labels", "from_name"),
}


VOTE_COLUMNS = ("prompt_col", "response_a_col", "response_b_col", "votes_col", "labeler_cols", "labels")


TIES_HELP = (
    "drop: tie items are not pairs (default); margin: keep items with more votes for one side and write the vote "
    "margin to TRL's margin column"
)


# ------------------------------------------------------------------------------------------ data
def add_commands(sub: argparse._SubParsersAction) -> None:
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
    convert.add_argument(
        "--p-col",
        metavar="NAME",
        help="columns: the probability that chosen is better, kept as p for soft labels (default: a p or probability "
        "column when there is one)",
    )
    convert.add_argument("--text-key", help="scores: key of the text in each completion dict (default response)")
    convert.add_argument("--score-key", help="scores: key of the score in each completion dict (default score)")
    convert.add_argument("--rule", help="scores: best_vs_random (default) | best_vs_rest | best_vs_worst")
    convert.add_argument("--min-gap", type=float, help="scores: smallest score difference that makes a pair")
    convert.add_argument("--seed", type=int, help="scores: seed of best_vs_random")
    convert.add_argument("--min-agreement", type=float, help="votes: drop items below this agreement (default 0)")
    convert.add_argument(
        "--from-name",
        metavar="NAME",
        help="label-studio: the control tag whose results are the preference (default: the annotation's one "
        "pairwise / ranker result, else its one choices result)",
    )
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
    from rlhfkit.pipeline.validate import check_preference_file

    options = _convert_options(args)
    check_preference_file(args.input, args.out)  # readable input, --out a file (never an existing folder)
    if args.format == "label-studio":
        return _convert_label_studio(args, options)
    data = load_preferences(args.input, args.format, on_bad_row=args.on_bad_row, **options)
    data.write(args.out)
    console = Console()
    _print_data_report(console, data.report)
    console.print(f"wrote {len(data)} pairs to {args.out}", highlight=False)
    return 0


def _convert_label_studio(args: argparse.Namespace, options: dict) -> int:
    """A Label Studio JSON export -> a votes file (one row per annotation that gives a vote)."""
    from rich.console import Console

    from rlhfkit.feedback.labelstudio import read_export, write_votes

    if not args.out.endswith(".jsonl"):
        raise ConfigError(f"--out {args.out!r}: --format label-studio writes a votes file; name it e.g. votes.jsonl")
    votes, report = read_export(args.input, on_bad_row=args.on_bad_row, **options)
    write_votes(votes, args.out)
    console = Console()
    _print_data_report(console, report)
    console.print(f"wrote {len(votes)} votes to {args.out}", highlight=False)
    return 0


def _agreement(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlhfkit.core.checks import output_file_problems
    from rlhfkit.core.io import write_json
    from rlhfkit.data import agreement_summary, from_votes
    from rlhfkit.pipeline.validate import check_preference_file

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
    summary = agreement_summary(data)
    judge = _judge_summary(args.input)
    if judge is not None:
        summary["judge"] = judge
    console = Console(emoji=False)  # a judge labeler "judge:<model>:<principle>" is not an emoji code
    console.print(summary_table(data.agreement, args.min_agreement))
    console.print(labeler_table(data.agreement))
    console.print(cohen_table(data.agreement))
    if judge is not None:
        console.print(judge_table(judge))
    _print_data_report(console, data.report)
    if args.json:
        write_json(args.json, summary)
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
    left = r.left_choice_rate  # votes files only: position bias
    columns = ("labeler", "rated", "compared", "agreement", "ties", *(("left chosen",) if left else ()), "flagged")
    for name in columns:
        table.add_column(name, justify="right" if name != "flagged" else "left")
    for j in range(len(lab.agreement)):
        flag = f"[red]yes: {', '.join(flag_reasons(lab, j))}[/red]" if lab.flagged[j] else "no"
        table.add_row(
            r.labeler_names[j],
            f"{lab.n_rated[j]:,}",
            f"{lab.n_compared[j]:,}",
            _fmt(lab.agreement[j], pct=True),
            _fmt(lab.tie_rate[j], pct=True),
            *((_fmt(left.get(r.labeler_names[j]), pct=True),) if left else ()),
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


def _judge_summary(source) -> dict | None:
    """The ``judge`` section of a votes file with judge votes (:func:`rlhfkit.data.judge_votes.judge_summary`)."""
    from rlhfkit.data.judge_votes import judge_summary
    from rlhfkit.data.votelog import read_vote_log
    from rlhfkit.data.votes import is_vote_log_source

    return judge_summary(read_vote_log(source)) if is_vote_log_source(source) else None


def judge_table(judge: dict):
    """Rich table of the AI judge against the people who voted on the same pairs (and the lab's gold)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="AI judge vs people (Cohen's kappa on the pairs both rated)", show_header=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("judge votes (item, pair, principle)", f"{judge['n_pairs']:,}")
    table.add_row("position consistency (verdict kept after the swap)", _fmt(judge["position_consistency"], pct=True))
    table.add_row("left-choice rate, one order (0.5: no position bias)", _fmt(judge["left_choice_rate"], pct=True))
    table.add_row("ties", _fmt(judge["tie_rate"], pct=True))
    table.add_row("pairs with a judge verdict and a people's majority", f"{judge['n_shared']:,}")
    for who, kappa in judge["agreement_with_humans"].items():
        table.add_row(f"kappa with {'the majority of people' if who == 'majority' else escape(who)}", _fmt(kappa))
    table.add_row("agreement with the people's majority", _fmt(judge["accuracy_vs_majority"], pct=True))
    kappas = f"{_fmt(judge['judge_kappa'])} / {_fmt(judge['human_kappa'])}"
    table.add_row("mean kappa: judge with each person / people with each other", kappas)
    flag = judge["flag_below_human_agreement"]
    verdict = {None: "n/a", True: "[red]yes: check its labels before trusting them[/red]", False: "no"}[flag]
    table.add_row("judge agrees with people less than people agree", verdict)
    if "accuracy_vs_gold" in judge:
        table.add_row("accuracy vs the lab's gold (a tie one half)", _fmt(judge["accuracy_vs_gold"], pct=True))
    return table
