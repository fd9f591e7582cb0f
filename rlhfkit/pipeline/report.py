"""The pipeline report: ``report.md`` + ``report.json`` + PNG plots, readable without a tracking service,
and the rich summary printed at the end of a run.

Plots (when the data exists): SFT loss over steps; the reward model's reliability diagram (written by
:mod:`rlhfkit.reward.evaluate`); RL reward, KL and response length over steps; and, in the lab, gold vs
proxy reward of the SFT and RL policies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlhfkit.core.io import pyplot, save_figure, write_json, write_text
from rlhfkit.monitors import read_metrics

# The numbers each stage is judged by, in the order the summary shows them: (stage, metric, label).
HEADLINE = (
    ("sft", "eval_loss_before", "held-out loss before SFT"),
    ("sft", "eval_loss", "held-out loss after SFT"),
    ("preferences", "gold_agreement_unfiltered", "labels agreeing with gold, unfiltered"),
    ("preferences", "gold_agreement_filtered", "labels agreeing with gold, agreement-filtered"),
    ("preferences", "kept_share", "share of comparisons kept"),
    ("preferences", "flagged_labelers", "unreliable labelers flagged"),
    ("reward", "eval_accuracy", "reward-model accuracy (held out)"),
    ("rm_eval", "accuracy", "reward-model accuracy vs gold (rm_eval)"),
    ("rm_eval", "auc", "reward-model ROC AUC"),
    ("rm_eval", "gate_passed", "gate passed"),
    ("rl", "algorithm", "RL algorithm"),
    ("rl", "final_kl", "KL to the SFT model at the end (nats/seq)"),
    ("rl", "alerts", "monitor alerts"),
    ("rl", "rounds_done", "rejection-sampling rounds done"),
    ("rl", "implicit_accuracy", "DPO implicit-reward accuracy vs gold (held-out pairs)"),
    ("rl", "implicit_auc", "DPO implicit-reward ROC AUC"),
    ("rl", "returned_step", "RL step whose weights the stage returns"),
    ("final_eval", "gold_sft", "gold reward of the SFT policy"),
    ("final_eval", "gold_rl", "gold reward of the RL policy"),
    ("final_eval", "gold_gain", "gold-reward gain of RL over SFT"),
    ("final_eval", "gold_gain_sem", "its standard error (per-prompt differences, same prompts)"),
    ("final_eval", "proxy_sft", "reward-model score of the SFT policy"),
    ("final_eval", "proxy_rl", "reward-model score of the RL policy"),
    ("final_eval", "kl_rl", "KL of the RL policy to the SFT policy, held-out prompts (nats/seq)"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def stage_headlines(manifest) -> list[tuple[str, str, str]]:
    """``(stage, label, value)`` for every headline number the run produced."""
    rows = []
    for stage, key, label in HEADLINE:
        metrics = manifest.stage(stage).get("metrics", {})
        if key in metrics:
            rows.append((stage, label, _fmt(metrics[key])))
    return rows


def print_summary(console, manifest, wall_seconds: float | None = None) -> None:
    """A rich table of the stages' headline numbers."""
    from rich.table import Table

    table = Table(title="rlhfkit run summary")
    table.add_column("stage")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for stage, label, value in stage_headlines(manifest):
        table.add_row(stage, label, value)
    console.print(table)
    if wall_seconds is not None:
        console.print(f"wall time: {wall_seconds:.0f} s")


# ------------------------------------------------------------------------------------------ plots
def _series(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(row.get("step", i), row[key]) for i, row in enumerate(log_history) if key in row]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot(path: Path, panels: list[tuple[str, list[tuple[str, list, list]]]], title: str) -> Path | None:
    """Save one PNG with a panel per (ylabel, [(label, xs, ys), ...]); None when no panel has data."""
    panels = [(ylabel, [s for s in series if s[1]]) for ylabel, series in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels):
        for label, xs, ys in series:
            ax.plot(xs, ys, marker="o", markersize=2.5, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def write_pipeline_report(cfg, manifest) -> dict[str, str]:
    """Write ``report.md``, ``report.json`` and the plots into the run folder; returns their paths."""
    out = Path(cfg.output_dir)
    plots: dict[str, str] = {}
    sft_log = _read_json(out / "sft" / "log_history.json") or []
    p = _plot(out / "plots" / "sft_loss.png", [("loss", [("train", *_series(sft_log, "loss"))])], "SFT")
    if p:
        plots["SFT loss"] = str(p)
    reliability = out / "rm_eval" / "reliability.png"
    if reliability.exists():
        plots["Reward-model reliability"] = str(reliability)
    rl_log = _read_json(out / "rl" / "log_history.json") or []
    # every algorithm's log on one scale (the monitors' reading: KL in nats per sequence, length in tokens)
    series = [{"step": row.get("step", i), **m} for i, row in enumerate(rl_log) if (m := read_metrics(row))]
    reward = "reward margin (implicit)" if cfg.rl.algorithm == "dpo" else "reward-model score"
    p = _plot(
        out / "plots" / "rl.png",
        [
            (reward, [("proxy", *_series(series, "reward")), ("gold", *_series(rl_log, "lab/gold"))]),
            ("KL to SFT, nats/sequence", [("kl", *_series(series, "kl"))]),
            ("response length (tokens)", [("length", *_series(series, "length"))]),
        ],
        f"RL ({cfg.rl.algorithm})",
    )
    if p:
        plots["RL reward / KL / length"] = str(p)
    final = manifest.stage("final_eval").get("metrics", {})
    if "gold_sft" in final:
        p = _bars(out / "plots" / "gold_vs_proxy.png", final)
        plots["Gold vs proxy reward"] = str(p)

    data = {
        "output_dir": str(out),
        "stages": manifest.data["stages"],
        "headline": [{"stage": s, "measure": m, "value": v} for s, m, v in stage_headlines(manifest)],
        "plots": plots,
    }
    json_path = write_json(out / "report.json", data)
    md_path = write_text(out / "report.md", _markdown(cfg, manifest, plots))
    return {"json": str(json_path), "markdown": str(md_path), **plots}


def _bars(path: Path, final: dict[str, Any]) -> Path:
    fig, ax = pyplot().subplots(figsize=(5, 3.4))
    labels = ["SFT policy", "RL policy"]
    width = 0.38
    xs = range(2)
    ax.bar([x - width / 2 for x in xs], [final["gold_sft"], final["gold_rl"]], width, label="gold reward")
    if "proxy_sft" in final:
        ax.bar([x + width / 2 for x in xs], [final["proxy_sft"], final["proxy_rl"]], width, label="reward model")
    ax.set_xticks(list(xs), labels)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
    ax.set_title("Lab: gold vs proxy reward on held-out prompts")
    fig.tight_layout()
    return save_figure(fig, path)


def _markdown(cfg, manifest, plots: dict[str, str]) -> str:
    out = Path(cfg.output_dir)
    lines = [f"# rlhfkit run: `{out}`", "", "| stage | measure | value |", "|---|---|---|"]
    lines += [f"| {s} | {m} | {v} |" for s, m, v in stage_headlines(manifest)]
    lines += ["", "## Stages", "", "| stage | status | finished | outputs |", "|---|---|---|---|"]
    for name, entry in manifest.data["stages"].items():
        outputs = ", ".join(f"{k}: `{v}`" for k, v in entry.get("outputs", {}).items())
        lines.append(f"| {name} | {entry.get('status')} | {entry.get('finished', '')} | {outputs} |")
    rl = manifest.stage("rl").get("metrics", {})
    alerts = rl.get("alert_messages") or []
    if alerts:
        lines += ["", "## Monitor alerts", ""] + [f"- {a}" for a in alerts]
    skipped = manifest.stage("rl").get("metrics", {}).get("skipped") or []
    if skipped:
        algorithm = manifest.stage("rl").get("metrics", {}).get("algorithm", cfg.rl.algorithm)
        lines += ["", f"## What {algorithm} does not use", ""] + [f"- {s}" for s in skipped]
    if rl.get("returned_reason"):
        lines += ["", "## Returned RL model", "", f"Step {rl.get('returned_step')}: {rl['returned_reason']}"]
    gate = manifest.stage("rm_eval").get("metrics", {}).get("gate_reasons") or []
    if gate:
        lines += ["", "## Reward-model gate", ""] + [f"- {r}" for r in gate]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"### {title}\n\n![{title}]({Path(p).relative_to(out)})\n" for title, p in plots.items()]
    return "\n".join(lines) + "\n"
