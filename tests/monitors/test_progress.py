"""The console's view of a training run: live numbers from fake logs, plain lines without a terminal, the logs left
untouched, and transformers' bar / printer replaced on a real Trainer unless RLHFKIT_VERBOSE is set."""

from __future__ import annotations

import copy
import io

import pytest
from rich.console import Console
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from rlhfkit.lab import GOLD_KEY
from rlhfkit.monitors import HealthMonitor, MonitorConfig
from rlhfkit.monitors.progress import VERBOSE_ENV, TrainingProgress, live_numbers, show_progress
from rlhfkit.monitors.signals import kl_per_start_token

STEPS = 20


def _args(tmp_path, **kw):
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kw)


def _train(callbacks, logs_of, tmp_path, steps=STEPS):
    """Drive callbacks as a Trainer does: begin, then each step's end and its log, then the end."""
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    state.max_steps = steps
    for cb in callbacks:
        cb.on_train_begin(args, state, control)
    for step in range(1, steps + 1):
        state.global_step = step
        logs = logs_of(step)
        for cb in callbacks:
            cb.on_step_end(args, state, control)
            cb.on_log(args, state, control, logs=logs)
    for cb in callbacks:
        cb.on_train_end(args, state, control)


def _plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=200)


def _grpo_log(step: int) -> dict:
    return {"reward": 0.1 * step, "kl": 0.001 * step, "completions/mean_length": 10.0, GOLD_KEY: 0.5, "loss": 0.0}


def test_without_a_terminal_sft_prints_a_plain_line_each_quarter_then_the_result(tmp_path):
    console = _plain_console()
    _train([TrainingProgress("sft", console=console)], lambda s: {"loss": 3.0 - 0.1 * s, "grad_norm": 1.5}, tmp_path)
    lines = console.file.getvalue().splitlines()
    assert lines[:3] == [f"sft: step {s}/20  loss {3.0 - 0.1 * s:.4g}" for s in (5, 10, 15)]
    assert len(lines) == 4 and lines[3].startswith("sft: 20 steps in ") and lines[3].endswith("loss 1")
    assert "\x1b" not in console.file.getvalue() and "grad_norm" not in console.file.getvalue()


def test_rl_shows_proxy_kl_per_starting_token_against_caution_gold_and_alerts(tmp_path):
    config = MonitorConfig(health_plots=False)
    health, console = HealthMonitor(config), _plain_console()
    _train([health, TrainingProgress("grpo", health=health, console=console)], _grpo_log, tmp_path)
    kl = kl_per_start_token(health.timeline, config)[-1][1]  # the number the monitors judge
    result = console.file.getvalue().splitlines()[-1]
    assert result.endswith(f"proxy 2.000  KL/token {kl:.3f} (caution {config.kl_caution:g})  gold 0.500  alerts 0")


def test_the_logs_are_read_not_changed(tmp_path):
    logs = {**_grpo_log(3), "total_flos": 1.0, "epoch": 0.5}
    kept = copy.deepcopy(logs)
    health = HealthMonitor(MonitorConfig(health_plots=False))
    _train([health, TrainingProgress("grpo", health=health, console=_plain_console())], lambda s: logs, tmp_path)
    assert logs == kept


def test_eval_and_summary_logs_show_nothing():
    assert live_numbers({"eval_loss": 1.0, "epoch": 1.0}) == {}
    assert live_numbers({"train_runtime": 3.0, "train_loss": 1.0}) == {}
    assert live_numbers({"loss": 0.5, "accuracy": 0.75, "grad_norm": 2.0}) == {"loss": "0.5", "accuracy": "0.75"}


def test_on_a_terminal_the_bar_disappears_and_the_result_line_stays(tmp_path):
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    _train([TrainingProgress("reward", console=console)], lambda s: {"loss": 0.5, "accuracy": 0.75}, tmp_path)
    assert "reward: 20 steps in " in console.file.getvalue() and "{'loss'" not in console.file.getvalue()


def test_only_the_main_process_shows_anything(tmp_path):
    console = _plain_console()
    progress = TrainingProgress("sft", console=console)
    args, state, control = _args(tmp_path), TrainerState(is_world_process_zero=False), TrainerControl()
    state.max_steps = 4
    progress.on_train_begin(args, state, control)
    state.global_step = 4
    progress.on_log(args, state, control, logs={"loss": 1.0})
    progress.on_train_end(args, state, control)
    assert console.file.getvalue() == ""


def _tiny_trainer(tmp_path, **kw):
    config = LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    return Trainer(model=LlamaForCausalLM(config), args=_args(tmp_path, **kw))


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_show_progress_replaces_transformers_bar_and_printer(tmp_path, monkeypatch, disable_tqdm):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    trainer = _tiny_trainer(tmp_path, disable_tqdm=disable_tqdm)
    health = HealthMonitor()
    trainer.add_callback(health)
    show_progress(trainer, "ppo")
    show_progress(trainer, "ppo")  # twice: still one
    callbacks = trainer.callback_handler.callbacks
    assert not [c for c in callbacks if isinstance(c, ProgressCallback | PrinterCallback)]
    ours = [c for c in callbacks if isinstance(c, TrainingProgress)]
    assert len(ours) == 1 and ours[0].health is health and callbacks[-1] is ours[0]


def test_verbose_keeps_transformers_bar(tmp_path, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "1")
    trainer = _tiny_trainer(tmp_path, disable_tqdm=False)
    show_progress(trainer, "sft")
    callbacks = trainer.callback_handler.callbacks
    assert any(isinstance(c, ProgressCallback) for c in callbacks)
    assert not any(isinstance(c, TrainingProgress) for c in callbacks)
