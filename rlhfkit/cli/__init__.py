"""The ``rlhfkit`` command: the parser and the one error path; each command group lives in its own module.

    rlhfkit demo [--print-config]                   the whole pipeline on the built-in lab        (run.py)
    rlhfkit run CONFIG [--from STAGE] [--set K=V]   run (or resume) the pipeline from a YAML config  (run.py)
    rlhfkit compare CONFIG|demo [--algorithms A,B]  PPO, GRPO, RLOO, DPO, best-of-N on the same data  (run.py)
    rlhfkit presets list | show NAME [--stage S]    method / GPU-size presets and what they expand to  (presets.py)
    rlhfkit data convert | agreement INPUT ...      preference data -> pairs; labeler agreement  (data.py)
    rlhfkit sample MODEL PROMPTS --k K --out FILE   K responses per prompt from a policy, to compare  (sample.py)
    rlhfkit label COMPARISONS --out VOTES           the labeling page (or --judge MODEL)  (label.py)
    rlhfkit eval-rm MODEL DATA [--out DIR]          reward-model report and the gate before RL  (eval_rm.py)
    rlhfkit plan --model M --stage S | --config F   memory plan of a training run on a GPU  (plan.py)

Exit codes: 0 = done; 1 = a verdict said no (``eval-rm``: the gate failed; ``plan``: it does not fit); 2 = an error
a user can fix (:class:`~rlhfkit.core.errors.RlhfkitError`, or a bad argument), printed as one ``error:`` line per
problem (``--debug`` shows the traceback; :mod:`rlhfkit.core.entry` is the error path the recipes share); 130 =
interrupted. Every command checks its inputs before it writes anything (:mod:`rlhfkit.pipeline.validate`);
``run --check`` does only that.

``rlhfkit --help`` imports no torch: modules that import torch, transformers, datasets or numpy when loaded, and
rich / yaml, are imported inside the handlers that need them. The terminal tables (agreement, labelers, reward-model
verdict, memory plan) are the CLI's rendering of results whose content the library owns.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from rlhfkit import __version__
from rlhfkit.cli import data, eval_rm, presets, run
from rlhfkit.cli import label as label_command
from rlhfkit.cli import plan as plan_command
from rlhfkit.cli import sample as sample_command
from rlhfkit.core.entry import OneLineParser, run_guarded


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(  # argparse errors are one line naming the valid choices (exit 2), as every other error
        prog="rlhfkit",
        description="InstructGPT-style RLHF: SFT -> reward model -> PPO/GRPO, over Hugging Face TRL.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_commands(sub)  # the order here is the order in --help
    run.add_compare(sub)
    presets.add_commands(sub)
    data.add_commands(sub)
    sample_command.add_commands(sub)
    label_command.add_commands(sub)
    eval_rm.add_commands(sub)
    plan_command.add_commands(sub)
    return parser


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def _quiet_known_noise() -> None:
    """Silence messages every run prints that a user cannot act on: TRL 1.16's configs default the deprecated
    ``gradient_checkpointing`` name (transformers 5 warns); bitsandbytes' CPU backend logs that it could not load the
    optional ``kernels`` package's kernel (its fallback is what the CPU path uses), and ``kernels`` that it skips a
    publisher check offline. bitsandbytes is imported with peft, which TRL's configs import. transformers 5 checks
    a model's tensor-parallel plan on every load and lists the layers outside it (a reward model's score head, at
    each load), though rlhfkit never shards with it; and says it orders checkpoints by number, not time, when they
    were written within a second of each other (a small run's)."""
    warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("transformers.distributed.tensor_parallel").addFilter(
        _DropMessages("The following layers were not sharded")
    )
    logging.getLogger("transformers.trainer_utils").addFilter(_DropMessages("mtime may not be reliable"))


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors a user can fix print one ``error:`` line per problem and return 2
    (:func:`rlhfkit.core.entry.run_guarded`: the same error path as the recipes)."""
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
