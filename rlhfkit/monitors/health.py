"""KL-health and reward-hacking monitors for the RL stages (rlhfkit's PPO, TRL's GRPO): plain TrainerCallbacks.

    callbacks = build_monitors(MonitorConfig(), trainer=trainer)   # after the trainer exists (GRPO builds its ref)
    for cb in callbacks:
        trainer.add_callback(cb)

:class:`HealthMonitor` reads the metrics each trainer already logs (TRL's names, see :func:`read_metrics`), puts
them on one scale, and raises alerts; :class:`FrozenModelCheck` proves the reference (and reward) model did not
change during training. Everything is saved with the run: ``health.jsonl`` (one record per logged step),
``health_reward_kl.png`` (the Goodhart curve) and ``health_length_entropy.png``.

KL scale
--------
All KL numbers here are **nats per sequence** (KL summed over a response's tokens, mean over responses), the
scale of PPO's ``objective/kl`` and of the levels RLHF guides quote. GRPO logs ``kl`` as a token-weighted mean
per token; ``kl * completions/mean_length`` is then exactly the per-sequence mean (sum / tokens x tokens /
sequences) for one logged batch, and approximately so when ``logging_steps`` averages several.

Signals (each with an action ``warn`` | ``stop`` | ``off``; a signal fires after ``alert_patience``
consecutive logged steps meet its condition, and fires again only after it has cleared)
-------------------------------------------------------------------------------------------------------------
* ``kl_caution`` / ``kl_limit``: KL above ~8 / ~15 nats per sequence (caution / likely reward hacking).
* ``negative_kl``: mean KL below ``-negative_kl_tolerance``: true KL is never negative, so the rollout's and the
  reference's log-probs are computed differently (temperature, tokenizer, padding, dtype, wrong reference).
* ``length_drift``: mean response length beyond ``length_drift_ratio`` x (or below 1 / ratio x) its baseline, the
  mean of the first ``baseline_steps`` logged steps (length gaming).
* ``entropy_collapse``: per-token entropy below ``entropy_collapse_fraction`` x its baseline (mode collapse).
* ``reward_variance``: GRPO's ``frac_reward_zero_std`` above ``reward_zero_std_fraction``, or the reward std below
  ``reward_std_fraction`` x its baseline (no learning signal left, or collapse onto a reward-model optimum).
* ``reward_kl_race``: over the last ``trend_window`` logged steps the reward rises while the KL grows faster than
  ``reward_kl_slope`` nats per sequence per step (Theil-Sen slopes against the global step).
* ``clipping``: clip fraction above ``clip_fraction_max`` or approx-KL above ``approx_kl_max`` (updates too big).
* ``truncation``: the share of responses with no EOS rose more than ``truncation_rise`` above its baseline.

Stop action: which step is saved
--------------------------------
A ``stop`` alert raised by the log of global step N sets ``control.should_training_stop`` and
``control.should_save``. Both ``transformers.Trainer`` (``_maybe_log_save_evaluate``: log, then save) and
rlhfkit's PPOTrainer (log, then save) then write ``checkpoint-N`` -- the weights after N optimiser updates -- and
end training before update N + 1, whatever ``save_strategy`` says. The metrics of step N were measured on
completions sampled *before* update N, so checkpoint-N is the policy one update past the first unhealthy
measurement: the last state training reached, not a rollback. The monitor records ``last_healthy_step`` (the
last logged step where no signal's condition held, confirmed or not) and names the newest ``checkpoint-M`` with
M <= that step if one exists; set ``save_steps`` equal to ``logging_steps`` when you need a checkpoint of every
healthy step to fall back to.

Distributed runs
----------------
Alert decisions are computed on every process from the logged metrics, which both trainers all-reduce before
logging, so every rank sets the same stop / save flags (a stop on rank 0 alone would hang DDP). Everything with a
side effect -- log lines, ``health.jsonl``, plots -- happens on the world main process only. The parameter hashes
of :class:`FrozenModelCheck` are taken on the main process only (with ZeRO-3 / FSDP that is its own shard).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rlhfkit.io import write_text
from rlhfkit.monitors.config import SIGNALS, MonitorConfig
from rlhfkit.monitors.frozen import FrozenModelCheck, frozen_models
from rlhfkit.monitors.plots import health_table, plot_health

logger = logging.getLogger(__name__)


# ============================================================================================== config


# ============================================================================================== metrics


def read_metrics(logs: Mapping[str, Any], batch_size: int | None = None) -> dict[str, float] | None:
    """One log dict -> the monitor's series on one scale, or None when it is not an RL training log.

    PPO (rlhfkit, TRL 1.12 names): ``objective/kl`` (nats/seq), ``objective/scores`` (reward-model score, the proxy
    reward; ``objective/rlhf_reward`` also holds the KL penalty), ``completions/mean_length``, ``policy/entropy_avg``
    (per token; else ``objective/entropy`` / length), ``policy/clipfrac_avg``, ``policy/approxkl_avg``,
    ``val/num_eos_tokens`` (a total: truncation = 1 - it / ``batch_size``, the trainer's ``state.train_batch_size``).

    GRPO (TRL 1.16): ``kl`` (per token) x ``completions/mean_length``, ``reward``, ``reward_std``,
    ``frac_reward_zero_std``, ``entropy`` (per token), ``clip_ratio/region_mean`` (``cispo_clip_ratio`` for CISPO),
    ``completions/clipped_ratio`` (share without EOS). RLOO (TRL 1.16) logs the same names.

    DPO (TRL 1.16 + :class:`rlhfkit.dpo.DPOTrainer`): ``objective/kl`` (nats/seq, sampled from the policy at each
    log), ``rewards/margins`` (the implicit reward's chosen - rejected margin, as the reward), ``entropy`` (per
    token, on the pairs), and the samples' ``completions/mean_length`` / ``completions/clipped_ratio``.
    Eval logs (``eval_*``) and missing/None values are ignored.
    """

    def get(key):
        value = logs.get(key)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    length = get("completions/mean_length")
    if get("rewards/margins") is not None:  # TRL DPO, with rlhfkit's KL on policy samples (rlhfkit.dpo.DPOTrainer)
        out = {
            "stage": "dpo",
            "kl": get("objective/kl"),
            "reward": get("rewards/margins"),
            "length": length,
            "entropy": get("entropy"),
            "truncation": get("completions/clipped_ratio"),
        }
    elif get("objective/kl") is not None or get("objective/scores") is not None:  # rlhfkit PPO
        entropy = get("policy/entropy_avg")
        if entropy is None and get("objective/entropy") is not None and length:
            entropy = get("objective/entropy") / length
        eos = get("val/num_eos_tokens")
        truncation = min(max(1.0 - eos / batch_size, 0.0), 1.0) if eos is not None and batch_size else None
        out = {
            "stage": "ppo",
            "kl": get("objective/kl"),
            "reward": get("objective/scores"),
            "length": length,
            "entropy": entropy,
            "clipfrac": get("policy/clipfrac_avg"),
            "approxkl": get("policy/approxkl_avg"),
            "truncation": truncation,
        }
    elif get("reward") is not None:  # TRL GRPO (and RLOO, which logs the same names)
        kl = get("kl")
        clip = get("clip_ratio/region_mean")
        out = {
            "stage": "grpo",
            "kl": kl * length if kl is not None and length is not None else None,
            "reward": get("reward"),
            "length": length,
            "entropy": get("entropy"),
            "reward_std": get("reward_std"),
            "frac_reward_zero_std": get("frac_reward_zero_std"),
            "clipfrac": clip if clip is not None else get("cispo_clip_ratio"),
            "truncation": get("completions/clipped_ratio"),
        }
    else:
        return None
    return {k: v for k, v in out.items() if v is not None}


# ============================================================================================== signals


@dataclass
class Alert:
    """One firing of a signal: ``step`` is the global step whose log raised it."""

    step: int
    signal: str
    action: str
    value: float
    threshold: float
    message: str


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Theil-Sen slope (median of the pairwise slopes): one noisy batch in the window does not make a trend."""
    slopes = sorted(
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    )
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


class HealthMonitor(TrainerCallback):
    """KL-health and reward-hacking signals from the trainer's logs, with warn / stop actions (see module doc).

    Attributes (readable after or during training):
        timeline: one dict per logged RL step (``step``, ``stage``, the :data:`SERIES` present, extra keys,
            ``active`` signal names, new ``alerts``), also written to ``output_dir/health.jsonl`` on rank 0.
        alerts: every :class:`Alert` fired, in order.
        stop_step: global step at which a ``stop`` alert ended training (its checkpoint is ``checkpoint-{stop_step}``).
        last_healthy_step: last logged step where no signal's condition held (None before the first such log).
    """

    def __init__(self, config: MonitorConfig | None = None):
        self.config = config or MonitorConfig()
        self._reset()

    def _reset(self) -> None:
        self.timeline: list[dict[str, Any]] = []
        self.alerts: list[Alert] = []
        self.stop_step: int | None = None
        self.last_healthy_step: int | None = None
        self._streak: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._noted_no_kl = False
        self._path: Path | None = None

    # ------------------------------------------------------------------ callback events
    def on_train_begin(self, args, state, control, **kwargs):
        self._reset()
        self._path = Path(args.output_dir or ".") / self.config.health_file
        if state.global_step > 0 and self._path.is_file():  # resuming: keep the baselines and streaks
            with open(self._path) as f:
                for line in f:
                    record = json.loads(line)
                    if record["step"] <= state.global_step:
                        self._replay(record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = read_metrics(logs or {}, getattr(state, "train_batch_size", None))
        if metrics is None:
            return
        main = state.is_world_process_zero
        record = {"step": state.global_step, **metrics}
        record.update({k: logs[k] for k in self.config.health_extra_keys if isinstance(logs.get(k), int | float)})
        new = self._observe(record)
        if "kl" not in record and not self._noted_no_kl and main:
            self._noted_no_kl = True
            logger.warning(
                "monitor: no KL in the %s logs (GRPO logs none when beta=0); the KL signals are off for this run",
                record["stage"],
            )
        for alert in new:
            if alert.action == "stop" and self.stop_step is None:
                control.should_training_stop = True
                control.should_save = True
                self.stop_step = state.global_step
                record["stop"] = True
                alert.message += self._stop_note(args, state.global_step)
                record["alerts"] = [asdict(a) for a in new]
            if main:
                logger.warning("monitor: %s", alert.message)
        if main:
            self._write()

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.timeline:
            return
        self._write()
        from rich.console import Console

        text = io.StringIO()
        Console(file=text, width=119, no_color=True).print(health_table(self.timeline, self.config))
        logger.info("monitor: RL health summary\n%s", text.getvalue())
        if self.config.health_plots:
            try:
                plot_health(self.timeline, args.output_dir)
            except ImportError as e:
                logger.warning("monitor: no health plots: %s", e)

    # ------------------------------------------------------------------ logic
    def _replay(self, record: dict[str, Any]) -> None:
        """Re-add a saved record (resume): recompute streaks, keep its stored alerts."""
        stored, stop = record.pop("alerts", []), record.pop("stop", None)
        record.pop("active", None)
        self._observe(record)
        record["alerts"] = stored
        if stop:
            record["stop"] = True
        self.alerts[:] = [a for a in self.alerts if a.step < record["step"]] + [Alert(**a) for a in stored]

    def _observe(self, record: dict[str, Any]) -> list[Alert]:
        """Append ``record`` to the timeline, update every signal's streak, return the alerts that fire now."""
        self.timeline.append(record)
        conditions = self._conditions()
        new, active = [], []
        for signal in SIGNALS:
            action = getattr(self.config, f"{signal}_action")
            hit = conditions.get(signal) if action != "off" else None
            self._streak[signal] = self._streak[signal] + 1 if hit else 0
            if self._streak[signal] >= self.config.alert_patience:
                active.append(signal)
            if hit and self._streak[signal] == self.config.alert_patience:
                value, threshold, detail = hit
                _, what, fix = SIGNALS[signal]
                text = what.format(detail=detail, threshold=threshold)
                message = f"step {record['step']}: {signal} ({action}): {text}. {fix}"
                new.append(Alert(record["step"], signal, action, value, threshold, message))
        record["active"] = active
        record["alerts"] = [asdict(a) for a in new]
        if not any(self._streak.values()):
            self.last_healthy_step = record["step"]
        self.alerts.extend(new)
        return new

    def _values(self, name: str) -> list[float]:
        return [r[name] for r in self.timeline if r.get(name) is not None]

    def _baseline(self, name: str) -> float | None:
        """Mean of the first ``baseline_steps`` values, once the current value is past them."""
        values = self._values(name)
        n = self.config.baseline_steps
        return _mean(values[:n]) if len(values) > n and self.timeline[-1].get(name) is not None else None

    def _conditions(self) -> dict[str, tuple[float, float, str]]:
        """signal -> (value, threshold, detail text) for each condition that holds at the latest record."""
        c, now, out = self.config, self.timeline[-1], {}
        kl = now.get("kl")
        if kl is not None:
            if kl > c.kl_caution:
                out["kl_caution"] = (kl, c.kl_caution, f"{kl:.2f} nats/sequence")
            if kl > c.kl_limit:
                out["kl_limit"] = (kl, c.kl_limit, f"{kl:.2f} nats/sequence")
            if kl < -c.negative_kl_tolerance:
                out["negative_kl"] = (kl, c.negative_kl_tolerance, f"{kl:.3f} nats/sequence")
        base = self._baseline("length")
        if base:
            ratio = now["length"] / base
            if ratio > c.length_drift_ratio or ratio < 1 / c.length_drift_ratio:
                detail = f"{ratio:.2f}x its start ({base:.1f} -> {now['length']:.1f} tokens)"
                out["length_drift"] = (ratio, c.length_drift_ratio, detail)
        base = self._baseline("entropy")
        if base and base > 0 and now["entropy"] / base < c.entropy_collapse_fraction:
            ratio = now["entropy"] / base
            detail = f"{ratio:.2f}x its start ({base:.3f} -> {now['entropy']:.3f} nats/token)"
            out["entropy_collapse"] = (ratio, c.entropy_collapse_fraction, detail)
        zero = now.get("frac_reward_zero_std")
        base = self._baseline("reward_std")
        if zero is not None and zero > c.reward_zero_std_fraction:
            detail = f"{zero:.0%} of groups have identical rewards"
            out["reward_variance"] = (zero, c.reward_zero_std_fraction, detail)
        elif base and base > 0 and now["reward_std"] / base < c.reward_std_fraction:
            ratio = now["reward_std"] / base
            detail = f"reward std is {ratio:.2f}x its start ({base:.3g} -> {now['reward_std']:.3g})"
            out["reward_variance"] = (ratio, c.reward_std_fraction, detail)
        points = [r for r in self.timeline if r.get("kl") is not None and r.get("reward") is not None]
        points = points[-c.trend_window :]
        if len(points) == c.trend_window and points[-1] is now:
            steps = [float(r["step"]) for r in points]
            kl_slope = _slope(steps, [r["kl"] for r in points])
            reward_slope = _slope(steps, [r["reward"] for r in points])
            if reward_slope > 0 and kl_slope > c.reward_kl_slope:
                detail = f"{kl_slope:.2f} nats/sequence per step over the last {c.trend_window} logs"
                out["reward_kl_race"] = (kl_slope, c.reward_kl_slope, detail)
        clip, approx = now.get("clipfrac"), now.get("approxkl")
        if clip is not None and clip > c.clip_fraction_max:
            out["clipping"] = (clip, c.clip_fraction_max, f"clip fraction is {clip:.2f}")
        elif approx is not None and approx > c.approx_kl_max:
            out["clipping"] = (approx, c.approx_kl_max, f"approx-KL between PPO epochs is {approx:.3f} per token")
        base = self._baseline("truncation")
        if base is not None and now["truncation"] - base > c.truncation_rise:
            detail = f"from {base:.0%} to {now['truncation']:.0%}"
            out["truncation"] = (now["truncation"] - base, c.truncation_rise, detail)
        return out

    def _stop_note(self, args, step: int) -> str:
        note = f" Stopping: checkpoint-{step} is saved (weights after {step} updates)"
        if self.last_healthy_step is None:
            return note + "; no logged step was healthy."
        fallback = None
        if args.output_dir and os.path.isdir(args.output_dir):
            saved = [int(m.group(1)) for m in map(re.compile(r"checkpoint-(\d+)$").match, os.listdir(args.output_dir))
                     if m]  # fmt: skip
            fallback = max((s for s in saved if s <= self.last_healthy_step), default=None)
        note += f"; the last healthy logged step is {self.last_healthy_step}"
        return note + (f" (checkpoint-{fallback} is the newest checkpoint at or before it)." if fallback else ".")

    def _write(self) -> None:
        if self._path is not None:
            write_text(self._path, "".join(json.dumps(r, default=str) + "\n" for r in self.timeline))

    def summary(self) -> dict[str, Any]:
        """Numbers for a run manifest: alert count and messages, stop step, last healthy step, health file."""
        return {
            "alerts": len(self.alerts),
            "alert_messages": [a.message for a in self.alerts],
            "stop_step": self.stop_step,
            "last_healthy_step": self.last_healthy_step,
            "health_file": str(self._path) if self._path else None,
        }


# ============================================================================================== frozen check


# ============================================================================================== wiring


def build_monitors(
    config: MonitorConfig | None = None,
    *,
    trainer=None,
    frozen: Mapping[str, Any] | None = None,
    frozen_exclude: Mapping[str, Sequence[str]] | None = None,
) -> list[TrainerCallback]:
    """The RL-stage callbacks: a :class:`HealthMonitor` and, when there are frozen models, a
    :class:`FrozenModelCheck`.

    Args:
        config: thresholds and actions (default ``MonitorConfig()``).
        trainer: a built PPOTrainer / GRPOTrainer: its frozen models are found by :func:`frozen_models`. Add the
            callbacks with ``trainer.add_callback`` (GRPO builds its reference inside its constructor).
        frozen: label -> module to check instead (None entries and plain functions are skipped).
        frozen_exclude: label -> regexes of parameter names not to check.
    """
    from torch import nn

    config = config or MonitorConfig()
    callbacks: list[TrainerCallback] = [HealthMonitor(config)]
    models, exclude = frozen_models(trainer) if trainer is not None and frozen is None else ({}, {})
    models.update({k: m for k, m in (frozen or {}).items() if isinstance(m, nn.Module)})
    exclude.update(frozen_exclude or {})
    if models:
        callbacks.append(FrozenModelCheck(models, config.frozen_check_steps, exclude))
    return callbacks
