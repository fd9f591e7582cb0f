"""The gate before RL: :func:`rm_gate` judges a :class:`~rlhfkit.reward.evaluate.RewardModelReport` -- held-out
accuracy at least ``min_accuracy``, and optionally no reward that follows response length -- and returns a
:class:`GateVerdict` with the failures (refuse RL) and warnings (look before RL), each a sentence with its fix."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rlhfkit.core.errors import ConfigError
from rlhfkit.reward.evaluate import (
    DATA_PROBLEM_ACCURACY,
    GOOD_ACCURACY,
    WARN_ECE,
    WARN_LENGTH_ACCURACY_GAP,
    WARN_LENGTH_BIAS,
    WARN_PAIR_LENGTH_BIAS,
    WARN_TIE_RATE,
    RewardModelReport,
)

logger = logging.getLogger(__name__)

# Spearman(margin, length difference) within held-out pairs above which the gate refuses RL: on the over-optimisation
# grid's tuning runs (docs/overoptimisation.md) the reward models of labelers who prefer the longer list with
# probability 0.5 score 0.58-0.75 (RL never gains gold against them), those of bias 0.3 -0.10..0.20; the demo's -0.44
MAX_PAIR_LENGTH_BIAS = 0.5


# ----------------------------------------------------------------------------- gate
@dataclass
class GateVerdict:
    """The gate's decision. ``reasons``: why it failed, each saying what to do; ``warnings``: worth a look."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""  # one line, fit for an error message: "passed (...)" or the failed checks joined by "; "

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary, "reasons": self.reasons, "warnings": self.warnings}


def rm_gate(
    report: RewardModelReport,
    min_accuracy: float = 0.60,
    *,
    max_length_bias: float | None = 0.6,
    max_pair_length_bias: float | None = MAX_PAIR_LENGTH_BIAS,
    min_pairs: int = 30,
) -> GateVerdict:
    """Decide whether a reward model is good enough to steer RL.

    Common RLHF guidance: held-out pairwise accuracy of 70-80% is good (InstructGPT's reward model: ~72%); below
    65% usually points to data problems (noisy or low-agreement labels); around 60% the reward model is too weak
    to steer RL -- the policy mostly optimises its noise. Fails when:

    * ``accuracy < min_accuracy`` (strict wins; ties count as wrong);
    * ``|length_spearman| > max_length_bias`` (the reward is mostly a length counter; RL would learn to pad);
      ``None`` disables; so does ``length_margin_spearman > max_pair_length_bias`` (:data:`MAX_PAIR_LENGTH_BIAS`;
      warn above 0.3; ``None`` only warns);
    * fewer than ``min_pairs`` pairs were evaluated (the accuracy is too uncertain to decide on).

    Warns on accuracy below 65% / 70%, a 95% interval reaching below ``min_accuracy``, moderate length bias
    (:data:`WARN_LENGTH_BIAS`, :data:`WARN_LENGTH_ACCURACY_GAP`), miscalibration (:data:`WARN_ECE`), ties
    (:data:`WARN_TIE_RATE`) and pairs dropped for length.
    """
    if not 0.0 <= min_accuracy <= 1.0:
        raise ConfigError(f"min_accuracy={min_accuracy} must be in [0, 1], e.g. 0.6")
    pair_failures, pair_warnings = _pair_length_check(report, max_pair_length_bias)
    failures = _gate_failures(report, min_accuracy, max_length_bias, min_pairs) + pair_failures
    warnings = [] if failures else _accuracy_warnings(report, min_accuracy)
    warnings += _gate_warnings(report, min_accuracy, max_length_bias) + pair_warnings
    if failures:
        return GateVerdict(False, [reason for _, reason in failures], warnings, "; ".join(s for s, _ in failures))
    headline = f"passed (accuracy {report.accuracy:.3f} >= {min_accuracy:.2f} on {report.n_pairs} pairs"
    headline += f"; {len(warnings)} warning{'s' * (len(warnings) != 1)})" if warnings else ")"
    return GateVerdict(True, [], warnings, headline)


def _length_bias_fails(report: RewardModelReport, max_length_bias: float | None) -> bool:
    rho = report.length_spearman
    return max_length_bias is not None and rho is not None and abs(rho) > max_length_bias


def _gate_failures(
    report: RewardModelReport, min_accuracy: float, max_length_bias: float | None, min_pairs: int
) -> list[tuple[str, str]]:
    """``(short, reason)`` for each failed check: ``short`` for the one-line summary, ``reason`` saying what to do."""
    acc, n = report.accuracy, report.n_pairs
    lo, hi = report.accuracy_ci95
    failures = []
    if n < min_pairs:
        failures.append(
            (
                f"only {n} pairs evaluated (min_pairs={min_pairs})",
                f"only {n} pairs were evaluated (min_pairs={min_pairs}): the accuracy's 95% interval is "
                f"{lo:.2f}-{hi:.2f}, too wide to decide on; evaluate on at least {min_pairs} held-out pairs",
            )
        )
    if acc < min_accuracy:
        if hi < 0.5:  # significantly below chance
            hint = "; accuracy significantly below chance often means chosen and rejected are swapped in the data"
        elif report.tie_rate > WARN_TIE_RATE:
            hint = f"; {report.tie_rate:.0%} of pairs got identical scores: check truncation and the score head"
        else:
            hint = ""
        failures.append(
            (
                f"accuracy {acc:.3f} < min_accuracy {min_accuracy:.2f} on {n} pairs",
                f"accuracy {acc:.3f} (95% CI {lo:.2f}-{hi:.2f}) is below min_accuracy {min_accuracy:.2f}: a reward "
                f"model near 60% is too weak to steer RL (70-80% is good; below 65% usually points to data problems). "
                "What to do: collect more or cleaner preference data, drop low-agreement pairs with "
                "`rlhfkit data agreement --min-agreement 0.7`, train the reward model longer or from a stronger SFT "
                "checkpoint, and check that evaluation pairs use the training chat format" + hint,
            )
        )
    if _length_bias_fails(report, max_length_bias):
        rho = report.length_spearman
        failures.append(
            (
                f"reward tracks length (Spearman {rho:.2f} > max_length_bias {max_length_bias:g})",
                f"the reward tracks response length (Spearman {rho:.2f} with {report.length_unit}, above "
                f"max_length_bias {max_length_bias:g}; longer response preferred in "
                f"{percent(report.longer_preferred_rate)} of pairs vs chosen longer in "
                f"{percent(report.chosen_longer_rate)} of the data): RL would learn to pad "
                "responses. What to do: add pairs where the shorter response is chosen (length-balance the preference "
                "data), filter length-driven labels, and retrain",
            )
        )
    return failures


def _pair_length_check(report: RewardModelReport, limit: float | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(failures, warnings) of the margin following the length difference within pairs (``limit``: fail above)."""
    rho = report.length_margin_spearman
    if rho is None or rho <= WARN_PAIR_LENGTH_BIAS and (limit is None or rho <= limit):
        return [], []
    what = f"within pairs the reward margin follows the length difference (Spearman {rho:.2f}, whatever the labels)"
    if limit is not None and rho > limit:
        return [
            (
                f"margin tracks length within pairs (Spearman {rho:.2f} > max_pair_length_bias {limit:g})",
                f"{what}. What to do: add pairs where the shorter response is chosen (length-balance the preference "
                "data), filter length-driven labels, and retrain",
            )
        ], []
    return [], [f"{what}: RL will learn longer answers first; length-balance the preference data"]


def _accuracy_warnings(report: RewardModelReport, min_accuracy: float) -> list[str]:
    """Warnings about a passing accuracy: below the usual landmarks, or an interval reaching below the floor."""
    acc = report.accuracy
    lo, hi = report.accuracy_ci95
    warnings = []
    if acc < DATA_PROBLEM_ACCURACY:
        warnings.append(
            f"accuracy {acc:.3f} passes min_accuracy but is below {DATA_PROBLEM_ACCURACY:.0%}, which usually "
            "points to data problems (noisy or low-agreement labels): consider `rlhfkit data agreement` filtering "
            "before relying on this reward model for RL"
        )
    elif acc < GOOD_ACCURACY:
        warnings.append(
            f"accuracy {acc:.3f} is usable but below the {GOOD_ACCURACY:.0%}-80% usually considered good; "
            "more or cleaner data or a longer reward-model run should help"
        )
    if lo < min_accuracy <= acc:
        warnings.append(
            f"the 95% interval of the accuracy ({lo:.2f}-{hi:.2f}) reaches below min_accuracy "
            f"{min_accuracy:.2f}: evaluate on more pairs to be sure"
        )
    return warnings


def _gate_warnings(report: RewardModelReport, min_accuracy: float, max_length_bias: float | None) -> list[str]:
    """Warnings given whether or not the gate passes: length, calibration, ties, dropped pairs."""
    warnings = []
    rho = report.length_spearman
    if rho is not None and WARN_LENGTH_BIAS < abs(rho) and not _length_bias_fails(report, max_length_bias):
        warnings.append(
            f"reward correlates with response length (Spearman {rho:.2f}): watch response length during RL "
            "and consider length-balanced preference data"
        )
    a_long, a_short = report.accuracy_chosen_longer, report.accuracy_chosen_shorter
    if (
        a_long is not None
        and a_short is not None
        and min(report.n_chosen_longer, report.n_chosen_shorter) >= 10
        and a_long - a_short > WARN_LENGTH_ACCURACY_GAP
    ):
        warnings.append(
            f"accuracy is {a_long:.2f} when the chosen response is longer but {a_short:.2f} when it is shorter: "
            "the reward model leans on length"
        )
    if report.ece > WARN_ECE:
        warnings.append(
            f"sigmoid(margin) is miscalibrated (ECE {report.ece:.3f}): do not read margins as probabilities; "
            f"normalise RL rewards with reward_mean {report.reward_mean:.3g} / reward_std {report.reward_std:.3g}"
        )
    if report.tie_rate > WARN_TIE_RATE and report.accuracy >= min_accuracy:
        warnings.append(
            f"{report.tie_rate:.0%} of pairs have identical chosen and rejected scores: check truncation "
            "(max_length) and padding"
        )
    if report.n_dropped:
        warnings.append(
            f"{report.n_dropped} pairs longer than max_length were not scored; the accuracy describes shorter pairs"
        )
    return warnings


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"
