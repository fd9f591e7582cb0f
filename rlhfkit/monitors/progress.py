"""What a training run shows on the console: one progress bar with the few numbers that matter, then one result line.

    show_progress(trainer, "sft")                 # before training: replaces transformers' bar and log printer
    show_progress(trainer, "ppo", health=monitor) # RL: the health monitor's KL per starting token and alerts

:class:`TrainingProgress` replaces transformers' ``ProgressCallback`` / ``PrinterCallback``, which print every log
as a raw dict between tqdm bars. It shows, live:

* SFT, reward model: ``loss`` (and ``accuracy`` where the trainer logs it);
* RL: the proxy reward (the reward model's score; DPO: its implicit reward margin), the KL per starting token
  against the monitors' ``kl_caution`` (:func:`rlhfkit.monitors.signals.kl_per_start_token`, the number the
  monitors judge), the lab's gold reward when it is logged, and the alerts so far.

On a terminal that is a rich progress bar (it disappears when the run ends); elsewhere (CI logs, captured output)
a plain line at each quarter of the run, no control characters. Either way the run ends with one result line.
Warnings and monitor alerts are logged as they happen. Only the world main process shows anything.

Only the console changes: the logs (``log_history``, ``report_to``) are read, never modified. ``RLHFKIT_VERBOSE=1``
(``--verbose`` on the command line) keeps transformers' own bar and per-step dicts instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from rlhfkit.lab import GOLD_KEY
from rlhfkit.monitors.health import HealthMonitor, read_metrics
from rlhfkit.monitors.signals import kl_per_start_token

VERBOSE_ENV = "RLHFKIT_VERBOSE"
PLAIN_LINES = 4  # without a terminal: a line at each quarter of the run (the last is the result line)


def verbose() -> bool:
    """Whether ``RLHFKIT_VERBOSE`` asks for transformers' own per-step dicts and bars (any value but "" or "0")."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def show_progress(trainer, name: str, health: HealthMonitor | None = None, console=None) -> None:
    """Replace ``trainer``'s transformers progress bar / log printer by a :class:`TrainingProgress` named ``name``
    (unless :func:`verbose`). Call it after adding the monitors, before training or evaluating: ``health`` is the
    RL run's :class:`~rlhfkit.monitors.health.HealthMonitor`, found among the trainer's callbacks when not given."""
    if verbose():
        return
    for default in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(default)
    callbacks = trainer.callback_handler.callbacks
    if health is None:
        health = next((c for c in callbacks if isinstance(c, HealthMonitor)), None)
    for old in [c for c in callbacks if isinstance(c, TrainingProgress)]:
        trainer.remove_callback(old)
    trainer.add_callback(TrainingProgress(name, health=health, console=console))  # last: after the monitor's on_log


def live_numbers(logs: Mapping[str, Any], health: HealthMonitor | None = None) -> dict[str, str]:
    """The numbers a training log shows on the console, formatted: SFT / reward ``loss`` (+ ``accuracy``); an RL log
    (:func:`~rlhfkit.monitors.health.read_metrics`) its proxy reward, the KL per starting token of ``health``'s
    timeline against ``kl_caution``, the lab's gold and the alerts so far. ``{}`` for an eval or summary log."""
    if any(str(k).startswith("eval_") for k in logs) or "train_runtime" in logs:
        return {}
    metrics = read_metrics(logs)
    if metrics is None:
        return {k: f"{logs[k]:.4g}" for k in ("loss", "accuracy") if isinstance(logs.get(k), int | float)}
    numbers = {}
    if "reward" in metrics:
        numbers["margin" if metrics["stage"] == "dpo" else "proxy"] = f"{metrics['reward']:.3f}"
    if health is not None:
        kl = kl_per_start_token(health.timeline, health.config)
        if kl:
            numbers["KL/token"] = f"{kl[-1][1]:.3f} (caution {health.config.kl_caution:g})"
    if isinstance(logs.get(GOLD_KEY), int | float):
        numbers["gold"] = f"{logs[GOLD_KEY]:.3f}"
    if health is not None:
        numbers["alerts"] = str(len(health.alerts))
    return numbers


def format_numbers(numbers: Mapping[str, str]) -> str:
    return "  ".join(f"{k} {v}" for k, v in numbers.items())


class TrainingProgress(TrainerCallback):
    """One progress bar per training run with :func:`live_numbers`, then one result line (see the module doc).

    Args:
        name: what the bar and the result line are called (``sft``, ``reward``, ``ppo``, ...).
        health: the RL run's health monitor (its KL per starting token and alerts); None for SFT / reward.
        console: a ``rich.console.Console`` (default: stdout's; it detects whether it is a terminal).
    """

    def __init__(self, name: str, health: HealthMonitor | None = None, console=None):
        self.name, self.health, self._console = name, health, console
        self.numbers: dict[str, str] = {}
        self._progress = self._task = None
        self._start, self._first_step, self._next_line = 0.0, 0, 1

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.numbers, self._start, self._first_step = {}, time.perf_counter(), state.global_step
        self._next_line = 1 + state.global_step * PLAIN_LINES // max(state.max_steps, 1)
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[numbers]}"),
                console=self.console,
                transient=True,  # the result line replaces it
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.name, total=state.max_steps, completed=state.global_step, numbers=""
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        numbers = live_numbers(logs or {}, self.health)
        if not numbers:
            return
        self.numbers = numbers
        if self._progress is not None:
            self._progress.update(self._task, numbers=format_numbers(numbers))
        elif state.max_steps and state.global_step * PLAIN_LINES >= self._next_line * state.max_steps:
            if state.global_step < state.max_steps:  # at the end the result line says it
                self._print(f"{self.name}: step {state.global_step}/{state.max_steps}  {format_numbers(numbers)}")
            self._next_line = 1 + state.global_step * PLAIN_LINES // state.max_steps

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        steps = state.global_step - self._first_step
        stopped = f" (stopped at {state.global_step}/{state.max_steps})" if state.global_step < state.max_steps else ""
        seconds = time.perf_counter() - self._start
        self._print(f"{self.name}: {steps} steps in {seconds:.0f} s{stopped}  {format_numbers(self.numbers)}".rstrip())

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
