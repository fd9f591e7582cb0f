"""The monitors' record: the ``health.jsonl`` timeline, a rich table, and the Goodhart / length-entropy plots."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.core.io import pyplot, save_figure
from rlhfkit.monitors.config import SERIES, SERIES_LABELS, SIGNALS, MonitorConfig


def load_timeline(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``health.jsonl`` file (or the run folder holding it)."""
    path = Path(path)
    path = path / "health.jsonl" if path.is_dir() else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _thresholds(config: MonitorConfig) -> dict[str, str]:
    c = config
    return {
        "kl_caution": f"> {c.kl_caution:g}/start token",
        "kl_limit": f"> {c.kl_limit:g}/start token",
        "ensemble_disagreement": f"x{c.disagreement_growth:g} start",
        "reward_gain_flattening": f"gain < {c.gain_flattening_fraction:g}x best",
        "negative_kl": f"< -{c.negative_kl_tolerance:g}",
        "length_drift": f"x{c.length_drift_ratio:g} start",
        "entropy_collapse": f"< {c.entropy_collapse_fraction:g}x start",
        "reward_variance": f"zero-std > {c.reward_zero_std_fraction:g}",
        "reward_kl_race": f"KL/start token/step > {c.reward_kl_slope:g}",
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
    plt = pyplot()
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
            ax.annotate(
                f"{signal} @ {record['step']}",
                (record["kl"], 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="red",
            )
    ax.set_title("Reward vs KL (Goodhart curve)")
    paths.append(save_figure(fig, out_dir / "health_reward_kl.png"))

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, name in zip(axes, ("length", "entropy")):
        xy = [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
        ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", ms=3)
        ax.set_ylabel(SERIES_LABELS[name])
        for record in first_alerts.values():
            ax.axvline(record["step"], ls="--", lw=0.8, color="red")
    for signal, record in first_alerts.items():
        axes[0].annotate(
            signal,
            (record["step"], 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="red",
        )
    axes[-1].set_xlabel("global step")
    axes[0].set_title("Response length and entropy")
    paths.append(save_figure(fig, out_dir / "health_length_entropy.png"))
    return paths
