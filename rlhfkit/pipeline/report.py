"""The pipeline report: ``report.md`` + ``report.json`` + PNG plots, readable without a tracking service,
and the rich summary printed at the end of a run.

``report.md`` opens with a three-line verdict (:func:`verdict`): what improved and by how much, what the monitors
said and which model the RL stage returned, and whether the reward model is one to trust.

Plots (when the data exists): SFT loss over steps; the reward model's reliability diagram (written by
:mod:`rlhfkit.reward.evaluate`); the RL run at a glance (:func:`rlhfkit.monitors.plots.rl_figure`: reward, KL per
starting token against the monitors' levels, response length, the stop and the returned step); and, in the lab,
gold vs proxy reward of the SFT and RL policies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.core.io import pyplot, save_figure, write_json, write_text
from rlhfkit.monitors import MonitorConfig, load_timeline, read_metrics
from rlhfkit.monitors.plots import rl_figure
from rlhfkit.pipeline.round_config import round_stage
from rlhfkit.rl.winrate import rate_text

# The numbers each stage is judged by, in the order the summary shows them: (stage, metric, label).
HEADLINE = (
    ("sft", "eval_loss_before", "held-out loss before SFT"),
    ("sft", "eval_loss", "held-out loss after SFT"),
    ("preferences", "n_comparisons", "comparisons of the SFT model's answers (preferences.source: comparisons)"),
    ("preferences", "n_votes", "votes on them"),
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
    ("final_eval", "win_rate_gold", "win rate of RL over SFT by gold, ties half [95% interval]"),
    ("final_eval", "lc_win_rate_gold", "length-controlled win rate by gold"),
    ("final_eval", "win_rate_judge", "win rate of RL over SFT by the judge, ties half [95% interval]"),
    ("final_eval", "lc_win_rate_judge", "length-controlled win rate by the judge"),
    ("final_eval", "win_rate_rm", "win rate of RL over SFT by the reward model, ties half [95% interval]"),
    ("final_eval", "lc_win_rate_rm", "length-controlled win rate by the reward model"),
    ("final_eval", "proxy_sft", "reward-model score of the SFT policy"),
    ("final_eval", "proxy_rl", "reward-model score of the RL policy"),
    ("final_eval", "kl_rl", "KL of the RL policy to the SFT policy, held-out prompts (nats/seq)"),
)


GOOD_RM_ACCURACY = 0.7  # held-out accuracy below which a reward model is worth a worry (InstructGPT's: ~0.72)
GAIN_SES = 2  # a gain within this many standard errors of zero is reported as no clear gain


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def stage_headlines(manifest) -> list[tuple[str, str, str]]:
    """``(stage, label, value)`` for every headline number the run produced (a win rate with its interval)."""
    rows = []
    for stage, key, label in HEADLINE:
        metrics = manifest.stage(stage).get("metrics", {})
        if key in metrics:
            rows.append((stage, label, rate_text(metrics, key, 3) if f"{key}_low" in metrics else _fmt(metrics[key])))
    waiting = manifest.waiting()
    if waiting is not None:  # a run stopped for people's votes
        have = waiting[1]["waiting"]["have"]
        rows.append((waiting[0], "waiting for labels", f"{have['pairs_labelled']} of {have['pairs']} pairs labelled"))
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


# ------------------------------------------------------------------------------------------ verdict
def verdict(manifest, timeline: Sequence[Mapping[str, Any]] = (), out: Path | None = None) -> list[str]:
    """Three plain lines that open ``report.md``: what improved and by how much, what the monitors said and which
    model the RL stage returned, and whether the reward model is one to trust. ``timeline``: the rl stage's health
    records (the signals of its alerts); ``out``: the run folder (the gate's warnings in ``rm_eval/report.json``)."""
    return [
        _learned(manifest.stage("final_eval").get("metrics", {})),
        _monitors(manifest.stage("rl").get("metrics", {}), timeline),
        _reward_model(manifest, out),
    ]


def _learned(final: dict[str, Any]) -> str:
    if "gold_rl" in final:
        before, after, what = final["gold_sft"], final["gold_rl"], "gold reward"
    elif "proxy_rl" in final:
        before, after, what = final["proxy_sft"], final["proxy_rl"], "reward-model score (no gold reward measured)"
    else:
        return "**Improved:** not measured (no final evaluation of the RL policy)."
    return _improved(final, before, after, what) + _wins(final)


def _improved(final: dict[str, Any], before: float, after: float, what: str) -> str:
    line = f"{what} {before:.3f} (SFT) -> {after:.3f} (RL)"
    gain, sem = final.get("gold_gain"), final.get("gold_gain_sem")
    if "gold_rl" in final and gain is not None and sem is not None:
        line += f", a paired gain of {gain:+.3f} ± {sem:.3f} (SE) on {final.get('n_prompts', '?')} held-out prompts"
        if abs(gain) <= GAIN_SES * sem:
            return f"**Improved:** nothing clearly: {line}, within {GAIN_SES} standard errors of zero."
        if gain < 0:
            return f"**Improved:** no, RL is worse: {line}."
        ses = f" ({gain / sem:.0f} standard errors)" if sem else ""
        return f"**Improved:** yes, {line}{ses}."
    return f"**Improved:** {'yes' if after > before else 'no'}, {line} ({after - before:+.3f})."


def _wins(final: dict[str, Any]) -> str:
    """`` RL's answer wins ... by gold``: the first judge with a recorded win rate (gold, judge, reward model)."""
    for judge, by in (("gold", "gold"), ("judge", "the judge"), ("rm", "the reward model")):
        rate = rate_text(final, f"win_rate_{judge}")
        if rate is not None:
            return f" Win rate of RL's answers over SFT's by {by}: {rate} (ties half, 95% interval)."
    return ""


def _monitors(rl: dict[str, Any], timeline: Sequence[Mapping[str, Any]]) -> str:
    if not rl:
        return "**Monitors:** no RL stage recorded."
    alerts = [a for r in timeline for a in r.get("alerts", [])]
    warned = sorted({f"{a['signal']} (step {a['step']})" for a in alerts if a["action"] == "warn"})
    warnings = f"; warnings: {', '.join(warned)}" if warned else ""
    if not alerts and rl.get("alerts"):
        warnings = f"; {rl['alerts']} alert(s), see below"
    returned = rl.get("returned_step")
    if rl.get("stop_step") is not None:
        signal = next((a["signal"] for a in alerts if a["action"] == "stop"), "a stop alert")
        averaged = rl.get("averaged_steps") or []
        which = "the starting policy (no healthy checkpoint)" if returned == 0 else f"step {returned}"
        which += f" (average of steps {', '.join(map(str, averaged))})" if len(averaged) > 1 else ""
        return (
            f"**Monitors:** stopped at step {rl['stop_step']} by {signal}; the returned model is {which}, "
            f"not the last step{warnings}."
        )
    if warnings:
        return f"**Monitors:** no stop; the returned model is the last step ({returned}){warnings}."
    return f"**Monitors:** no alerts; the returned model is the last step ({returned})."


def _reward_model(manifest, out: Path | None) -> str:
    rm = manifest.stage("rm_eval").get("metrics", {})
    accuracy = rm.get("accuracy", manifest.stage("reward").get("metrics", {}).get("eval_accuracy"))
    if accuracy is None:
        return "**Reward model:** not evaluated."
    worries = []
    if accuracy < GOOD_RM_ACCURACY:
        worries.append(f"accuracy {accuracy:.2f} is below {GOOD_RM_ACCURACY}")
    if rm.get("gate_passed") is False:
        worries.append(f"the gate failed ({rm.get('gate_summary', '')})")
    gate = _read_json(out / "rm_eval" / "report.json") if out is not None else None
    worries += (gate or {}).get("gate", {}).get("warnings", [])
    if not worries:
        passed = ", gate passed" if rm.get("gate_passed") else ""
        return f"**Reward model:** fine: accuracy {accuracy:.2f} on held-out pairs{passed}."
    return f"**Reward model:** worry: {'; '.join(worries)} (accuracy {accuracy:.2f} on held-out pairs)."


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
    title = f"SFT: {out}, seed {cfg.seed}"
    p = _plot(out / "plots" / "sft_loss.png", [("loss", [("train", *_series(sft_log, "loss"))])], title)
    if p:
        plots["SFT loss"] = str(p)
    reliability = out / "rm_eval" / "reliability.png"
    if reliability.exists():
        plots["Reward-model reliability"] = str(reliability)
    timeline = _rl_timeline(cfg, out)
    p = _rl_plot(cfg, manifest, timeline)
    if p:
        plots["RL run: reward, KL, length"] = str(p)
    final = manifest.stage("final_eval").get("metrics", {})
    if "gold_sft" in final:
        p = _bars(out / "plots" / "gold_vs_proxy.png", final)
        plots["Gold vs proxy reward"] = str(p)

    data = {
        "output_dir": str(out),
        "stages": manifest.data["stages"],
        "headline": [{"stage": s, "measure": m, "value": v} for s, m, v in stage_headlines(manifest)],
        "plots": plots,
        **({"rounds": rounds_rows(cfg, manifest)} if cfg.rounds.count > 1 else {}),
    }
    json_path = write_json(out / "report.json", data)
    md_path = write_text(out / "report.md", _markdown(cfg, manifest, plots, verdict(manifest, timeline, out)))
    return {"json": str(json_path), "markdown": str(md_path), **plots}


def _rl_timeline(cfg, out: Path) -> list[dict[str, Any]]:
    """The monitors' health timeline of the rl stage; without one, the same records read from its log."""
    health = out / "rl" / MonitorConfig(**cfg.trl["monitor"]).health_file
    if health.exists():
        return load_timeline(health)
    rl_log = _read_json(out / "rl" / "log_history.json") or []
    return [{"step": row.get("step", i), **m} for i, row in enumerate(rl_log) if (m := read_metrics(row))]


def _rl_plot(cfg, manifest, timeline: list[dict[str, Any]]) -> Path | None:
    """``plots/rl.png``: :func:`rl_figure` of the rl stage, gold from its log (the lab), titled with the run."""
    if not timeline:
        return None
    out = Path(cfg.output_dir)
    rl = manifest.stage("rl").get("metrics", {})
    algorithm = rl.get("algorithm", cfg.rl.algorithm)
    gold = dict(zip(*_series(_read_json(out / "rl" / "log_history.json") or [], "lab/gold")))
    fig = rl_figure(
        timeline,
        MonitorConfig(**cfg.trl["monitor"]),
        title=f"RL: {algorithm}, {out}, seed {cfg.seed}",
        gold=gold,
        stop_step=rl.get("stop_step"),
        returned_step=rl.get("returned_step"),
        averaged_steps=rl.get("averaged_steps") or (),
        reward_label="reward margin (implicit)" if algorithm == "dpo" else "reward-model score (proxy)",
    )
    return save_figure(fig, out / "plots" / "rl.png")


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


def rounds_rows(cfg, manifest) -> list[dict[str, Any]]:
    """Per round of iterative RLHF (``rounds.count`` > 1): labels used (pairwise comparisons labelled), the reward
    model's accuracy on the held-out pairs of the new answers before (round r-1's, stale) and after the refresh, and on
    round 1's held-out set, the gold reward of the returned policy (round r's: on round r+1's sampled answers; the
    last round's: final_eval's, with its win rate over SFT), its KL to SFT at the end of RL, and monitor alerts."""
    rows = []
    final = manifest.stage("final_eval").get("metrics", {})
    for r in range(1, cfg.rounds.count + 1):
        prefs = manifest.stage(round_stage(r, "preferences")).get("metrics", {})
        rm, rl = manifest.stage(round_stage(r, "rm_eval")), manifest.stage(round_stage(r, "rl")).get("metrics", {})
        last = r == cfg.rounds.count
        gold = final.get("gold_rl") if last else manifest.stage(f"round-{r + 1}/comparisons").get("metrics", {})
        rows.append(
            {
                "round": r,
                "labels": prefs.get("n_labelled_pairs", cfg.lab.comparisons if r == 1 else None),
                "rm_accuracy_stale": rm.get("metrics", {}).get("accuracy_stale"),
                "rm_accuracy": rm.get("metrics", {}).get("accuracy"),
                "rm_accuracy_original": rm.get("metrics", {}).get("accuracy_original" if r > 1 else "accuracy"),
                "gold": gold if last else gold.get("gold_mean"),
                "win_rate_vs_sft": rate_text(final, "win_rate_gold", 3) if last and "win_rate_gold" in final else None,
                "kl_to_sft": rl.get("final_kl"),
                "alerts": rl.get("alerts"),
            }
        )
    return rows


def _rounds_markdown(cfg, manifest) -> list[str]:
    if cfg.rounds.count == 1:
        return []
    lines = [
        "",
        "## Rounds",
        "",
        "RM accuracy on the new answers: held-out pairs of the previous round's policy's answers (round 1: its own "
        "held-out set), before (the stale reward model) and after the refresh. Gold: the returned policy's answers "
        "(the last round's on the final evaluation's held-out prompts).",
        "",
        "| round | labels | RM acc. new answers, stale | refreshed | RM acc. round-1 held out | gold "
        "| win rate vs SFT | KL to SFT | alerts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("round", "labels", "rm_accuracy_stale", "rm_accuracy", "rm_accuracy_original", "gold")
    for row in rounds_rows(cfg, manifest):
        cells = [_fmt(row[k]) for k in (*keys, "win_rate_vs_sft", "kl_to_sft", "alerts")]
        lines.append("| " + " | ".join("n/a" if c == "None" else c for c in cells) + " |")
    return lines


def _markdown(cfg, manifest, plots: dict[str, str], verdict_lines: list[str]) -> str:
    out = Path(cfg.output_dir)
    lines = [f"# rlhfkit run: `{out}`", ""] + [f"- {line}" for line in verdict_lines]
    lines += ["", "| stage | measure | value |", "|---|---|---|"]
    lines += [f"| {s} | {m} | {v} |" for s, m, v in stage_headlines(manifest)]
    lines += _rounds_markdown(cfg, manifest)
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
