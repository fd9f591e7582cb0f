"""The ``rlhfkit`` command.

Each command group lives in a small ``cli_*`` module with a ``register(subparsers)`` function that
adds its parsers and sets ``func``; handlers import torch/transformers lazily so that
``rlhfkit --help`` answers in well under a second. Errors a user can fix (:class:`RlhfkitError`)
print one line and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlhfkit import __version__
from rlhfkit.errors import RlhfkitError

# Modules that add subcommands, in the order they appear in --help.
COMMAND_MODULES = ("rlhfkit.cli_main", "rlhfkit.cli_data", "rlhfkit.cli_eval", "rlhfkit.cli_plan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="InstructGPT-style RLHF: SFT -> reward model -> PPO/GRPO, over Hugging Face TRL.",
    )
    parser.add_argument("--version", action="version", version=f"rlhfkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command group not built yet
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _quiet_known_noise() -> None:
    """Silence two messages every run prints that a user cannot act on: TRL 1.16's configs default the deprecated
    ``gradient_checkpointing`` name (transformers 5 warns), and bitsandbytes' CPU backend logs that the optional
    ``kernels`` package is missing (its fallback is what the CPU path uses)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_known_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except RlhfkitError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
