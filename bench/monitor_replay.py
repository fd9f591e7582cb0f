"""Replay monitor settings over finished runs: the monitors are a function of the logs, so a setting can be judged on
``bench/overoptimization.py``'s warn-only twins and on healthy runs without training anything.

    python bench/monitor_replay.py --grid GRID                                # the defaults
    python bench/monitor_replay.py --grid GRID '{"smoothing_steps": 5}' --healthy runs/demo/rl/health.jsonl

Per grid cell: the first stop alert vs the step where the smoothed gold fell 10% below its peak, the step returned
(the last healthy logged step, the newest of the checkpoints a stop averages; the stopped runs save one at each) and
its gold on the run's smoothed training-batch curve (the SFT policy's held-out gold when none is healthy) -- an
estimate: the grid itself scores the returned model, the average of the last healthy checkpoints, on held-out prompts.
Per healthy run: every alert it would raise (there should be none).
"""

from __future__ import annotations

import argparse
import glob
import json
import os


def load(path: str) -> list[dict]:
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="?", default="{}", help="MonitorConfig fields as JSON")
    p.add_argument("--grid", help="bench/overoptimization.py output folder (its <cell>/record.json, unstopped logs)")
    p.add_argument("--healthy", nargs="*", default=[], help="health.jsonl files of runs that must raise no alert")
    args = p.parse_args(argv)
    from rlhfkit.monitors import MonitorConfig

    config = MonitorConfig(health_plots=False, **json.loads(args.settings))
    cells = []
    for path in sorted(glob.glob(f"{args.grid}/seed*/bias*/*/record.json") if args.grid else []):
        rec, cell = json.load(open(path)), os.path.dirname(path)
        _, (stop, healthy, signal) = replay(load(f"{cell}/unstopped/health.jsonl"), config)
        curve = dict(zip(rec["curve"]["steps"], rec["curve"]["gold_smooth"]))
        returned = healthy if stop is not None else rec["curve"]["steps"][-1]
        gold = rec["gold_sft"] if not returned else curve[returned]
        fall = rec["gold_10pct_below_peak_step"]
        row = {k: rec[k] for k in ("algorithm", "length_bias", "seed", "reward", "gold_sft", "gold_peak")}
        row.update(fall_10pct=fall, stop=stop, signal=signal, returned=returned, gold_returned_train=round(gold, 3),
                   in_time=fall is None or stop is not None and stop < fall, near_peak=gold >= rec["gold_peak"] - 0.05,
                   above_sft=gold > rec["gold_sft"])  # fmt: skip
        cells.append(row)
        print(json.dumps(row))
    healthy = {
        path: [(a.step, a.signal, a.action) for a in replay(load(path), config)[0].alerts] for path in args.healthy
    }
    for path, alerts in healthy.items():
        print(f"{path}: {len(alerts)} alerts {alerts}")
    for bias in sorted({c["length_bias"] for c in cells}):
        group = [c for c in cells if c["length_bias"] == bias]
        counts = {k: sum(c[k] for c in group) for k in ("in_time", "near_peak", "above_sft")}
        print(f"length bias {bias:g}: " + ", ".join(f"{k} {v}/{len(group)}" for k, v in counts.items()))
    return {"cells": cells, "healthy": healthy}


if __name__ == "__main__":
    main()
