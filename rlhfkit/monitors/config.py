"""The monitors' settings and vocabulary: :class:`MonitorConfig`, the series they read and the signals they raise."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from rlhfkit.core.errors import raise_problems
from rlhfkit.core.rules import config_problems

Action = Literal["warn", "stop", "off"]


ACTIONS = ("warn", "stop", "off")

# Defaults chosen by replaying the monitor over the warn-only runs of the over-optimisation grid's tuning runs
# (bench/overoptimization.py, bench/monitor_replay.py --search); docs/overoptimisation.md judges them on its test runs.
SMOOTHING_STEPS = 15  # global steps whose logs are averaged before a level is judged
KL_CAUTION = 0.1  # nats per token of the starting answer length
# chosen by the scored search on four tuning runs of the over-optimisation grid (seeds 0-3, one thread), ranked by the
# criteria about the returned model (63 of 65 passes; 0.12: 62, a false stop; kl_caution above 0.1 fewer), judged on
# fresh seeds 6-11 (docs/overoptimisation.md#the-defaults-judged-on-fresh-seeds); the demo peaks at 0.092
KL_LIMIT = 0.15
DISAGREEMENT_GROWTH = 1.5  # x the reward ensemble's starting member spread
GAIN_FLATTENING = 0.25  # x the proxy's gain over the first half of the sqrt(KL) travelled
GAIN_MIN_KL = 0.01  # nats per token of the starting length before the gain is judged
GAIN_MIN_STEPS = 30  # global steps before the gain is judged (as reward_kl_min_steps: two smoothing windows)
MAX_KL_PER_TOKEN = 2.0  # kl_caution / kl_limit above this are per-sequence levels (the old scale)
# KL per starting token gained per optimiser step, on average since the start (replayed, docs/overoptimisation.md):
# the labelers' length bias 0.5 runs of the grid reach 0.008-0.02 in their first 15 steps, the bias-0.3 runs and the
# demo (PPO, GRPO) stay under 0.0045 while their KL is above KL_RATE_MIN_KL.
KL_RATE = 0.006
KL_RATE_MIN_KL = 0.02  # nats per starting token: below it a few early steps' noisy KL does not decide
# global steps before the KL rate is judged: a rate "since the start" divides by a small mean step early on, so an
# early jump of the KL that then levels off (a healthy PPO run on another machine: reward_kl_race at step 12, gold
# still rising to step 200) reads as a race (docs/overoptimisation.md)
KL_RATE_MIN_STEPS = 30
# standard errors of the paired difference the RL model must be above: 0, better than the start on average (on the
# over-optimisation grid an independent reward model refused 13 of 35 harmful candidates and none of 13 useful ones
# at 0, 6 at -2; docs/overoptimisation.md, "Do no harm")
NO_HARM_MARGIN = 0.0
NO_HARM_PROMPTS = 512
MAX_KL_RATE = 0.1  # reward_kl_slope above this is the old per-sequence scale (nats per sequence per step)


@dataclass
class MonitorConfig:
    """Thresholds and actions of the RL health monitors (rlhfkit's own; parsed by ``TrlParser`` from YAML).

    Every ``*_action`` field is ``warn`` (log + record), ``stop`` (save a checkpoint and end training) or ``off``.

    Args:
        baseline_steps (`int`, defaults to `3`): fewest logged steps whose mean is the starting level of a metric
            (length, entropy, reward std, truncation rate, ensemble spread): the logs of its first ``smoothing_steps``
            steps, at least this many.
        smoothing_steps (`int`, defaults to `SMOOTHING_STEPS`): every level a signal judges (KL, length, entropy,
            reward std, no-EOS share, ensemble spread) is the mean of the logs of the last this many global steps
            -- about 1000 sampled answers at the lab's 64 per step -- so that one small batch's noise does not
            decide (at least the latest log is used).
        trend_window (`int`, defaults to `5`): most logged steps in ``reward_kl_race``'s reward slope (Theil-Sen;
            at least two).
        alert_patience (`int`, defaults to `2`): consecutive logged steps a condition must hold before it fires
            (one noisy batch is not a trend).
        kl_caution (`float`, defaults to `KL_CAUTION`): KL per token of the starting answer length (the KL per
            sequence divided by the baseline mean length, so it does not grow because answers do) above which the
            policy is drifting far. A logged step above it is not healthy: after a stop the RL stage returns a
            checkpoint from below this level (``off`` counts only the stop signals).
        kl_caution_action (`str`, defaults to `"warn"`).
        kl_limit (`float`, defaults to `KL_LIMIT`): the same KL scale; above it reward hacking is likely.
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
        reward_kl_slope (`float`, defaults to `KL_RATE`): KL per starting token gained per optimiser step, on
            average since the start (the smoothed KL per starting token / the mean global step of its logs), above
            which, with a rising reward, ``reward_kl_race`` fires: the policy leaves the reference faster than RL
            against a trustworthy reward model does -- a reward model with an easy shortcut (e.g. length) pulls it
            away within the first steps, before any level is reached.
        reward_kl_min_kl (`float`, defaults to `KL_RATE_MIN_KL`): KL per starting token below which the rate is not
            judged (a few early steps' noisy KL divided by a small step count).
        reward_kl_min_steps (`int`, defaults to `KL_RATE_MIN_STEPS`): global steps before the KL rate is judged:
            early on the rate divides the KL by a small step count, so a healthy run whose KL jumps in its first
            steps and then levels off would read as a race.
        reward_kl_race_action (`str`, defaults to `"stop"`).
        clip_fraction_max (`float`, defaults to `0.3`): policy clip fraction above which updates are too big.
        approx_kl_max (`float`, defaults to `0.1`): PPO's per-token approx-KL between epochs above which too big.
        clipping_action (`str`, defaults to `"warn"`).
        truncation_rise (`float`, defaults to `0.2`): rise of the no-EOS share over its baseline (0.2 = 20 points).
        truncation_action (`str`, defaults to `"warn"`).
        disagreement_growth (`float`, defaults to `DISAGREEMENT_GROWTH`): the reward ensemble's member spread
            (``rewards/ensemble_std/mean``) above this x its baseline: the policy has reached responses the reward
            models were not trained to agree on.
        ensemble_disagreement_action (`str`, defaults to `"stop"`).
        gain_flattening_fraction (`float`, defaults to `GAIN_FLATTENING`): the smoothed proxy reward gained less over
            the second half of the distance travelled (sqrt of the KL per starting token) than this fraction of its
            gain over the first half (Gao et al. 2022: the gold reward peaks where the reward-vs-sqrt(KL) curve
            turns, while the proxy keeps rising, ever more slowly).
        gain_flattening_min_kl (`float`, defaults to `GAIN_MIN_KL`): KL per token of the starting length below which
            the gain is not judged (near the start sqrt(KL) is too small for a slope).
        gain_flattening_min_steps (`int`, defaults to `GAIN_MIN_STEPS`): global steps before the gain is judged:
            the first half of a short curve is a few noisy logs, so its gain, and the ratio to it, is noise.
        reward_gain_flattening_action (`str`, defaults to `"stop"`).
        healthy_checkpoint_steps (`int`, defaults to `1`): save a checkpoint at a healthy logged step when the last
            one the monitor asked for is at least this many global steps old (0: only the trainer's ``save_steps``),
            so that a stop can return the last healthy model.
        healthy_average (`int`, defaults to `3`): after a stop, the RL stage returns the uniform average of the
            trainable weights of the last this-many healthy checkpoints the monitor saved (1: the newest alone). One
            policy checkpoint's held-out gold can sit 0.05-0.13 below its neighbours' five steps apart (GRPO on the
            lab: checkpoint-60 0.657 between 0.795 and 0.791), while the average of checkpoints 50, 55 and 60 scored
            0.785 (latest weight averaging, Kaddour 2022; docs/overoptimisation.md).
            The monitor keeps that many
            healthy checkpoints on disk (older ones are pruned), and the average is summed in float32 on the CPU: one
            copy of the trainable weights per process (LoRA adapters: megabytes; a fully fine-tuned 7B policy: 28 GB,
            where 1 may be the better setting).
        no_harm_reward (`str` or `None`, defaults to `None`): a reward model held out of RL (a folder, or an
            ensemble's): when set, the RL stage's returned model (healthy average, newest healthy checkpoint or final
            weights) and the starting policy each answer ``no_harm_prompts`` of the training prompts, this reward
            model scores both answers per prompt, and the starting policy is returned instead unless the mean paired
            difference is above ``no_harm_margin`` standard errors (:func:`rlhfkit.rl.healthy.no_harm_verdict`). A
            reward model RL optimised cannot judge this: RL exploits its errors. None: no check (said in the report).
        no_harm_margin (`float`, defaults to `NO_HARM_MARGIN`): the candidate is kept when (mean paired difference) /
            (its standard error) is above this: 0, better than the starting policy on average; negative tolerates a
            candidate within noise of it, positive asks for a measurable gain.
        no_harm_prompts (`int`, defaults to `NO_HARM_PROMPTS`): prompts the check samples (at least 30).
        health_extra_keys (`list[str]`, defaults to `[]`): other logged keys to keep in the timeline and plot
            against KL (e.g. a gold reward logged as ``rewards/gold/mean``).
        frozen_check_steps (`int`, defaults to `0`): also verify the frozen models every N steps (0: begin/end).
        health_file (`str`, defaults to `"health.jsonl"`): timeline file name inside ``output_dir``.
        health_plots (`bool`, defaults to `True`): write the PNG plots at the end of training.
    """

    baseline_steps: int = field(
        default=3, metadata={"help": "Fewest logged steps whose mean is a metric's starting level."}
    )
    smoothing_steps: int = field(
        default=SMOOTHING_STEPS,
        metadata={"help": "Levels are judged on the mean of the logs of the last this many global steps."},
    )
    trend_window: int = field(default=5, metadata={"help": "Most logged steps in reward_kl_race's reward slope."})
    alert_patience: int = field(
        default=2, metadata={"help": "Consecutive logged steps a condition must hold before its alert fires."}
    )
    kl_caution: float = field(
        default=KL_CAUTION,
        metadata={"help": "KL per token of the starting answer length (KL per sequence / baseline length)."},
    )
    kl_caution_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    kl_limit: float = field(
        default=KL_LIMIT,
        metadata={"help": "KL per token of the starting answer length above which reward hacking is likely."},
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
        default=KL_RATE,
        metadata={
            "help": "KL per starting token gained per step, mean since the start; with a rising reward: a race."
        },
    )
    reward_kl_min_kl: float = field(
        default=KL_RATE_MIN_KL, metadata={"help": "KL per starting token below which the KL rate is not judged."}
    )
    reward_kl_min_steps: int = field(
        default=KL_RATE_MIN_STEPS, metadata={"help": "Global steps before the KL rate is judged."}
    )
    reward_kl_race_action: Action = field(default="stop", metadata={"help": "warn | stop | off."})
    clip_fraction_max: float = field(default=0.3, metadata={"help": "Policy clip fraction above this is too high."})
    approx_kl_max: float = field(default=0.1, metadata={"help": "PPO approx-KL (per token) above this is too high."})
    clipping_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    truncation_rise: float = field(
        default=0.2, metadata={"help": "Rise of the no-EOS (truncated) share above its baseline (0.2 = 20 points)."}
    )
    truncation_action: Action = field(default="warn", metadata={"help": "warn | stop | off."})
    disagreement_growth: float = field(
        default=DISAGREEMENT_GROWTH,
        metadata={"help": "Reward-ensemble member spread above this x its start raises ensemble_disagreement."},
    )
    ensemble_disagreement_action: Action = field(default="stop", metadata={"help": "warn | stop | off."})
    gain_flattening_fraction: float = field(
        default=GAIN_FLATTENING,
        metadata={"help": "Proxy gain over the 2nd half of sqrt(KL) travelled below this fraction of the 1st half's."},
    )
    gain_flattening_min_kl: float = field(
        default=GAIN_MIN_KL, metadata={"help": "KL per starting token below which the gain is not judged."}
    )
    gain_flattening_min_steps: int = field(
        default=GAIN_MIN_STEPS, metadata={"help": "Global steps before the gain is judged (0: from the start)."}
    )
    reward_gain_flattening_action: Action = field(default="stop", metadata={"help": "warn | stop | off."})
    healthy_checkpoint_steps: int = field(
        default=1,
        metadata={"help": "Checkpoint healthy logged steps at least this many steps apart (0: only save_steps)."},
    )
    healthy_average: int = field(
        default=3,
        metadata={"help": "After a stop, return the average of the last N healthy checkpoints' weights (1: newest)."},
    )
    no_harm_reward: str | None = field(
        default=None,
        metadata={"help": "A reward model held out of RL: return the starting policy unless the RL model beats it."},
    )
    no_harm_margin: float = field(
        default=NO_HARM_MARGIN,
        metadata={"help": "Keep the RL model when its mean paired advantage is above this many standard errors."},
    )
    no_harm_prompts: int = field(default=NO_HARM_PROMPTS, metadata={"help": "Prompts the do-no-harm check samples."})
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
        for name in ("kl_caution", "kl_limit"):
            if getattr(self, name) > MAX_KL_PER_TOKEN:
                problems.append(
                    f"{name}={getattr(self, name)} is in nats per token of the starting answer length, not per "
                    f"sequence; divide a per-sequence level by the answer length (15 nats at 150 tokens: 0.1)"
                )
        if self.reward_kl_slope > MAX_KL_RATE:
            problems.append(
                f"reward_kl_slope={self.reward_kl_slope} is in nats per starting token per step, not per sequence; "
                f"divide a per-sequence rate by the answer length (0.9 nats/step at 150 tokens: 0.006)"
            )
        if self.healthy_checkpoint_steps < 0:
            problems.append(f"healthy_checkpoint_steps={self.healthy_checkpoint_steps} must be >= 0 (0: off)")
        if self.healthy_average < 1:
            problems.append(f"healthy_average={self.healthy_average} must be >= 1 (1: the newest healthy checkpoint)")
        if not 0 < self.gain_flattening_fraction < 1:
            problems.append(f"gain_flattening_fraction={self.gain_flattening_fraction} must be in (0, 1)")
        if self.disagreement_growth <= 1:
            problems.append(f"disagreement_growth={self.disagreement_growth} must be > 1")
        for name in ("baseline_steps", "alert_patience", "smoothing_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.trend_window < 2:
            problems.append(f"trend_window={self.trend_window} must be >= 2 (a slope needs two points)")
        if self.length_drift_ratio <= 1:
            problems.append(f"length_drift_ratio={self.length_drift_ratio} must be > 1")
        for name in ("reward_kl_min_steps", "gain_flattening_min_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0 (0: judged from the start)")
        problems += self._no_harm_problems()
        if self.frozen_check_steps < 0:
            problems.append(f"frozen_check_steps={self.frozen_check_steps} must be >= 0 (0: begin and end only)")
        problems += config_problems(self)
        raise_problems(problems)

    def _no_harm_problems(self) -> list[str]:
        import math
        import os

        problems = []
        if self.no_harm_reward is not None and not os.path.isdir(self.no_harm_reward):
            problems.append(
                f"no_harm_reward={self.no_harm_reward!r} is not a folder; give a reward model held out of RL (a "
                "reward stage's model/ folder) or leave it unset"
            )
        if not (math.isfinite(self.no_harm_margin) and -10 <= self.no_harm_margin <= 10):
            problems.append(f"no_harm_margin={self.no_harm_margin} must be in [-10, 10] standard errors, e.g. 0")
        if self.no_harm_prompts < 30:
            problems.append(f"no_harm_prompts={self.no_harm_prompts} must be >= 30 (a standard error needs them)")
        return problems


SERIES = (
    "kl",
    "reward",
    "length",
    "entropy",
    "reward_std",
    "frac_reward_zero_std",
    "clipfrac",
    "approxkl",
    "truncation",
    "disagreement",
)


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
    "disagreement": "reward-ensemble spread",
}


_KL_FIX = "raise the KL coefficient (PPO kl_coef / GRPO beta), lower the learning rate, or stop earlier"


_RM_FIX = "retrain the reward model with labeler-agreement filtering and length-debiased pairs"


# signal -> (series it reads, what it means, what to change)
SIGNALS: dict[str, tuple[str, str, str]] = {
    "kl_caution": (
        "kl",
        "KL to the reference is {detail} (caution above {threshold:g} per starting token): the policy is leaving the "
        "region where the reward model was trained and can be trusted",
        f"Watch samples; {_KL_FIX}.",
    ),
    "kl_limit": (
        "kl",
        "KL to the reference is {detail} (limit {threshold:g} per starting token): at this distance the reward model "
        "is usually being exploited (reward hacking)",
        f"Use the last healthy checkpoint; {_KL_FIX}; if the gold/human score fell, {_RM_FIX}.",
    ),
    "ensemble_disagreement": (
        "disagreement",
        "the reward models of the ensemble disagree {detail} (threshold {threshold:g}x): the policy now writes "
        "responses the reward models were not trained to agree on, where their scores can be exploited",
        f"Use the last healthy checkpoint; {_KL_FIX}; or optimise reward_aggregation: mean_minus_std (or min); "
        "add preference data on such responses",
    ),
    "reward_gain_flattening": (
        "reward",
        "the proxy reward's gain per unit of sqrt(KL) fell to {detail} (threshold {threshold:g}x): reward is now "
        "bought with ever more distance from the reference, where the gold reward typically peaks and falls "
        "(Gao et al. 2022)",
        f"Use the last healthy checkpoint; {_KL_FIX}; compare samples with a held-out or gold judgement.",
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
        "reward rises while KL grows {detail} (threshold {threshold:g} per step): the policy leaves the reference "
        "faster than RL against a trustworthy reward model does, so it is following a shortcut of the reward model "
        "(often length), the Goodhart regime",
        f"Use the last healthy checkpoint; check whether the reward model prefers longer answers (rm_eval's length "
        f"statistics); {_RM_FIX}; {_KL_FIX}.",
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
