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

import hashlib
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.io import atomic_path, write_text

logger = logging.getLogger(__name__)

Action = Literal["warn", "stop", "off"]
ACTIONS = ("warn", "stop", "off")


# ============================================================================================== config
@dataclass
class MonitorConfig:
    """Thresholds and actions of the RL health monitors (rlhfkit's own; parsed by ``TrlParser`` from YAML).

    Every ``*_action`` field is ``warn`` (log + record), ``stop`` (save a checkpoint and end training) or ``off``.

    Args:
        baseline_steps (`int`, defaults to `3`): logged steps whose mean is the starting level of length, entropy,
            reward std and truncation rate.
        trend_window (`int`, defaults to `5`): logged steps in the reward-vs-KL slope test.
        alert_patience (`int`, defaults to `2`): consecutive logged steps a condition must hold before it fires
            (one noisy batch is not a trend).
        kl_caution (`float`, defaults to `8.0`): KL (nats per sequence) above which the policy is drifting far.
        kl_caution_action (`str`, defaults to `"warn"`).
        kl_limit (`float`, defaults to `15.0`): KL (nats per sequence) above which reward hacking is likely.
        kl_limit_action (`str`, defaults to `"stop"`).
        negative_kl_tolerance (`float`, defaults to `0.1`): mean KL below minus this (nats per sequence) is a
            generation / reference mismatch.
        negative_kl_action (`str`, defaults to `"warn"`).
        length_drift_ratio (`float`, defaults to `1.5`): mean length above ratio x (or below 1/ratio x) baseline.
        length_drift_action (`str`, defaults to `"warn"`).
        entropy_collapse_fraction (`float`, defaults to `0.5`): per-token entropy below this x baseline.
        entropy_collapse_action (`str`, defaults to `"warn"`).
        reward_zero_std_fraction (`float`, defaults to `0.5`): GRPO groups with zero reward std above this share.
        reward_std_fraction (`float`, defaults to `0.1`): reward std below this x baseline.
        reward_variance_action (`str`, defaults to `"warn"`).
        reward_kl_slope (`float`, defaults to `0.5`): KL growth (nats per sequence per step) that, with a rising
            reward, fires ``reward_kl_race``.
        reward_kl_race_action (`str`, defaults to `"warn"`).
        clip_fraction_max (`float`, defaults to `0.3`): policy clip fraction above which updates are too big.
        approx_kl_max (`float`, defaults to `0.1`): PPO's per-token approx-KL between epochs above which too big.
        clipping_action (`str`, defaults to `"warn"`).
        truncation_rise (`float`, defaults to `0.2`): rise of the no-EOS share over its baseline (0.2 = 20 points).
        truncation_action (`str`, defaults to `"warn"`).
        health_extra_keys (`list[str]`, defaults to `[]`): other logged keys to keep in the timeline and plot
            against KL (e.g. a gold reward logged as ``rewards/gold/mean``).
        frozen_check_steps (`int`, defaults to `0`): also verify the frozen models every N steps (0: begin/end).
        health_file (`str`, defaults to `"health.jsonl"`): timeline file name inside ``output_dir``.
        health_plots (`bool`, defaults to `True`): write the PNG plots at the end of training.
    """

    baseline_steps: int = field(default=3, metadata={"help": "Logged steps whose mean is a metric's starting level."})
    trend_window: int = field(default=5, metadata={"help": "Logged steps in the reward-vs-KL slope test."})
    alert_patience: int = field(
        default=2, metadata={"help": "Consecutive logged steps a condition must hold before its alert fires."}
    )
    kl_caution: float = field(default=8.0, metadata={"help": "KL (nats per sequence) that raises kl_caution."})
    kl_caution_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    kl_limit: float = field(
        default=15.0, metadata={"help": "KL (nats per sequence) above which reward hacking is likely (kl_limit)."}
    )
    kl_limit_action: Action = field(default="stop", metadata={"help": "warn | stop | off."})
    negative_kl_tolerance: float = field(
        default=0.1, metadata={"help": "Mean KL below minus this (nats per sequence) raises negative_kl."}
    )
    negative_kl_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    length_drift_ratio: float = field(
        default=1.5, metadata={"help": "Mean response length above ratio x (or below 1/ratio x) its baseline."}
    )
    length_drift_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    entropy_collapse_fraction: float = field(
        default=0.5, metadata={"help": "Per-token entropy below this fraction of its baseline."}
    )
    entropy_collapse_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    reward_zero_std_fraction: float = field(
        default=0.5, metadata={"help": "Share of GRPO groups with zero reward std (frac_reward_zero_std) above this."}
    )
    reward_std_fraction: float = field(default=0.1, metadata={"help": "Reward std below this fraction of baseline."})
    reward_variance_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    reward_kl_slope: float = field(
        default=0.5, metadata={"help": "KL growth (nats/sequence/step) that with a rising reward is a race."}
    )
    reward_kl_race_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    clip_fraction_max: float = field(default=0.3, metadata={"help": "Policy clip fraction above this is too high."})
    approx_kl_max: float = field(default=0.1, metadata={"help": "PPO approx-KL (per token) above this is too high."})
    clipping_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    truncation_rise: float = field(
        default=0.2, metadata={"help": "Rise of the no-EOS (truncated) share above its baseline (0.2 = 20 points)."}
    )
    truncation_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    health_extra_keys: list[str] = field(
        default_factory=list,
        metadata={"help": "Other logged keys kept in the timeline and plotted against KL (e.g. a gold reward)."},
    )
    frozen_check_steps: int = field(
        default=0, metadata={"help": "Also verify the frozen reference/reward models every N steps (0: begin/end)."}
    )
    health_file: str = field(default="health.jsonl", metadata={"help": "Timeline file name inside output_dir."})
    health_plots: bool = field(default=True, metadata={"help": "Write the health PNG plots at the end of training."})

    def __post_init__(self):
        problems = [
            f"{f.name}={getattr(self, f.name)!r} is not one of {ACTIONS}"
            for f in fields(self)
            if f.name.endswith("_action") and getattr(self, f.name) not in ACTIONS
        ]
        for name in ("baseline_steps", "alert_patience"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.trend_window < 2:
            problems.append(f"trend_window={self.trend_window} must be >= 2 (a slope needs two points)")
        if self.length_drift_ratio <= 1:
            problems.append(f"length_drift_ratio={self.length_drift_ratio} must be > 1")
        if self.frozen_check_steps < 0:
            problems.append(f"frozen_check_steps={self.frozen_check_steps} must be >= 0 (0: begin and end only)")
        if problems:
            raise ConfigError("MonitorConfig: " + "; ".join(problems))


# ============================================================================================== metrics
SERIES = ("kl", "reward", "length", "entropy", "reward_std", "frac_reward_zero_std", "clipfrac", "approxkl",
          "truncation")  # fmt: skip
SERIES_LABELS = {
    "kl": "KL (nats/seq)",
    "reward": "reward",
    "length": "length (tokens)",
    "entropy": "entropy (nats/token)",
    "reward_std": "reward std",
    "frac_reward_zero_std": "groups w/ zero reward std",
    "clipfrac": "clip fraction",
    "approxkl": "approx KL (per token)",
    "truncation": "no-EOS share",
}


def read_metrics(logs: Mapping[str, Any], batch_size: int | None = None) -> dict[str, float] | None:
    """One log dict -> the monitor's series on one scale, or None when it is not an RL training log.

    PPO (rlhfkit, TRL 1.12 names): ``objective/kl`` (nats/seq), ``objective/scores`` (reward-model score, the proxy
    reward; ``objective/rlhf_reward`` also holds the KL penalty), ``completions/mean_length``, ``policy/entropy_avg``
    (per token; else ``objective/entropy`` / length), ``policy/clipfrac_avg``, ``policy/approxkl_avg``,
    ``val/num_eos_tokens`` (a total: truncation = 1 - it / ``batch_size``, the trainer's ``state.train_batch_size``).

    GRPO (TRL 1.16): ``kl`` (per token) x ``completions/mean_length``, ``reward``, ``reward_std``,
    ``frac_reward_zero_std``, ``entropy`` (per token), ``clip_ratio/region_mean`` (``cispo_clip_ratio`` for CISPO),
    ``completions/clipped_ratio`` (share without EOS). Eval logs (``eval_*``) and missing/None values are ignored.
    """

    def get(key):
        value = logs.get(key)
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None

    length = get("completions/mean_length")
    if get("objective/kl") is not None or get("objective/scores") is not None:  # rlhfkit PPO
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
_KL_FIX = "raise the KL coefficient (PPO kl_coef / GRPO beta), lower the learning rate, or stop earlier"
_RM_FIX = "retrain the reward model with labeler-agreement filtering and length-debiased pairs"
# signal -> (series it reads, what it means, what to change)
SIGNALS: dict[str, tuple[str, str, str]] = {
    "kl_caution": (
        "kl",
        "KL to the reference is {detail} (caution above {threshold:g}): the policy is leaving the region where "
        "the reward model was trained and can be trusted",
        f"Watch samples; {_KL_FIX}.",
    ),
    "kl_limit": (
        "kl",
        "KL to the reference is {detail} (limit {threshold:g}): at this distance the reward model is usually "
        "being exploited (reward hacking)",
        f"Use an earlier checkpoint; {_KL_FIX}; if the gold/human score fell, {_RM_FIX}.",
    ),
    "negative_kl": (
        "kl",
        "mean KL is {detail} (tolerance -{threshold:g}): true KL is never negative, so the rollout and the reference "
        "log-probs are computed differently",
        "Check that the reference is the SFT model and is scored with the same tokenizer, padding, temperature and "
        "dtype as the rollout.",
    ),
    "length_drift": (
        "length",
        "mean response length is {detail} (threshold {threshold:g}x): the policy is gaming length, a classic "
        "reward-model bias",
        f"Check whether the reward model prefers longer answers; {_RM_FIX}; {_KL_FIX}.",
    ),
    "entropy_collapse": (
        "entropy",
        "per-token entropy is {detail} (floor {threshold:g}x): the policy is collapsing onto a few outputs "
        "(mode collapse)",
        f"{_KL_FIX[0].upper()}{_KL_FIX[1:]}; look for repeated text in samples.",
    ),
    "reward_variance": (
        "reward_std",
        "reward variance collapsed: {detail} (threshold {threshold:g}): completions no longer differ in reward, so "
        "the advantages vanish or the policy sits on a reward-model optimum",
        f"Raise the sampling temperature or num_generations, check whether the reward saturates, and {_KL_FIX}.",
    ),
    "reward_kl_race": (
        "reward",
        "reward rises while KL grows {detail} (threshold {threshold:g}): reward is being bought with distance "
        "from the reference, the Goodhart regime",
        f"{_KL_FIX[0].upper()}{_KL_FIX[1:]}; compare with a held-out or gold reward; {_RM_FIX}.",
    ),
    "clipping": (
        "clipfrac",
        "{detail} (threshold {threshold:g}): updates are larger than the trust region, the clip does most of the work",
        "Lower the learning rate, use fewer PPO epochs / GRPO num_iterations, or larger batches.",
    ),
    "truncation": (
        "truncation",
        "responses without EOS rose {detail} (rise threshold {threshold:.0%}): the policy stops ending its "
        "answers, often because longer text scores higher",
        f"Set missing_eos_penalty (PPO) or mask_truncated_completions (GRPO); {_RM_FIX}; {_KL_FIX}.",
    ),
}


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
class FrozenModelError(RlhfkitError, RuntimeError):
    """A model that must stay frozen (reference, reward) was trainable or changed during training."""


ADAPTER_PARAMS = (r"\blora_", r"\bmodules_to_save\b")  # exclude these to check a PEFT model's frozen base


def _hash_tensor(h, t) -> None:
    import torch

    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel() and t.device.type != "meta":
        h.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy())


def fingerprint(module, exclude: Sequence[str] = ()) -> dict[str, tuple[str, bool]]:
    """Parameter name -> (blake2b-128 of its exact bytes, requires_grad), for every parameter not matching an
    ``exclude`` regex. Bit-exact for any dtype; a bitsandbytes 4-bit parameter hashes its packed bytes and its
    quantisation state (absmax, ...). Costs about one second per GB on one CPU core (tensors are copied to CPU
    one at a time)."""
    skip = re.compile("|".join(exclude)) if exclude else None
    out = {}
    for name, p in module.named_parameters():
        if skip is not None and skip.search(name):
            continue
        h = hashlib.blake2b(digest_size=16)
        _hash_tensor(h, p.data)
        quant_state = getattr(p, "quant_state", None)
        if quant_state is not None and hasattr(quant_state, "as_dict"):
            for key, value in sorted(quant_state.as_dict(packed=True).items()):
                if hasattr(value, "detach"):
                    h.update(key.encode())
                    _hash_tensor(h, value)
        out[name] = (h.hexdigest(), bool(p.requires_grad))
    return out


def _names(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def verify_frozen(label: str, module, reference: Mapping[str, tuple[str, bool]], exclude: Sequence[str] = ()) -> None:
    """Raise :class:`FrozenModelError` naming every parameter of ``module`` whose bytes differ from ``reference``
    (a :func:`fingerprint`), that requires grad, or that appeared / disappeared."""
    now = fingerprint(module, exclude)
    changed = [n for n in reference if n in now and now[n][0] != reference[n][0]]
    trainable = [n for n, (_, grad) in now.items() if grad]
    missing, added = [n for n in reference if n not in now], [n for n in now if n not in reference]
    problems = []
    if changed:
        problems.append(f"{len(changed)} of {len(reference)} tensors changed ({_names(changed)})")
    if trainable:
        problems.append(f"{len(trainable)} tensors require grad ({_names(trainable)})")
    if missing or added:
        problems.append(f"parameters appeared/disappeared ({_names(missing + added)})")
    if problems:
        raise FrozenModelError(
            f"{label} model is not frozen: {'; '.join(problems)}. The KL penalty was measured against a moving "
            f"target, so this run's KL numbers are meaningless. Pass a separate copy with "
            f"{label}.requires_grad_(False), keep it out of the optimizer, and retrain."
        )


class FrozenModelCheck(TrainerCallback):
    """Proves the reference (and reward) models stay frozen: bit-identical parameters, ``requires_grad`` False.

    At train begin (every process) it raises :class:`FrozenModelError` if a parameter of these models is in the
    optimizer, then sets ``requires_grad=False`` on the rest (TRL's GRPO builds its reference with gradients on,
    though it only ever runs it under ``no_grad``). On the main process it then fingerprints the models
    (:func:`fingerprint`) and verifies them at train end and, with ``every_n_steps``, every N steps.

    Args:
        models: label -> module, e.g. ``{"reference": ref, "reward": rm}``.
        every_n_steps: also verify at each multiple of this global step (0: only at the end).
        exclude: label -> regexes of parameter names not to check (e.g. a PEFT model's trainable adapters:
            :data:`ADAPTER_PARAMS`).
    """

    def __init__(
        self, models: Mapping[str, Any], every_n_steps: int = 0, exclude: Mapping[str, Sequence[str]] | None = None
    ):
        self.models = dict(models)
        self.every_n_steps = every_n_steps
        self.exclude = {label: tuple((exclude or {}).get(label, ())) for label in self.models}
        self.fingerprints: dict[str, dict[str, tuple[str, bool]]] = {}

    def _params(self, label):
        skip = re.compile("|".join(self.exclude[label])) if self.exclude[label] else None
        return [(n, p) for n, p in self.models[label].named_parameters() if skip is None or not skip.search(n)]

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        in_optimizer = {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}
        for label in self.models:
            params = self._params(label)
            trained = [n for n, p in params if id(p) in in_optimizer]
            if trained:
                raise FrozenModelError(
                    f"{label} model has {len(trained)} tensors in the optimizer ({_names(trained)}): it would be "
                    f"trained and the KL constraint would be meaningless. Is {label} the policy object itself or a "
                    f"view of its weights? Pass a separate copy with {label}.requires_grad_(False)."
                )
            thawed = [n for n, p in params if p.requires_grad]
            for _, p in params:
                p.requires_grad_(False)
            if thawed and state.is_world_process_zero:
                logger.info(
                    "monitor: froze %d tensors of the %s model (none was in the optimizer)", len(thawed), label
                )
        if state.is_world_process_zero:
            self.fingerprints = {label: fingerprint(m, self.exclude[label]) for label, m in self.models.items()}

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.verify()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.verify()
            logger.info("monitor: %s unchanged by training (bit-exact)", " and ".join(self.models))

    def verify(self) -> None:
        """Raise :class:`FrozenModelError` if any model changed since train begin."""
        for label, module in self.models.items():
            if label in self.fingerprints:
                verify_frozen(label, module, self.fingerprints[label], self.exclude[label])


# ============================================================================================== wiring
def frozen_models(trainer) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The models a trainer must not change, and parameters to skip in them, for rlhfkit PPO and TRL GRPO.

    * a separate reference (``trainer.ref_model``), else the PEFT policy's base (the reference is the policy with
      its adapters disabled; every parameter trainable now is skipped -- with a shared base that is the policy and
      value adapters, so the reward adapter is checked too);
    * reward models: ``trainer.reward_model`` (PPO) and every ``nn.Module`` in ``trainer.reward_funcs`` (GRPO),
      or a reward function's ``.model`` (e.g. rlhfkit's ``RewardModelScorer``).
    """
    from torch import nn

    models, exclude = {}, {}
    ref = getattr(trainer, "ref_model", None)
    if isinstance(ref, nn.Module):
        models["reference"] = ref
    else:
        policy = getattr(trainer, "policy", None)  # rlhfkit PPO: the PEFT model (also with a shared base)
        policy = trainer.model if policy is None else policy
        if hasattr(policy, "peft_config"):
            models["reference"] = policy
            exclude["reference"] = tuple(f"^{re.escape(n)}$" for n, p in policy.named_parameters() if p.requires_grad)
    rewards = [getattr(trainer, "reward_model", None), *(getattr(trainer, "reward_funcs", None) or [])]
    rewards = [r if isinstance(r, nn.Module) else getattr(r, "model", None) for r in rewards]
    seen = {id(m) for m in models.values()}
    rewards = [r for r in rewards if isinstance(r, nn.Module) and id(r) not in seen]
    for i, r in enumerate(rewards):
        models["reward" if len(rewards) == 1 else f"reward_{i}"] = r
    return models, exclude


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


# ============================================================================================== reports
def load_timeline(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``health.jsonl`` file (or the run folder holding it)."""
    path = Path(path)
    path = path / "health.jsonl" if path.is_dir() else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _thresholds(config: MonitorConfig) -> dict[str, str]:
    c = config
    return {
        "kl_caution": f"> {c.kl_caution:g}",
        "kl_limit": f"> {c.kl_limit:g}",
        "negative_kl": f"< -{c.negative_kl_tolerance:g}",
        "length_drift": f"x{c.length_drift_ratio:g} start",
        "entropy_collapse": f"< {c.entropy_collapse_fraction:g}x start",
        "reward_variance": f"zero-std > {c.reward_zero_std_fraction:g}",
        "reward_kl_race": f"dKL/step > {c.reward_kl_slope:g}",
        "clipping": f"> {c.clip_fraction_max:g}",
        "truncation": f"+{c.truncation_rise:g} over start",
    }


def health_table(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig | None = None):
    """A rich ``Table``: one row per signal with its metric's first and last value, threshold and status."""
    from rich.table import Table

    thresholds = _thresholds(config or MonitorConfig())
    fired: dict[str, list[Mapping[str, Any]]] = {}
    for record in timeline:
        for alert in record.get("alerts", []):
            fired.setdefault(alert["signal"], []).append(alert)
    steps = [r["step"] for r in timeline]
    table = Table(title=f"RL health, steps {min(steps, default=0)}-{max(steps, default=0)}")
    for column in ("signal", "metric", "first", "last", "threshold", "status"):
        table.add_column(column, justify="right" if column in ("first", "last") else "left")
    for signal, (series, _, _) in SIGNALS.items():
        if signal == "reward_variance" and any(r.get("frac_reward_zero_std") is not None for r in timeline):
            series = "frac_reward_zero_std"
        values = [r[series] for r in timeline if r.get(series) is not None]
        if not values:
            table.add_row(signal, SERIES_LABELS[series], "-", "-", thresholds[signal], "[dim]not logged[/dim]")
            continue
        alerts = fired.get(signal, [])
        status = "[green]ok[/green]"
        if alerts:
            colour = "red" if alerts[0]["action"] == "stop" else "yellow"
            status = f"[{colour}]{alerts[0]['action']} at step {alerts[0]['step']}[/{colour}]"
            status += f" (x{len(alerts)})" if len(alerts) > 1 else ""
        row = (SERIES_LABELS[series], f"{values[0]:.4g}", f"{values[-1]:.4g}", thresholds[signal], status)
        table.add_row(signal, *row)
    return table


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("health plots need matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_health(
    timeline: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    series: Mapping[str, Mapping[int, float]] | None = None,
) -> list[Path]:
    """Write ``health_reward_kl.png`` (reward vs KL, the Goodhart curve) and ``health_length_entropy.png``.

    Extra series -- the timeline's ``health_extra_keys`` and ``series`` (name -> {global step: value}, e.g. a gold
    reward measured on checkpoints) -- are drawn against KL on a right axis, at the steps where the KL is known.
    Alerts are marked where they first fired. Returns the written paths.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    known = {"step", "stage", "active", "alerts", "stop", *SERIES}
    extras: dict[str, dict[int, float]] = {}
    for record in timeline:
        for key, value in record.items():
            if key not in known and isinstance(value, int | float):
                extras.setdefault(key, {})[record["step"]] = value
    for name, values in (series or {}).items():
        extras.setdefault(name, {}).update({int(k): v for k, v in values.items()})
    first_alerts = {}
    for record in timeline:
        for alert in record.get("alerts", []):
            first_alerts.setdefault(alert["signal"], record)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5.5))
    kl_by_step = {r["step"]: r["kl"] for r in timeline if r.get("kl") is not None}
    pts = [(r["kl"], r["reward"], r["step"]) for r in timeline if r.get("kl") is not None and "reward" in r]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="tab:blue", alpha=0.4)
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis", s=18)
        fig.colorbar(sc, ax=ax, label="global step", orientation="horizontal", pad=0.15, aspect=40)
    ax.set_xlabel("KL to reference (nats / sequence)")
    ax.set_ylabel("proxy reward", color="tab:blue")
    if extras:
        right = ax.twinx()
        for (name, values), colour in zip(
            sorted(extras.items()), ("tab:orange", "tab:red", "tab:purple", "tab:brown")
        ):
            xy = sorted((kl_by_step[s], v) for s, v in values.items() if s in kl_by_step)
            if xy:
                right.plot([p[0] for p in xy], [p[1] for p in xy], "o-", ms=3, color=colour, label=name)
        right.set_ylabel(", ".join(sorted(extras)))
        right.legend(loc="lower right", fontsize=8)
    for signal, record in first_alerts.items():
        if record.get("kl") is not None:
            ax.axvline(record["kl"], ls="--", lw=0.8, color="red")
            ax.annotate(f"{signal} @ {record['step']}", (record["kl"], 1), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="red")  # fmt: skip
    ax.set_title("Reward vs KL (Goodhart curve)")
    paths.append(_savefig(fig, out_dir / "health_reward_kl.png"))
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, name in zip(axes, ("length", "entropy")):
        xy = [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
        ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", ms=3)
        ax.set_ylabel(SERIES_LABELS[name])
        for record in first_alerts.values():
            ax.axvline(record["step"], ls="--", lw=0.8, color="red")
    for signal, record in first_alerts.items():
        axes[0].annotate(signal, (record["step"], 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                         ha="right", fontsize=7, color="red")  # fmt: skip
    axes[-1].set_xlabel("global step")
    axes[0].set_title("Response length and entropy")
    paths.append(_savefig(fig, out_dir / "health_length_entropy.png"))
    plt.close(fig)
    return paths


__all__ = [
    "ADAPTER_PARAMS",
    "Alert",
    "FrozenModelCheck",
    "FrozenModelError",
    "HealthMonitor",
    "MonitorConfig",
    "SIGNALS",
    "build_monitors",
    "fingerprint",
    "frozen_models",
    "health_table",
    "load_timeline",
    "plot_health",
    "read_metrics",
    "verify_frozen",
]
