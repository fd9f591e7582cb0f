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
* ``reward_kl_race``: the reward rises (Theil-Sen slope over the last ``trend_window`` logs) while the KL per
  starting token grows faster than ``reward_kl_slope`` per step on average since the start (stop by default).
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
last logged step where no stop signal's condition held, confirmed or not, and the KL was below ``kl_caution``:
near the limit the held-out gold is often already falling) and names the newest ``checkpoint-M`` with
M <= that step (it asks for one at every healthy logged step, ``healthy_checkpoint_steps``, and keeps the newest
``healthy_average``); the RL run returns the average of their trainable weights, and when none exists the starting
policy (``returned_step`` 0, :func:`rlhfkit.rl.healthy.return_healthy`).

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
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rlhfkit.core.io import write_text
from rlhfkit.models.scoring import ENSEMBLE_STD_KEY
from rlhfkit.monitors.config import SIGNALS, MonitorConfig
from rlhfkit.monitors.frozen import FrozenModelCheck, frozen_models
from rlhfkit.monitors.plots import health_table, plot_health
from rlhfkit.monitors.signals import conditions as signal_conditions

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

    DPO (TRL 1.16 + :class:`rlhfkit.rl.dpo.DPOTrainer`): ``objective/kl`` (nats/seq, sampled from the policy at each
    log), ``rewards/margins`` (the implicit reward's chosen - rejected margin, as the reward), ``entropy`` (per
    token, on the pairs), and the samples' ``completions/mean_length`` / ``completions/clipped_ratio``.
    Eval logs (``eval_*``) and missing/None values are ignored.
    """

    def get(key):
        value = logs.get(key)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    length = get("completions/mean_length")
    if get("rewards/margins") is not None:  # TRL DPO, with rlhfkit's KL on policy samples (trainers.DPOTrainer)
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
    out["disagreement"] = get(
        ENSEMBLE_STD_KEY
    )  # a reward ensemble's member spread (rlhfkit.models.scoring), both trainers
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


class HealthMonitor(TrainerCallback):
    """KL-health and reward-hacking signals from the trainer's logs, with warn / stop actions (see module doc).

    Attributes (readable after or during training):
        timeline: one dict per logged RL step (``step``, ``stage``, the :data:`SERIES` present, extra keys,
            ``active`` signal names, new ``alerts``), also written to ``output_dir/health.jsonl`` on rank 0.
        alerts: every :class:`Alert` fired, in order.
        stop_step: global step at which a ``stop`` alert ended training (its checkpoint is ``checkpoint-{stop_step}``).
        last_healthy_step: last logged step where no judged signal's condition held (None before the first such
            log); the judged signals are those whose action is ``stop`` (all that are not ``off`` if none is), and
            ``kl_caution`` unless it is ``off``: a stop returns a checkpoint from below the KL's warning level.
        returned_step: after a stop, the step of the newest checkpoint at or before ``last_healthy_step``, or 0
            when there is none: the starting policy (the stop came before any healthy checkpoint, so nothing RL made
            is known to be healthy).
        averaged_steps: after a stop, the checkpoints whose trainable weights the RL run averages into the model it
            returns (:meth:`average_steps`: ``returned_step`` and up to ``healthy_average - 1`` older healthy ones).
        returned_reason: one sentence saying which steps are returned and why.
        healthy_checkpoints: the steps of the checkpoints the monitor asked for at healthy logged steps.
    """

    def __init__(self, config: MonitorConfig | None = None, checkpoint_name: str = "checkpoint-{}"):
        """``checkpoint_name``: where the model of global step N lies in ``output_dir`` (``"checkpoint-{}"`` for the
        trainers; best-of-N keeps ``"round-{}/model"``), for :meth:`fallback_step` and the reasons it gives."""
        self.config = config or MonitorConfig()
        self.checkpoint_name = checkpoint_name
        actions = {signal: getattr(self.config, f"{signal}_action") for signal in SIGNALS}
        self.judged = [s for s, a in actions.items() if a == "stop"] or [s for s, a in actions.items() if a != "off"]
        if actions["kl_caution"] != "off" and "kl_caution" not in self.judged:
            self.judged.append("kl_caution")  # the KL's warning level: past it, a step is not counted healthy
        self._reset()

    def _reset(self) -> None:
        self.timeline: list[dict[str, Any]] = []
        self.alerts: list[Alert] = []
        self.stop_step: int | None = None
        self.returned_step: int | None = None
        self.returned_reason: str | None = None
        self.averaged_steps: list[int] = []
        self._stop_alert: Alert | None = None
        self._healthy_steps: list[int] = []
        self.healthy_checkpoints: list[int] = []
        self._streak: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._noted_no_kl = False
        self._path: Path | None = None

    @property
    def last_healthy_step(self) -> int | None:
        return self._healthy_steps[-1] if self._healthy_steps else None

    # ------------------------------------------------------------------ callback events
    def on_train_begin(self, args, state, control, **kwargs):
        self._reset()
        self._path = Path(args.output_dir or ".") / self.config.health_file
        keep = self.config.healthy_average + 1  # the healthy checkpoints a stop averages + the stop's own
        limit = getattr(args, "save_total_limit", None)
        if limit and limit < keep and self.config.healthy_average > 1 and state.is_world_process_zero:
            logger.warning(
                "monitor: save_total_limit=%d keeps the newest healthy checkpoint and the stop's, not the %d newest "
                "healthy ones healthy_average=%d averages after a stop; set save_total_limit >= %d or leave it unset "
                "(the monitor then prunes its own checkpoints)",
                limit,
                self.config.healthy_average,
                self.config.healthy_average,
                keep,
            )
        if state.global_step > 0 and self._path.is_file():  # resuming: keep the baselines and streaks
            with open(self._path) as f:
                for line in f:
                    record = json.loads(line)
                    if record["step"] <= state.global_step:
                        self._replay(record)
            # the healthy checkpoints written before the interruption still count (a stop averages them)
            saved = [s for s in self._healthy_steps if (self._path.parent / self.checkpoint_name.format(s)).is_dir()]
            self.healthy_checkpoints = saved[-self.config.healthy_average :]

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = read_metrics(logs or {}, getattr(state, "train_batch_size", None))
        if metrics is None:
            return
        main = state.is_world_process_zero
        step = state.global_step
        record = {"step": step, **metrics}
        record.update({k: logs[k] for k in self.config.health_extra_keys if isinstance(logs.get(k), int | float)})
        new = self._observe(record)
        if "kl" not in record and not self._noted_no_kl and main:
            self._noted_no_kl = True
            logger.warning(
                "monitor: no KL in the %s logs (GRPO logs none when beta=0); the KL signals are off for this run",
                record["stage"],
            )
        if self.last_healthy_step == step and self.stop_step is None:
            self._checkpoint_healthy(args, state, control)
        for alert in new:
            if alert.action == "stop" and self.stop_step is None:
                control.should_training_stop = True
                control.should_save = True
                self.stop_step = step
                fallback = self.fallback_step(args.output_dir)
                self.returned_step = 0 if fallback is None else fallback
                self.averaged_steps = self.average_steps(args.output_dir)
                self._stop_alert = alert
                self.returned_reason = self._returned_reason(alert)
                record["stop"] = True
                alert.message += f" Stopping: {self.returned_reason}"
            elif alert.action == "warn":
                alert.message += self._fallback_note(args.output_dir)
            if main:
                logger.warning("monitor: %s", alert.message)
        record["alerts"] = [asdict(a) for a in new]
        if main:
            self._write()

    def on_save(self, args, state, control, **kwargs):
        """Without ``save_total_limit``, delete the healthy checkpoints the monitor asked for once ``healthy_average``
        newer ones exist (the trainer's own ``save_steps`` checkpoints are left alone)."""
        if args.save_total_limit or not state.is_world_process_zero or not args.output_dir:
            return
        every, keep = getattr(state, "save_steps", 0) or 0, self.config.healthy_average
        for old in self.healthy_checkpoints[:-keep]:
            if not (every and old % every == 0):
                shutil.rmtree(Path(args.output_dir) / f"checkpoint-{old}", ignore_errors=True)
        self.healthy_checkpoints = self.healthy_checkpoints[-keep:]

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

    # ------------------------------------------------------------------ healthy checkpoints
    def _checkpoint_healthy(self, args, state, control) -> None:
        """Ask the trainer to save this healthy step (it saves right after logging) and protect the checkpoint from
        ``save_total_limit``'s rotation, which never deletes ``state.best_model_checkpoint``."""
        every, last = self.config.healthy_checkpoint_steps, (self.healthy_checkpoints or [None])[-1]
        if not every or (last is not None and state.global_step - last < every):
            return
        control.should_save = True
        self.healthy_checkpoints.append(state.global_step)
        if args.output_dir:
            state.best_model_checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")

    def fallback_step(self, output_dir: str | os.PathLike | None) -> int | None:
        """The newest saved model of a step M <= :attr:`last_healthy_step` in ``output_dir`` (``checkpoint-M``, see
        ``checkpoint_name``; None: there is none)."""
        if self.last_healthy_step is None or not output_dir or not os.path.isdir(output_dir):
            return None
        numbered = [int(m.group(1)) for m in map(re.compile(r"[a-z]+-(\d+)$").match, os.listdir(output_dir)) if m]
        saved = [s for s in numbered if os.path.exists(os.path.join(output_dir, self.checkpoint_name.format(s)))]
        return max((s for s in saved if 0 < s <= self.last_healthy_step), default=None)

    def average_steps(self, output_dir: str | os.PathLike | None) -> list[int]:
        """The checkpoints a stop averages, oldest first: the :meth:`fallback_step` one and up to
        ``healthy_average - 1`` older healthy checkpoints the monitor saved that still exist ([]: there is none)."""
        newest = self.fallback_step(output_dir)
        if newest is None:
            return []
        older = [
            s
            for s in self.healthy_checkpoints
            if s < newest and os.path.exists(os.path.join(output_dir, self.checkpoint_name.format(s)))
        ]
        keep = self.config.healthy_average - 1
        return [*(older[-keep:] if keep else []), newest]

    def settle_average(self, output_dir: str | os.PathLike, newest_only: bool = False) -> list[int]:
        """The :attr:`averaged_steps` whose checkpoints still exist after the stop's own save (``save_total_limit``'s
        rotation may have deleted older ones since the stop chose them), only the newest with ``newest_only``;
        updates :attr:`returned_reason` to match."""
        left = [
            s for s in self.averaged_steps if os.path.isdir(os.path.join(output_dir, self.checkpoint_name.format(s)))
        ]
        left = left[-1:] if newest_only else left
        if left != self.averaged_steps and self._stop_alert is not None:
            self.averaged_steps = left
            self.returned_reason = self._returned_reason(self._stop_alert)
        return left

    def _returned_reason(self, alert: Alert) -> str:
        stop = f"{alert.signal} stopped training at step {alert.step}"
        if not self.returned_step:
            healthy = (
                "no logged step was healthy"
                if self.last_healthy_step is None
                else (f"no checkpoint exists at or before the last healthy step {self.last_healthy_step}")
            )
            return f"{stop}; {healthy}, so the RL stage returns the starting policy (step 0), the model RL began from."
        returned, stopped = (self.checkpoint_name.format(s) for s in (self.returned_step, alert.step))
        what = f"{returned}, the newest checkpoint at or before the last healthy step {self.last_healthy_step}"
        if len(self.averaged_steps) > 1:
            names = ", ".join(self.checkpoint_name.format(s) for s in self.averaged_steps)
            what = (
                f"the average of the weights of {names}: the {len(self.averaged_steps)} newest healthy "
                f"checkpoints, up to {returned} (the newest at or before the last healthy step "
                f"{self.last_healthy_step})"
            )
        return f"{stop}; the RL stage returns {what} ({stopped} is kept too)."

    def _fallback_note(self, output_dir) -> str:
        fallback = self.fallback_step(output_dir)
        if fallback is None:
            return ""
        return (
            f" Fall back to {self.checkpoint_name.format(fallback)} (the last healthy logged step is "
            f"{self.last_healthy_step})."
        )

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
        conditions = signal_conditions(self.timeline, self.config)
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
        if not any(self._streak[s] for s in self.judged):
            self._healthy_steps.append(record["step"])
        self.alerts.extend(new)
        return new

    def _write(self) -> None:
        if self._path is not None:
            write_text(self._path, "".join(json.dumps(r, default=str) + "\n" for r in self.timeline))

    def summary(self) -> dict[str, Any]:
        """Numbers for a run manifest: alerts, stop step, last healthy step, the step returned and why, health file."""
        return {
            "alerts": len(self.alerts),
            "alert_messages": [a.message for a in self.alerts],
            "stop_step": self.stop_step,
            "last_healthy_step": self.last_healthy_step,
            "returned_step": self.returned_step,
            "returned_reason": self.returned_reason,
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
