"""``rlhfkit label COMPARISONS --out VOTES``: the local labeling page where people compare a comparisons file's
responses (:mod:`rlhfkit.feedback.server`), or with ``--judge MODEL`` the AI judge answering the same file."""

from __future__ import annotations

import argparse
import socket

from rlhfkit.core.errors import ConfigError

DEFAULT_PORT = 8421


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="compare sampled responses on a local web page (several labelers, keyboard first) or with an AI judge",
        description="Serves a labeling page for COMPARISONS (rows of `rlhfkit sample`) and appends every vote to "
        "--out (fsynced before the page moves on). Prints each labeler's link and runs until Ctrl-C / SIGTERM; "
        "started again it continues where every labeler stopped. Pairwise mode asks every pair of an item's "
        "responses (each pair a task of its own; K = 2: one per item); ranking mode orders all K at once (K <= 9).",
    )
    p.add_argument("comparisons", metavar="COMPARISONS", help="comparisons file (.jsonl) from `rlhfkit sample`")
    p.add_argument("--out", required=True, help="votes file (.jsonl) to append to; created if absent")
    p.add_argument(
        "--mode", choices=("pairwise", "ranking"), default="pairwise", help="what a labeler answers (default pairwise)"
    )
    p.add_argument(
        "--overlap", metavar="N", type=_positive, default=1, help="labelers per item, for agreement (default 1)"
    )
    p.add_argument(
        "--seed", metavar="S", type=int, default=0, help="seeds each labeler's item order and left/right order (0)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--labelers",
        metavar="NAMES",
        type=_names,
        help="alice,bob,...: only these may label, each through a secret link (kept beside --out: votes.jsonl -> "
        "votes.keys.json); "
        "required with a --host other machines can reach",
    )
    p.add_argument(
        "--export",
        choices=("label-studio",),
        help="instead of the page: write COMPARISONS as Label Studio tasks to --out (tasks.json) with the labeling "
        "config beside it (tasks.labelconfig.xml); read the project's JSON export back with `rlhfkit data convert "
        "EXPORT.json --format label-studio`",
    )
    judge = p.add_argument_group("AI judge (instead of the page: the judge answers COMPARISONS into --out)")
    judge.add_argument("--judge", metavar="MODEL", help="AI judge: the judge model (a folder or hub id)")
    judge.add_argument("--constitution", metavar="FILE", help="AI judge: the principles it judges by")
    judge.add_argument(
        "--tie-margin", metavar="M", type=float, default=0.05, help="AI judge: |p - 0.5| below this is a tie (0.05)"
    )
    judge.add_argument(
        "--principles-per-pair",
        metavar="N",
        type=_positive,
        default=None,
        help="AI judge: a seeded sample of N principles per pair (default: every principle)",
    )
    judge.add_argument(
        "--batch-size", metavar="N", type=_positive, default=8, help="AI judge: pairs per forward pass (8)"
    )
    judge.add_argument(
        "--preset",
        choices=("full", "lora", "qlora"),
        default="full",
        help="AI judge: how the judge is loaded (qlora: 4-bit; lora: a LoRA adapter folder over its base)",
    )
    judge.add_argument(
        "--answer-tokens",
        metavar="A,B",
        default="1,2",
        help="AI judge: the two answers it chooses between, each one token of its tokenizer (default 1,2)",
    )
    p.set_defaults(func=_label)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def judge_lines(report) -> str:
    """The judge's run in three lines: what was written, its position statistics, where the votes went."""
    return (
        f"judged {report.n_pairs} pairs x principles with {report.model} ({report.n_written} new, {report.n_skipped} "
        f"already in the votes file)\n"
        f"position consistency {_pct(report.position_consistency)} (verdicts that survive swapping the order), "
        f"left chosen {_pct(report.left_choice_rate)} (one order), ties {_pct(report.tie_rate)}\n"
        f"votes in {report.out}; check them against people with `rlhfkit data agreement {report.out}`"
    )


def _export(args: argparse.Namespace) -> int:
    """``--export label-studio``: the tasks and the labeling config, and what to do with them."""
    from rich.console import Console

    from rlhfkit.core.checks import output_file_problems
    from rlhfkit.core.errors import raise_problems
    from rlhfkit.feedback.labelstudio import export_tasks, import_note

    problems = output_file_problems(args.out, "--out")
    if args.judge:
        problems.append(f"--export writes tasks for Label Studio; --judge {args.judge!r} answers them: give one")
    raise_problems(problems)
    tasks, config = export_tasks(args.comparisons, args.out)
    console = Console(emoji=False, highlight=False)
    console.print(f"wrote the tasks to {tasks} and the labeling config to {config}:", soft_wrap=True)
    console.print(config.read_text(), markup=False, soft_wrap=True)
    console.print(import_note(tasks, config), soft_wrap=True)
    return 0


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number >= 1")
    return int(value)


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{value!r} must be distinct names separated by commas, e.g. alice,bob")
    return names


def _label(args: argparse.Namespace) -> int:
    if args.export:
        return _export(args)
    if args.judge:
        from rich.console import Console

        from rlhfkit.feedback.judge import judge_file

        answers = tuple(t.strip() for t in args.answer_tokens.split(","))
        if len(answers) != 2 or not all(answers) or answers[0] == answers[1]:
            raise ConfigError(f"--answer-tokens {args.answer_tokens!r} must be two different answers, e.g. 1,2 or A,B")
        report = judge_file(
            args.comparisons,
            args.out,
            model=args.judge,
            constitution=args.constitution,
            tie_margin=args.tie_margin,
            principles_per_pair=args.principles_per_pair,
            batch_size=args.batch_size,
            seed=args.seed,
            preset=args.preset,
            answer_tokens=answers,
        )
        Console(emoji=False, highlight=False).print(judge_lines(report))
        return 0
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"rlhfkit label needs {e.name}, which is not installed: pip install 'rlhfkit[label]'"
        ) from None
    from rlhfkit.feedback.server import bind, build_app, is_loopback, serve
    from rlhfkit.feedback.session import LabelSession

    if not is_loopback(args.host) and not args.labelers:
        raise ConfigError(
            f"--host {args.host} lets other machines reach the page: name the labelers with --labelers alice,bob "
            "(each gets a secret link), or keep the default --host 127.0.0.1"
        )
    sock = bind(args.host, args.port)
    session = LabelSession(
        args.comparisons, args.out, mode=args.mode, overlap=args.overlap, seed=args.seed, labelers=args.labelers
    )
    try:
        _print_links(session, args.host, sock.getsockname()[1])
        serve(build_app(session, args.host), sock)
    finally:
        session.close()
    counts, _ = session.counts()
    print(f"stopped: {counts['votes']} votes by {len(counts['labelers'])} labelers in {args.out}", flush=True)
    return 0


def _print_links(session, host: str, port: int) -> None:
    counts, _ = session.counts()
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    print(
        f"rlhfkit label: {counts['items']} items, {counts['tasks']} {counts['mode']} tasks, overlap "
        f"{counts['overlap']}; {counts['votes']} votes so far in {counts['votes_file']}"
    )
    print("labeler links (the name in the link is the name in the votes):")
    for name, link in session.links(base):
        if name == "status":
            print(f"status page: {link}")
        else:
            progress = counts["labelers"].get(name)
            note = f"  ({progress['done']} done, {progress['left']} left)" if progress else ""
            print(f"  {name if name != 'NAME' else '(anyone)':<12} {link}{note}")
    print("Ctrl-C stops the server; every vote the page acknowledged is already on disk.", flush=True)
