"""``rlhfkit sample MODEL PROMPTS --k K --out comparisons.jsonl``: K responses per prompt from a policy (a model
folder, a hub id, or a pipeline run's ``sft`` / ``rl`` model with ``--run RUN_DIR --stage STAGE``) into a comparisons
file, resumable (:mod:`rlhfkit.feedback.sample`). Every argument, the model, the prompts and the existing ``--out``
file are checked before the model is loaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhfkit.core.errors import ConfigError, DataError, raise_problems

STAGES = ("sft", "rl")  # the pipeline stages whose output is a policy
PLAIN_LINES = 4  # without a terminal: a progress line at each quarter of the prompts, as a training run prints


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="sample K responses per prompt from a policy into a comparisons file (to label or judge)",
        description="Samples K distinct responses per prompt (the final evaluation's sampler: left-padded batches, "
        "top_k 0) and appends one comparisons row per prompt to --out: item_id, prompt, responses, model, sampling. "
        "A killed run resumes where it stopped when the same command is run again. Exit 0 when done, 2 on an error.",
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help="the policy: a model folder or a hub id (or --run)")
    p.add_argument(
        "prompts",
        metavar="PROMPTS",
        help="prompts as the pipeline reads them: a .jsonl/.json/.parquet/.csv file or a dataset folder or hub id "
        "with a 'prompt' column (text or chat messages), or 'lab' for the lab's prompts",
    )
    p.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="a pipeline run's folder (`rlhfkit run`'s output_dir): sample its --stage's model instead of MODEL",
    )
    p.add_argument("--stage", choices=STAGES, default="sft", help="with --run: the sft (default) or rl stage's model")
    p.add_argument("--k", type=int, default=4, help="responses per prompt, >= 2 (default 4; InstructGPT: 4-9)")
    p.add_argument(
        "--out",
        required=True,
        help="the comparisons file (.jsonl); one `rlhfkit sample` wrote with the same model and settings is resumed",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, > 0 (default 1: the policy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling, in (0, 1] (default 1: every token)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest response in tokens (default 128)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="sequences per forward pass (default 64: 16 prompts at --k 4); the same value gives the same responses",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the prompts' order (default 0)")
    p.add_argument("--num-prompts", type=int, help="sample the first N distinct prompts (default: all; lab: 72)")
    p.add_argument("--split", default="train", help="the split of a dataset folder or hub dataset (default train)")
    p.add_argument(
        "--preset",
        choices=("full", "lora", "qlora"),
        help="how to load the model: qlora loads it 4-bit (default: full; with --run, the run's model.preset)",
    )
    p.set_defaults(func=_sample)


def run_model(run_dir: str, stage: str) -> tuple[str, str]:
    """``(model folder, preset)`` of a finished pipeline run's ``stage`` (from its ``manifest.json``: the stage's
    ``model_dir`` and the run's ``model.preset``); a run that is not there or not finished raises one line."""
    from rlhfkit.pipeline.manifest import MANIFEST, Manifest

    folder = Path(run_dir).expanduser()
    if not (folder / MANIFEST).is_file():
        raise ConfigError(
            f"--run {run_dir!r} has no {MANIFEST}: not a pipeline run folder; give the output_dir of `rlhfkit run`"
        )
    manifest = Manifest(folder, writable=False)
    entry = manifest.stage(stage)
    if entry.get("status") != "done":
        status = entry.get("status", "not run")
        raise ConfigError(
            f"--run {run_dir!r}: stage {stage} has not finished ({status}); finish it with `rlhfkit run` or sample "
            f"another --stage"
        )
    recorded = Path(entry.get("outputs", {}).get("model_dir", folder / stage / "model"))
    model_dir = recorded if recorded.is_dir() else folder / stage / "model"  # a run folder moved since it ran
    if not model_dir.is_dir():
        raise ConfigError(f"--run {run_dir!r}: the {stage} model folder {str(recorded)!r} is gone; rerun the stage")
    preset = manifest.stage("sft").get("config", {}).get("model", {}).get("preset", "full")
    return str(model_dir), preset


def _checked(args: argparse.Namespace) -> tuple[str, str, str, list]:
    """``(model folder or hub id, the rows' model name, preset, prompts)``, every problem raised at once."""
    from rlhfkit.core.checks import output_file_problems
    from rlhfkit.data.checks import PROMPT_COLUMNS, data_problems
    from rlhfkit.feedback.sample import sample_prompts, sampling_problems
    from rlhfkit.models.checks import model_problems

    settings = {k: getattr(args, k) for k in ("k", "temperature", "top_p", "max_new_tokens", "seed", "batch_size")}
    problems = sampling_problems(**settings, flags=True)
    if args.num_prompts is not None and args.num_prompts < 1:
        problems.append(f"--num-prompts {args.num_prompts} must be >= 1 (or left out: every prompt)")
    model, name, preset = args.model, args.model, args.preset or "full"
    if args.run is not None and args.model is not None:
        problems.append(f"give MODEL ({args.model!r}) or --run {args.run!r}, not both")
    elif args.run is not None:
        try:
            model, preset = run_model(args.run, args.stage)
            name, preset = f"run:{Path(args.run).expanduser().resolve()}:{args.stage}", args.preset or preset
        except ConfigError as e:
            problems += e.problems
    elif args.model is None:
        problems.append("give MODEL (a model folder or hub id) or --run RUN_DIR --stage sft|rl")
    elif args.model.startswith("lab:"):
        problems.append(f"MODEL {args.model!r} is an untrained lab model; sample a run's (--run RUN_DIR --stage sft)")
    else:
        problems += model_problems(args.model, "MODEL")
        if Path(args.model).expanduser().is_dir():  # rows name a folder as it is wherever the file is read
            name = str(Path(args.model).expanduser().resolve())
    unreadable = data_problems(args.prompts, "PROMPTS", PROMPT_COLUMNS, "rlhfkit sample", args.split)
    problems += unreadable + output_file_problems(args.out, "--out")
    prompts: list = []
    if not unreadable and (args.num_prompts is None or args.num_prompts >= 1):
        try:
            prompts = sample_prompts(args.prompts, args.num_prompts, args.seed, args.split)[0]
        except DataError as e:
            problems += e.problems
    raise_problems(problems)
    return model, name, preset, prompts


def _sample(args: argparse.Namespace) -> int:
    import datasets
    import transformers
    from rich.console import Console

    from rlhfkit.feedback.sample import resume_rows, sample_comparisons
    from rlhfkit.models.sampling import load_for_sampling

    datasets.disable_progress_bars()  # reading the prompts, loading the model: the sampling has its own bar
    transformers.utils.logging.disable_progress_bar()
    model_dir, name, preset, prompts = _checked(args)
    settings = {k: getattr(args, k) for k in ("temperature", "top_p", "max_new_tokens", "seed", "k")}
    done = len(resume_rows(args.out, name, settings, prompts))  # a file that cannot be resumed: before the load
    console = Console()
    if done == len(prompts):
        console.print(
            f"{args.out}: all {done} prompts are done already", markup=False, highlight=False, soft_wrap=True
        )
        return 0
    with console.status(f"loading {name}"):
        model, tokenizer = load_for_sampling(model_dir, preset)
    with _Progress(console, f"sampling {args.k} x {len(prompts)} prompts", len(prompts), done) as advance:
        report = sample_comparisons(
            model,
            tokenizer,
            prompts,
            out=args.out,
            model_name=name,
            batch_size=args.batch_size,
            progress=advance,
            **settings,
        )
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    return 0


class _Progress:
    """A rich progress bar of prompts done on a terminal; elsewhere a plain line at each quarter."""

    def __init__(self, console, name: str, total: int, done: int):
        self.console, self.name, self.total, self.done = console, name, total, done
        self._bar = self._task = None
        self._next_line = 1 + done * PLAIN_LINES // max(total, 1)

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._bar = Progress(*columns, console=self.console, transient=True)  # the summary line replaces it
            self._bar.start()
            self._task = self._bar.add_task(self.name, total=self.total, completed=self.done)
        return self.advance

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.done < self.total and self.done * PLAIN_LINES >= self._next_line * self.total:
            self.console.print(f"{self.name}: {self.done}/{self.total}", markup=False, highlight=False, soft_wrap=True)
            self._next_line = 1 + self.done * PLAIN_LINES // self.total

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
