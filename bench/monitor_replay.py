"""Replay monitor, gate and do-no-harm settings over the over-optimisation grid's runs, tuning on some runs and
judging on others: the monitors are a function of the logs and the stopped run is its warn-only twin up to the stop,
so a setting can be judged on ``bench/overoptimization.py``'s twins without training anything.

    python bench/monitor_replay.py --grid GRID --split "tune=s0,s1@1 test=s2,s3@1"            # the defaults
    python bench/monitor_replay.py --grid GRID --split "tune=s0,s1@1 test=s2,s3@1" --search   # choose on tune
    python bench/monitor_replay.py --grid GRID '{"kl_limit": 0.1}' --score --healthy runs/demo/rl/health.jsonl

A setting is a JSON object of :class:`rlhfkit.monitors.MonitorConfig` fields, plus ``"gate"`` (keyword arguments of
:func:`rlhfkit.reward.gate.rm_gate`, judged on each cell's stored rm_eval report) and ``"no_harm": true`` (the
do-no-harm check on, the grid's validation member standing in for ``monitor.no_harm_reward``). Per cell: where the
gate refuses, the first stop is the gate's at step 0 and the SFT model is returned; else the stop, the last healthy
step and the checkpoints the stopped run averages follow from the twin's timeline
(:func:`overoptimization.stopped_from_twin`).
The returned model's gold is, with ``--score``, its held-out gold (the average rebuilt from the twin's checkpoints
and scored on the grid's held-out prompts, cached per set of steps; with ``"no_harm": true`` (off by default, as
``monitor.no_harm_reward`` is in rlhfkit), the do-no-harm check of :func:`rlhfkit.rl.healthy.no_harm_verdict` applied
with the setting's ``no_harm_margin`` on the validation member's paired scores);
without it an estimate: the twin's smoothed training-batch gold at the newest averaged step.

The criteria and pass rates are ``bench/overopt_protocol.py``'s. ``--search`` replays a grid of candidate
settings (:data:`SEARCH`) on the tuning runs, keeps the one with the most passes of the criteria about the returned
model (``near_peak``, ``not_below_sft``, ``no_false_stop``; ties: the fewest alerts on the healthy runs, then the most
stops ``in_time``, then the earlier in :data:`SEARCH`, the defaults now first) and reports it and the defaults on the
test runs; with ``--score`` the tuning runs' returned models are scored too (the training-curve estimate misjudges
returned averages by a few hundredths either way, as much as the criteria's margins). Healthy runs (``--healthy``):
every alert each setting would raise there (there should be none).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: bench.* from the repo root

from bench.overopt_protocol import CRITERIA, criteria, parse_split, pass_rates, rates_line, score

# candidate settings for --search, the defaults now first (ties keep the earlier: a change must earn its place on the
# tuning runs). KL pairs (kl_limit, kl_caution): a step above kl_caution is not healthy, so the returned model comes
# from below kl_caution whatever kl_limit stops at; they are searched together, kl_caution <= kl_limit.
KL_PAIRS = ((0.15, 0.1), (0.15, 0.12), (0.15, 0.15), (0.12, 0.1), (0.12, 0.12), (0.1, 0.1), (0.2, 0.1), (0.2, 0.12),
            (0.2, 0.15), (0.2, 0.2))  # fmt: skip
SEARCH = [
    {"kl_limit": kl, "kl_caution": caution, "reward_kl_slope": slope, "reward_kl_min_steps": steps,
     "gain_flattening_min_steps": gain, "gate": {"min_accuracy": acc, "max_pair_length_bias": pair}}
    for acc, pair, steps, (kl, caution), slope, gain in itertools.product(
        (0.6, 0.65), (0.5, None, 0.4), (30, 0, 15), KL_PAIRS, (0.006, 0.008), (30, 0, 15)
    )
]  # fmt: skip


def monitor_fields(setting: dict) -> dict:
    """The MonitorConfig fields of a setting (without ``gate`` and ``no_harm``)."""
    return {k: v for k, v in setting.items() if k not in ("gate", "no_harm")}


def monitor_config(setting: dict):
    """The :class:`rlhfkit.monitors.MonitorConfig` of a setting (no plots)."""
    from rlhfkit.monitors import MonitorConfig

    return MonitorConfig(health_plots=False, **monitor_fields(setting))


@functools.cache  # read once per run of this script: a search replays every timeline for each candidate
def load(path: str | Path) -> list[dict]:
    """A ``health.jsonl`` timeline without what the monitor wrote (alerts, active signals, stop)."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("active", "alerts", "stop")} for r in rows]


def replay(timeline: list[dict], config):
    """The monitor over a timeline; returns it and (first stop step, last healthy step then, its signal)."""
    from rlhfkit.monitors import HealthMonitor

    monitor, first = HealthMonitor(config), (None, None, None)
    for record in timeline:
        new = monitor._observe(dict(record))
        stop = next((a for a in new if a.action == "stop"), None)
        if stop is not None and first[0] is None:
            first = (record["step"], monitor.last_healthy_step, stop.signal)
    return monitor, first


def cells(grid: str, runs: list[tuple[int, int]]) -> list[Path]:
    """The finished cells (``record.json``) of ``runs`` (``(seed, threads)``) in the grid folder."""
    return [p.parent for s, t in runs for p in sorted(Path(grid, f"t{t}", f"seed{s}").glob("bias*/*/record.json"))]


def judge(cell: Path, setting: dict, scoring) -> dict:
    """One cell under ``setting``: the record's fields the criteria read, ``signal``, ``gate_passed`` and
    ``returned`` (``sft`` / ``final`` / ``avg a,b,c``, with ``(no_harm -> sft)`` when the check refused it)."""
    from rlhfkit.reward.evaluate import RewardModelReport
    from rlhfkit.reward.gate import rm_gate

    rec = _record(cell)
    gate = rm_gate(RewardModelReport(**rec["gate"]["report"]), **setting.get("gate", {}))
    row = {k: rec[k] for k in ("algorithm", "length_bias", "seed", "threads", "reward", "gold_sft", "gold_peak",
                               "gold_10pct_below_peak_step", "gold_final_unstopped", "eval_prompts",
                               "gold_smooth_se")}  # fmt: skip
    row["gate_passed"] = gate.passed
    if not gate.passed:
        return {**row, "stop_step": 0, "signal": "rm_gate", "returned": "sft", "gold_returned": rec["gold_sft"]}
    stopped = _stopped(cell, json.dumps(monitor_fields(setting), sort_keys=True))
    steps = stopped["averaged_steps"]
    row.update(stop_step=stopped["stop_step"], signal=stopped["first_alert"])
    if steps is None:
        row.update(returned="final", gold_returned=rec["gold_final_unstopped"])
    elif not steps:
        row.update(returned="sft", gold_returned=rec["gold_sft"])
    else:
        row["returned"] = "avg " + ",".join(map(str, steps))
        if scoring is None:
            curve = dict(zip(rec["curve"]["steps"], rec["curve"]["gold_smooth"]))
            row["gold_returned"] = curve[steps[-1]]
    if scoring is not None and row["returned"] != "sft":
        no_harm = monitor_config(setting) if setting.get("no_harm") else None
        row.update(_scored_return(cell, rec, steps, no_harm, scoring))
    return row


@functools.cache  # a cell's record (read-only here), read once for all the settings of a search
def _record(cell: Path) -> dict:
    return json.loads((cell / "record.json").read_text())


@functools.cache  # a monitor setting's replay of a cell: the same for every gate setting of a search
def _stopped(cell: Path, monitor: str) -> dict:
    from bench import overoptimization as grid

    return grid.stopped_from_twin(grid.load_timeline(cell / "unstopped"), monitor_config(json.loads(monitor)))


@functools.cache  # the same for every gate setting of a search
def _healthy_alerts(monitor: str, paths: tuple[str, ...]) -> tuple[list, ...]:
    """The alerts a monitor setting (its fields as JSON) raises on each healthy run's timeline."""
    config = monitor_config(json.loads(monitor))
    return tuple(replay(load(path), config)[0].alerts for path in paths)


def _scored_return(cell: Path, rec: dict, steps: list[int] | None, no_harm, scoring) -> dict:
    """The held-out gold of the returned model (rebuilt from the twin) and, with ``no_harm`` (the setting's
    MonitorConfig, or None: off), the do-no-harm check's verdict."""
    from bench import overoptimization as grid
    from rlhfkit.rl.healthy import no_harm_verdict

    twin, seed = cell / "unstopped", rec["seed"]
    root = cell.parent.parent
    sft_dir, rm_dir = root / "sft" / "model", cell.parent / f"rm-bias{rec['length_bias']:g}" / "model-rl"
    if steps is None:
        model, cache = Path(json.loads((twin / "result.json").read_text())["model_dir"]), twin / "final-scored.json"
    else:
        model = grid.rebuild_returned(twin, sft_dir, steps)
        cache = model / "scored.json"
    mine = grid.scored(model, cache, seed, rm_dir, scoring)
    out = {"gold_returned": mine["gold"]}
    if no_harm is not None:
        sft = grid.scored(sft_dir, cell.parent / "sft-scored.json", seed, rm_dir, scoring)
        verdict = no_harm_verdict(mine["check"], sft["check"], no_harm.no_harm_margin)
        out["no_harm"] = verdict
        if not verdict["keep"]:
            out.update(
                returned=f"{'final' if steps is None else 'avg'} (no_harm -> sft)", gold_returned=rec["gold_sft"]
            )
    return out


def evaluate(groups: dict[str, list[Path]], setting: dict, scoring) -> dict:
    """``{group: {"rows": [...], "rates": pass rates, "rates_gate_passed": over the cells past the gate}}``."""
    out = {}
    for name, group in groups.items():
        rows = [judge(c, setting, scoring) for c in group]
        for row in rows:
            row.update(criteria(row))
        out[name] = {
            "rows": rows,
            "rates": pass_rates(rows),
            "rates_gate_passed": pass_rates(r for r in rows if r["gate_passed"]),
        }
    return out


def markdown(result: dict) -> str:
    """The pass-rate table (one row per setting and group, past the gate too) and the per-cell table, in Markdown."""
    head = "| setting | runs | cells | " + " | ".join(CRITERIA) + " |"
    lines = [head, "|" + "---|" * (3 + len(CRITERIA))]
    interval = lambda x: f"{x['passed']}/{x['n']} ({x['ci95'][0]:.2f}-{x['ci95'][1]:.2f})"  # noqa: E731
    for label, entry in result["settings"].items():
        for name, g in entry["groups"].items():
            for scope, rates in (("all", g["rates"]), ("past the gate", g["rates_gate_passed"])):
                cells = f"{len(g['rows'])}" if scope == "all" else f"{sum(r['gate_passed'] for r in g['rows'])}"
                passes = " | ".join(map(interval, rates.values()))
                lines.append(f"| {label} | {name} ({scope}) | {cells} | {passes} |")
    lines += ["", "| setting | run | cell | SFT | peak | 10% fall | stop | returned | gold returned | final | fails |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, entry in result["settings"].items():
        for name, g in entry["groups"].items():
            for r in g["rows"]:
                cell = f"{r['algorithm']} {r['length_bias']:g} s{r['seed']}@{r['threads']} {r['reward']}"
                stop = "-" if r["stop_step"] is None else f"{r['signal']} @{r['stop_step']}"
                fails = ", ".join(c for c in CRITERIA if r[c] is False) or "-"
                lines.append(f"| {label} | {name} | {cell} | {r['gold_sft']:.3f} | {r['gold_peak']:.3f} | "
                             f"{r['gold_10pct_below_peak_step'] or 'never'} | {stop} | {r['returned']} | "
                             f"{r['gold_returned']:.3f} | {r['gold_final_unstopped']:.3f} | {fails} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="?", default="{}", help="MonitorConfig fields (and 'gate') as JSON")
    p.add_argument("--grid", required=True, help="bench/overoptimization.py output folder")
    p.add_argument("--split", default="tune=s0,s1@1 test=s2,s3@1", help="which runs tune and which judge")
    p.add_argument("--search", action="store_true", help="choose among SEARCH's settings on the tuning runs")
    p.add_argument("--score", action="store_true", help="held-out gold of the returned models (rebuilt, cached)")
    p.add_argument("--eval-prompts", type=int, default=6000)
    p.add_argument("--check-prompts", type=int, default=512)
    p.add_argument("--healthy", nargs="*", default=[], help="health.jsonl files of runs that must raise no alert")
    p.add_argument("--out", help="write the rows and pass rates here (json)")
    args = p.parse_args(argv)

    base = json.loads(args.settings)
    groups = {name: cells(args.grid, runs) for name, runs in parse_split(args.split).items()}
    tune = {k: v for k, v in groups.items() if k == "tune"}
    result = {"split": args.split, "settings": {}}
    chosen = base
    scoring = SimpleNamespace(eval_prompts=args.eval_prompts, check_prompts=args.check_prompts) if args.score else None
    if args.search:
        ranked = []
        for candidate in SEARCH:
            setting = {**base, **candidate}
            rates = evaluate(tune, setting, scoring)["tune"]["rates"]
            key = json.dumps(monitor_fields(setting), sort_keys=True)
            alerts = sum(map(len, _healthy_alerts(key, tuple(args.healthy))))
            (model, in_time) = score(rates)
            ranked.append(((model, -alerts, in_time), setting))
            print(f"tune {json.dumps(setting)}: {model} model passes, {alerts} alerts on the healthy runs, {in_time} "
                  f"in time; {rates_line(rates)}", flush=True)  # fmt: skip
        # the most passes of the returned-model criteria, then the fewest alerts on healthy runs, then the most stops
        # in time, then the first
        chosen = max(ranked, key=lambda r: r[0])[1]
    settings = {"defaults": {}, **({"chosen" if args.search else "given": chosen} if chosen else {})}
    for label, setting in settings.items():
        result["settings"][label] = {"setting": setting, "groups": evaluate(groups, setting, scoring)}
        for name, g in result["settings"][label]["groups"].items():
            for row in g["rows"]:
                print(json.dumps({k: v for k, v in row.items() if k != "no_harm"}), flush=True)
            print(f"{label} on {name}: {rates_line(g['rates'])}")
            print(f"{label} on {name}, past the gate: {rates_line(g['rates_gate_passed'])}")
        key = json.dumps(monitor_fields(setting), sort_keys=True)
        for path, alerts in zip(args.healthy, _healthy_alerts(key, tuple(args.healthy))):
            print(f"{label}: {path}: {len(alerts)} alerts {[(a.step, a.signal, a.action) for a in alerts]}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        Path(args.out).with_suffix(".md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
