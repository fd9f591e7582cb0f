"""Reward-model evaluation: how well a scalar reward model ranks held-out preference pairs, and whether it is
good enough to steer RL.

Scoring lives in :mod:`rlhfkit.models.scoring` (formatted exactly as ``RewardTrainer`` trained the model); here the
statistics are pure functions of numbers:

* :func:`report_from_scores` turns ``r_chosen`` / ``r_rejected`` into a :class:`RewardModelReport`;
  :func:`evaluate_reward_model` does all three.
* :func:`rm_gate` judges a report (:class:`GateVerdict`); :func:`write_report` writes ``report.json``,
  ``report.md``, ``reliability.png`` and ``rewards_hist.png`` atomically.

Conventions: a pair is *correct* when ``r_chosen > r_rejected`` strictly; equal scores are *ties* (counted, and
wrong for accuracy). Calibration treats ``sigmoid(r_chosen - r_rejected)`` as the Bradley-Terry probability that
chosen is preferred (the reward-model loss is ``-log sigmoid(margin)``). Response length is counted in
**characters** of the response (chosen / rejected text, not the prompt), so it does not depend on the tokenizer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.io import json_safe
from rlhfkit.models.scoring import EnsembleScorer, encode_pairs, resolve_pad_token_id, score_token_ids

logger = logging.getLogger(__name__)

# Accuracy landmarks from common RLHF practice (InstructGPT's 6B reward model reached ~72% on held-out labels):
GOOD_ACCURACY = 0.70  # 70-80%: a reward model RL can follow
DATA_PROBLEM_ACCURACY = 0.65  # below this, look at the data (noisy or low-agreement labels) before training more
# Warning thresholds of the gate (failures are its arguments).
WARN_LENGTH_BIAS = 0.3  # |Spearman(reward, length)| above this: RL may learn to pad responses
WARN_LENGTH_ACCURACY_GAP = 0.2  # accuracy when chosen is longer minus when it is shorter
WARN_PAIR_LENGTH_BIAS = 0.3  # Spearman(margin, length difference) in pairs; lab: docs/overoptimisation.md
WARN_ECE = 0.10  # sigmoid(margin) is far from the observed win rate
WARN_TIE_RATE = 0.05  # identical scores for chosen and rejected
QUANTILES = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
AGREEMENT_EDGES = (0.6, 0.7, 0.8, 0.9)  # agreement bins: < 0.6, [0.6, 0.7), ..., >= 0.9
HIST_BINS = 20


# ----------------------------------------------------------------------------- response length
def response_length(response: str | list[dict]) -> int:
    """Length of a response in characters (message lists: the sum over their contents)."""
    if isinstance(response, str):
        return len(response)
    return sum(len(m.get("content") or "") for m in response)


# ----------------------------------------------------------------------------- report
@dataclass
class RewardModelReport:
    """Everything :func:`report_from_scores` measures (``None`` where a statistic is undefined).

    Headline: ``n_pairs``, ``accuracy`` (strict ``r_chosen > r_rejected``), ``accuracy_ci95`` (Wilson),
    ``n_correct``, ``n_ties``, ``tie_rate``, ``auc`` (ROC AUC of the margin, each pair labelled both ways),
    ``ece`` (expected calibration error of ``sigmoid(margin)``, ``n_bins`` equal-width bins), ``brier``.
    ``reliability``: one dict per bin (``lo``, ``hi``, ``count``, ``confidence``, ``accuracy``) over the 2n
    predictions ``P(chosen wins) = sigmoid(margin)`` and ``P(rejected wins) = 1 - sigmoid(margin)``.
    Margins: ``margin_*`` over all pairs, ``margin_correct_mean`` / ``margin_incorrect_mean`` (ties count as
    incorrect) and ``margin_separation`` = their difference / pooled standard deviation (Cohen's d; positive by
    construction, since the groups are split at 0: it says how decisively the model scores, not whether it is right).
    Rewards: ``reward_mean`` / ``reward_std`` over all 2n scored responses (population std; normalise RL rewards
    with them), ``chosen_quantiles`` / ``rejected_quantiles``, histograms on shared ``hist_edges``.
    Length (``length_unit``): ``length_spearman`` of reward vs length over all responses,
    ``length_margin_spearman`` of margin vs (chosen - rejected) length, ``longer_preferred_rate`` (how often the
    longer response scores higher), ``chosen_longer_rate`` (how often the data's chosen is longer: the accuracy a
    pure length counter would get), ``accuracy_chosen_longer`` / ``accuracy_chosen_shorter``.
    ``subsets`` / ``agreement``: ``{label: {"n", "accuracy", "ties"}}``. ``worst_pairs``: the ``n_worst`` lowest
    margins. ``n_dropped``: pairs not scored because longer than ``max_length`` (as ``RewardTrainer`` filters).
    """

    n_pairs: int
    accuracy: float
    accuracy_ci95: tuple[float, float]
    n_correct: int
    n_ties: int
    tie_rate: float
    auc: float
    ece: float
    brier: float
    reliability: list[dict]
    margin_mean: float
    margin_std: float
    margin_median: float
    margin_correct_mean: float | None
    margin_incorrect_mean: float | None
    margin_separation: float | None
    reward_mean: float
    reward_std: float
    chosen_mean: float
    rejected_mean: float
    chosen_quantiles: dict[str, float]
    rejected_quantiles: dict[str, float]
    hist_edges: list[float]
    chosen_hist: list[int]
    rejected_hist: list[int]
    length_unit: str = "characters"
    length_spearman: float | None = None
    length_spearman_pvalue: float | None = None
    length_margin_spearman: float | None = None
    longer_preferred_rate: float | None = None
    chosen_longer_rate: float | None = None
    accuracy_chosen_longer: float | None = None
    accuracy_chosen_shorter: float | None = None
    n_chosen_longer: int = 0
    n_chosen_shorter: int = 0
    n_same_length: int = 0
    subsets: dict[str, dict] = field(default_factory=dict)
    agreement: dict[str, dict] = field(default_factory=dict)
    worst_pairs: list[dict] = field(default_factory=list)
    n_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN / inf become None, numpy scalars become Python numbers)."""
        return json_safe(asdict(self))


def _f(x) -> float | None:
    """A finite Python float, or None."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def report_from_scores(
    r_chosen: Sequence[float],
    r_rejected: Sequence[float],
    *,
    chosen_lengths: Sequence[int] | None = None,
    rejected_lengths: Sequence[int] | None = None,
    subsets: Sequence[Any] | None = None,
    agreement: Sequence[float | None] | None = None,
    pairs: Sequence[dict] | None = None,
    n_bins: int = 10,
    n_worst: int = 10,
    length_unit: str = "characters",
    n_dropped: int = 0,
) -> RewardModelReport:
    """Compute a :class:`RewardModelReport` from the scores of n pairs (pure: no model involved).

    Args:
        r_chosen, r_rejected: scores of the chosen and rejected response of each pair.
        chosen_lengths, rejected_lengths: response lengths (in ``length_unit``); omit to skip length bias.
        subsets: a label per pair (e.g. RewardBench's ``subset``) for per-subset accuracy.
        agreement: labeler agreement per pair (None = unknown), binned by :data:`AGREEMENT_EDGES`.
        pairs: the pairs themselves, so that ``worst_pairs`` carries their texts.
    """
    from scipy.stats import binomtest

    rc = np.asarray(r_chosen, dtype=np.float64)
    rr = np.asarray(r_rejected, dtype=np.float64)
    n = len(rc)
    if n == 0 or rr.shape != rc.shape:
        raise DataError(f"need the same, non-zero number of chosen and rejected scores (got {n} and {len(rr)})")
    if n_bins < 1:
        raise ConfigError(f"n_bins={n_bins} must be >= 1")
    margin = rc - rr
    correct, ties = margin > 0, margin == 0
    n_correct = int(correct.sum())
    ci = binomtest(n_correct, n).proportion_ci(confidence_level=0.95, method="wilson")  # Wilson 95% interval
    report = RewardModelReport(
        n_pairs=n,
        accuracy=n_correct / n,
        accuracy_ci95=(float(ci.low), float(ci.high)),
        n_correct=n_correct,
        n_ties=int(ties.sum()),
        tie_rate=float(ties.mean()),
        **_calibration_stats(margin, n_bins),
        **_margin_stats(margin, correct),
        **_reward_stats(rc, rr),
        length_unit=length_unit,
        n_dropped=n_dropped,
    )
    if chosen_lengths is not None and rejected_lengths is not None:
        for name, value in _length_stats(rc, rr, correct, chosen_lengths, rejected_lengths).items():
            setattr(report, name, value)
    if subsets is not None:
        if len(subsets) != n:
            raise DataError(f"got {len(subsets)} subset labels for {n} pairs")
        report.subsets = _group_stats(correct, ties, ["(none)" if s is None else str(s) for s in subsets])
    if agreement is not None:
        report.agreement = _agreement_stats(correct, ties, agreement)
    report.worst_pairs = _worst_pairs(margin, rc, rr, pairs, n_worst)
    return report


def _calibration_stats(margin: np.ndarray, n_bins: int) -> dict[str, Any]:
    """ROC AUC of the margin, Brier score, reliability bins and ECE of ``sigmoid(margin)``."""
    from scipy.special import expit
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score

    n = len(margin)
    # Each pair labelled both ways: (margin, chosen wins) and (-margin, rejected wins), so both classes exist.
    y = np.concatenate([np.ones(n), np.zeros(n)])
    p_chosen = expit(margin)
    prob = np.concatenate([p_chosen, 1.0 - p_chosen])
    auc = roc_auc_score(y, np.concatenate([margin, -margin]))
    brier = brier_score_loss(y, prob)
    # Bins exactly as sklearn's calibration_curve(strategy="uniform") forms them; it returns non-empty bins only.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], prob), minlength=n_bins)
    observed, predicted = calibration_curve(y, prob, n_bins=n_bins, strategy="uniform")
    reliability, ece, j = [], 0.0, 0
    for b in range(n_bins):
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(counts[b])}
        row["confidence"] = row["accuracy"] = None
        if counts[b]:
            row["confidence"], row["accuracy"] = float(predicted[j]), float(observed[j])
            ece += counts[b] / (2 * n) * abs(observed[j] - predicted[j])
            j += 1
        reliability.append(row)
    return {"auc": float(auc), "ece": float(ece), "brier": float(brier), "reliability": reliability}


def _margin_stats(margin: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Margins over all pairs, of the correct and incorrect ones, and their separation (Cohen's d)."""
    n = len(margin)
    good, bad = margin[correct], margin[~correct]
    separation = None
    if len(good) >= 2 and len(bad) >= 2:  # Cohen's d with the pooled standard deviation
        pooled = math.sqrt(((len(good) - 1) * good.var(ddof=1) + (len(bad) - 1) * bad.var(ddof=1)) / (n - 2))
        gap = good.mean() - bad.mean()
        separation = _f(gap / pooled) if pooled > 1e-9 * abs(gap) else None  # no spread: undefined
    return {
        "margin_mean": float(margin.mean()),
        "margin_std": float(margin.std()),
        "margin_median": float(np.median(margin)),
        "margin_correct_mean": _f(good.mean()) if len(good) else None,
        "margin_incorrect_mean": _f(bad.mean()) if len(bad) else None,
        "margin_separation": separation,
    }


def _reward_stats(rc: np.ndarray, rr: np.ndarray) -> dict[str, Any]:
    """Mean / std of all 2n rewards, chosen / rejected means, quantiles and histograms on shared edges."""
    rewards = np.concatenate([rc, rr])
    hist_edges = np.histogram_bin_edges(rewards, bins=HIST_BINS)
    return {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "chosen_mean": float(rc.mean()),
        "rejected_mean": float(rr.mean()),
        "chosen_quantiles": {k: float(np.quantile(rc, q)) for k, q in QUANTILES.items()},
        "rejected_quantiles": {k: float(np.quantile(rr, q)) for k, q in QUANTILES.items()},
        "hist_edges": hist_edges.tolist(),
        "chosen_hist": np.histogram(rc, hist_edges)[0].tolist(),
        "rejected_hist": np.histogram(rr, hist_edges)[0].tolist(),
    }


def _length_stats(
    rc: np.ndarray, rr: np.ndarray, correct: np.ndarray, chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]
) -> dict[str, Any]:
    """The report's length-bias fields (the ones that are defined for these lengths)."""
    from scipy.stats import spearmanr

    lc = np.asarray(chosen_lengths, dtype=np.float64)
    lr = np.asarray(rejected_lengths, dtype=np.float64)
    if lc.shape != rc.shape or lr.shape != rc.shape:
        raise DataError(f"got {len(lc)} chosen and {len(lr)} rejected lengths for {len(rc)} pairs")
    out: dict[str, Any] = {}
    rewards, lengths, margin = np.concatenate([rc, rr]), np.concatenate([lc, lr]), rc - rr
    if np.ptp(lengths) > 0 and np.ptp(rewards) > 0:
        rho = spearmanr(rewards, lengths)
        out["length_spearman"], out["length_spearman_pvalue"] = _f(rho.statistic), _f(rho.pvalue)
    diff = lc - lr
    longer, shorter = diff > 0, diff < 0
    if np.ptp(diff) > 0 and np.ptp(margin) > 0:
        out["length_margin_spearman"] = _f(spearmanr(margin, diff).statistic)
    differ = diff != 0
    if differ.any():
        out["longer_preferred_rate"] = float((np.sign(margin[differ]) == np.sign(diff[differ])).mean())
        out["chosen_longer_rate"] = float(longer[differ].mean())
    out["n_chosen_longer"], out["n_chosen_shorter"] = int(longer.sum()), int(shorter.sum())
    out["n_same_length"] = int((~differ).sum())
    out["accuracy_chosen_longer"] = float(correct[longer].mean()) if longer.any() else None
    out["accuracy_chosen_shorter"] = float(correct[shorter].mean()) if shorter.any() else None
    return out


def _group_stats(correct: np.ndarray, ties: np.ndarray, labels: Sequence[str]) -> dict[str, dict]:
    out = {}
    labels = np.asarray(labels, dtype=object)
    for label in sorted(set(labels.tolist()), key=str):
        sel = labels == label
        out[str(label)] = {"n": int(sel.sum()), "accuracy": float(correct[sel].mean()), "ties": int(ties[sel].sum())}
    return out


def _agreement_label(value: float) -> str:
    edges = AGREEMENT_EDGES
    k = int(np.searchsorted(edges, value, side="right"))
    if k == 0:
        return f"< {edges[0]:g}"
    if k == len(edges):
        return f">= {edges[-1]:g}"
    return f"[{edges[k - 1]:g}, {edges[k]:g})"


def _agreement_stats(correct: np.ndarray, ties: np.ndarray, agreement: Sequence[float | None]) -> dict[str, dict]:
    """Accuracy per agreement bin (:data:`AGREEMENT_EDGES`), lowest first; pairs of unknown agreement left out."""
    if len(agreement) != len(correct):
        raise DataError(f"got {len(agreement)} agreement values for {len(correct)} pairs")
    known = np.array([a is not None and not (isinstance(a, float) and math.isnan(a)) for a in agreement])
    if not known.any():
        return {}
    labels = [_agreement_label(float(a)) for a, k in zip(agreement, known) if k]
    stats = _group_stats(correct[known], ties[known], labels)
    order = [_agreement_label(e) for e in (-math.inf, *AGREEMENT_EDGES)]
    return {k: stats[k] for k in order if k in stats}


def _worst_pairs(margin: np.ndarray, rc: np.ndarray, rr: np.ndarray, pairs, n_worst: int) -> list[dict]:
    """The ``n_worst`` lowest-margin pairs (stable order), with their texts when ``pairs`` is given."""
    rows = []
    for i in np.argsort(margin, kind="stable")[:n_worst]:
        row = {"index": int(i), "margin": float(margin[i]), "r_chosen": float(rc[i]), "r_rejected": float(rr[i])}
        if pairs is not None:
            row.update({k: pairs[i][k] for k in ("prompt", "chosen", "rejected") if k in pairs[i]})
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- end to end
def evaluate_reward_model(
    model,
    tokenizer,
    pairs,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    device=None,
    padding_side: str = "right",
    subset_column: str | None = "subset",
    agreement_column: str | None = "agreement",
    n_bins: int = 10,
    n_worst: int = 10,
) -> RewardModelReport:
    """Score held-out pairs with a reward model and report how well it ranks them.

    Args:
        model: a sequence-classification model with one label (e.g. from
        :func:`rlhfkit.models.loading.load_reward_model`). tokenizer: its tokenizer (chat template for conversational
        pairs). pairs: list of dicts or ``datasets.Dataset`` in TRL's explicit-prompt preference format: ``prompt``,
            ``chosen``, ``rejected``, all strings or all message lists.
        batch_size: sequences per forward pass (chosen and rejected are scored together, length-sorted).
        max_length: drop pairs whose chosen or rejected sequence is longer, in tokens (as ``RewardTrainer``
            filters with ``RewardConfig.max_length``); counted in ``report.n_dropped``.
        device: run on this device (default: where the model is).
        padding_side: ``right`` (as in training) or ``left``; scores are the same.
        subset_column, agreement_column: per-subset / per-agreement accuracy when the pairs have these columns.
        n_bins: reliability bins; n_worst: lowest-margin pairs kept with their texts.
    """
    rows, ids, n_dropped = encode_pairs(tokenizer, pairs, max_length)
    pad = resolve_pad_token_id(model, tokenizer)
    scores = score_token_ids(
        model, ids, pad_token_id=pad, batch_size=batch_size, padding_side=padding_side, device=device
    )
    n = len(rows)
    return pair_report(
        rows, scores[:n], scores[n:], n_dropped, subset_column, agreement_column, n_bins=n_bins, n_worst=n_worst
    )


def pair_report(
    rows: list[dict],
    r_chosen,
    r_rejected,
    n_dropped: int = 0,
    subset_column: str | None = "subset",
    agreement_column: str | None = "agreement",
    **kwargs: Any,
) -> RewardModelReport:
    """:func:`report_from_scores` for scored pairs (rows from :func:`encode_pairs`), with their lengths, subsets
    and labeler agreement when the rows have them; ``kwargs``: ``n_bins``, ``n_worst``."""

    def has(column: str | None) -> bool:
        return column is not None and any(column in row for row in rows)

    return report_from_scores(
        r_chosen,
        r_rejected,
        chosen_lengths=[response_length(row["chosen"]) for row in rows],
        rejected_lengths=[response_length(row["rejected"]) for row in rows],
        subsets=[row.get(subset_column) for row in rows] if has(subset_column) else None,
        agreement=[row.get(agreement_column) for row in rows] if has(agreement_column) else None,
        pairs=rows,
        length_unit="characters",
        n_dropped=n_dropped,
        **kwargs,
    )


@dataclass
class EnsembleReport:
    """An ensemble's evaluation on held-out pairs (:func:`evaluate_ensemble`).

    Attributes:
        ensemble: the report of the members' mean standardised score (what ``reward_aggregation: mean`` gives RL;
            its calibration is that of ``sigmoid`` of the standardised margin).
        members: one report per member, on its own raw scores.
        disagreement: ``member_std_mean`` (mean over the 2n responses of the members' std of standardised
            scores), ``split_pairs`` (share of pairs the members do not all rank the same way), and the ensemble's
            ``accuracy_agreed`` / ``accuracy_split`` on those two groups (None for an empty group).
    """

    ensemble: RewardModelReport
    members: list[RewardModelReport]
    disagreement: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "disagreement": self.disagreement,
            "members": [
                {k: m.to_dict()[k] for k in ("n_pairs", "accuracy", "auc", "ece", "reward_mean", "reward_std")}
                for m in self.members
            ],
        }


def evaluate_ensemble(
    scorer: EnsembleScorer, pairs, *, max_length: int | None = None, batch_size: int = 16
) -> EnsembleReport:
    """Score held-out preference pairs with every member and report each member, the ensemble and their
    disagreement (see :class:`EnsembleReport`). Pairs as for :func:`rlhfkit.reward.evaluate.evaluate_reward_model`."""
    tokenizer = scorer.members[0].tokenizer
    rows, ids, n_dropped = encode_pairs(tokenizer, pairs, max_length)
    n, raw = len(rows), []
    for k in range(len(scorer)):
        member = scorer.activate(k)
        pad = resolve_pad_token_id(member.model, tokenizer)
        raw.append(score_token_ids(member.model, ids, pad_token_id=pad, batch_size=batch_size))
    scores = np.stack(raw)  # (K, 2n)
    z = (scores - np.array([[m.mean] for m in scorer.members])) / np.array([[m.std] for m in scorer.members])
    mean = z.mean(0)
    margins = z[:, :n] - z[:, n:]  # (K, n)
    agreed = (np.sign(margins) == np.sign(margins[:1])).all(0) & (margins[0] != 0)
    correct = mean[:n] > mean[n:]
    return EnsembleReport(
        ensemble=pair_report(rows, mean[:n], mean[n:], n_dropped),
        members=[pair_report(rows, s[:n], s[n:], n_dropped) for s in scores],
        disagreement={
            "member_std_mean": float(z.std(0).mean()),
            "split_pairs": float(1 - agreed.mean()),
            "accuracy_agreed": float(correct[agreed].mean()) if agreed.any() else None,
            "accuracy_split": float(correct[~agreed].mean()) if (~agreed).any() else None,
        },
    )
