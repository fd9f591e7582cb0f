"""The reward-model report a person reads: ``report.md`` (:func:`markdown`, headline first), ``report.json`` and
two figures (reliability diagram, reward histograms), written by :func:`write_report`; :func:`headline_rows` is the
headline shared with ``rlhfkit eval-rm``'s terminal table."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from rlhfkit.core.io import pyplot, save_figure, write_json, write_text
from rlhfkit.reward.evaluate import QUANTILES, RewardModelReport
from rlhfkit.reward.gate import GateVerdict, percent

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- outputs
def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _short(text: Any, limit: int = 300) -> str:
    if isinstance(text, list):
        text = " | ".join(f"{m.get('role')}: {m.get('content')}" for m in text)
    text = str(text).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline_rows(report: RewardModelReport) -> list[tuple[str, str]]:
    """``(metric, value)`` rows shared by the markdown report and the CLI's table."""
    r = report
    return [
        ("pairs", f"{r.n_pairs}" + (f" ({r.n_dropped} too long, not scored)" if r.n_dropped else "")),
        ("accuracy (strict)", f"{r.accuracy:.3f} (95% CI {r.accuracy_ci95[0]:.3f}-{r.accuracy_ci95[1]:.3f})"),
        ("ties", f"{r.n_ties} ({r.tie_rate:.1%})"),
        ("ROC AUC", _num(r.auc)),
        ("ECE (sigmoid of margin)", _num(r.ece)),
        ("Brier score", _num(r.brier)),
        ("margin mean / std", f"{r.margin_mean:.3f} / {r.margin_std:.3f}"),
        (
            "margin correct / incorrect (separation)",
            f"{_num(r.margin_correct_mean)} / {_num(r.margin_incorrect_mean)} ({_num(r.margin_separation, 2)})",
        ),
        ("reward_mean / reward_std", f"{r.reward_mean:.4f} / {r.reward_std:.4f}"),
        ("chosen / rejected mean", f"{r.chosen_mean:.3f} / {r.rejected_mean:.3f}"),
        (f"Spearman(reward, length in {r.length_unit})", _num(r.length_spearman)),
        ("accuracy chosen longer / shorter", f"{_num(r.accuracy_chosen_longer)} / {_num(r.accuracy_chosen_shorter)}"),
        (
            "longer preferred / chosen longer in data",
            f"{percent(r.longer_preferred_rate)} / {percent(r.chosen_longer_rate)}",
        ),
    ]


def markdown(r: RewardModelReport, verdict: GateVerdict | None = None) -> str:
    """A human-readable report (``verdict`` adds the gate's decision at the top)."""
    lines = ["# Reward-model evaluation", ""]
    if verdict is not None:
        lines += [f"**Gate: {'PASSED' if verdict.passed else 'FAILED'}** — {verdict.summary}", ""]
        lines += [f"- reason: {x}" for x in verdict.reasons] + [f"- warning: {x}" for x in verdict.warnings]
        lines += [""]
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in headline_rows(r)]
    lines += ["", "## Calibration (reliability bins of P(chosen wins) = sigmoid(margin))", ""]
    lines += ["| bin | count | mean confidence | observed |", "|---|---|---|---|"]
    lines += [
        f"| {b['lo']:.1f}-{b['hi']:.1f} | {b['count']} | {_num(b['confidence'])} | {_num(b['accuracy'])} |"
        for b in r.reliability
    ]
    lines += [
        "",
        "## Reward distributions",
        "",
        "| | " + " | ".join(QUANTILES) + " |",
        "|---" * (len(QUANTILES) + 1) + "|",
    ]
    for name, q in (("chosen", r.chosen_quantiles), ("rejected", r.rejected_quantiles)):
        lines.append(f"| {name} | " + " | ".join(f"{q[k]:.3f}" for k in QUANTILES) + " |")
    lines += [
        "",
        f"Length ({r.length_unit}): chosen longer in {r.n_chosen_longer} pairs, shorter in {r.n_chosen_shorter}, "
        f"equal in {r.n_same_length}; Spearman(margin, length difference) {_num(r.length_margin_spearman)}.",
    ]
    for title, groups in (("Accuracy by subset", r.subsets), ("Accuracy by labeler agreement", r.agreement)):
        if groups:
            lines += ["", f"## {title}", "", "| group | pairs | accuracy | ties |", "|---|---|---|---|"]
            lines += [f"| {k} | {g['n']} | {g['accuracy']:.3f} | {g['ties']} |" for k, g in groups.items()]
    if r.worst_pairs:
        lines += ["", "## Worst-scored pairs (lowest margin)", "", "| # | margin | prompt | chosen | rejected |"]
        lines += ["|---|---|---|---|---|"]
        for w in r.worst_pairs:
            texts = " | ".join(_short(w.get(k, ""), 200) for k in ("prompt", "chosen", "rejected"))
            lines.append(f"| {w['index']} | {w['margin']:.3f} | {texts} |")
    return "\n".join(lines) + "\n"


def write_report(report: RewardModelReport, out_dir, verdict: GateVerdict | None = None) -> dict[str, Path]:
    """Write ``reliability.png``, ``rewards_hist.png``, ``report.md`` and ``report.json`` (last) into ``out_dir``.

    Each file is written to a temporary name and renamed (:mod:`rlhfkit.core.io`), so none is ever half-written;
    ``report.json`` is written last, so its presence means the whole report is there.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("reliability.png", "rewards_hist.png", "report.md", "report.json")}
    save_figure(_reliability_figure(report), paths["reliability.png"])
    save_figure(_rewards_figure(report), paths["rewards_hist.png"])
    write_text(paths["report.md"], markdown(report, verdict))
    data = report.to_dict()
    if verdict is not None:
        data["gate"] = verdict.to_dict()
    write_json(paths["report.json"], data)
    return paths


def _reliability_figure(report: RewardModelReport):
    """The reliability diagram: observed win rate per bin of ``sigmoid(margin)`` against perfect calibration."""
    fig, ax = pyplot().subplots(figsize=(4.5, 4.5))
    bins = [b for b in report.reliability if b["count"]]
    mids = [(b["lo"] + b["hi"]) / 2 for b in report.reliability]
    width = 1.0 / max(len(report.reliability), 1)
    accuracy = [b["accuracy"] or 0.0 for b in report.reliability]
    ax.bar(mids, accuracy, width=width, edgecolor="k", alpha=0.6, label="observed")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C3", label="bin mean")
    ax.set(xlabel="predicted P(win) = sigmoid(margin)", ylabel="observed win rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"reliability (ECE {report.ece:.3f}, n={report.n_pairs})")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _rewards_figure(report: RewardModelReport):
    """Histograms of the chosen and rejected rewards on shared edges."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    edges = report.hist_edges
    ax.stairs(report.chosen_hist, edges, fill=True, alpha=0.5, label=f"chosen (mean {report.chosen_mean:.2f})")
    ax.stairs(report.rejected_hist, edges, fill=True, alpha=0.5, label=f"rejected (mean {report.rejected_mean:.2f})")
    ax.set(xlabel="reward", ylabel="responses", title=f"rewards (accuracy {report.accuracy:.3f})")
    ax.legend(fontsize=8)
    return fig
