"""The over-optimisation grid's protocol: which runs tune the defaults and which judge them, the four criteria a run
passes or fails, and pass rates with 95% Wilson intervals. Pure functions of the grid's records
(``bench/overoptimization.py``'s ``record.json``), used by ``bench/monitor_replay.py`` and tested on hand-made
records (``tests/bench/test_overopt_protocol.py``).

A *run* is ``(seed, threads)``: another torch thread count makes other numbers, as another seed does. A *split*
says which runs tune and which judge::

    tune=s0,s1@1 test=s2,s3@1,s0,s1@2

``@T`` gives the thread count of the seeds listed since the previous ``@`` (seeds without one run at 1 thread).

Criteria, per grid cell (a record; ``noise`` is twice the held-out gold's standard error, 0.012 at 6000 prompts):

* ``in_time``: the first stop (the reward-model gate's at step 0 counts) comes before the smoothed training-batch gold
  falls 10% below its peak; a run whose gold never falls that far passes;
* ``near_peak``: the returned model's held-out gold is at least the smoothed gold peak - 0.05;
* ``not_below_sft``: the returned model's held-out gold is at least the SFT policy's - ``noise``;
* ``no_false_stop``: judged only on *healthy-looking* runs -- the warn-only twin's final held-out gold is within noise
  of the peak (2 x the root sum of squares of the held-out standard error and the smoothed curve's, ``gold_smooth_se``)
  -- and passed when nothing stopped the run (neither a monitor nor the gate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HELD_OUT_SE = 0.0059  # one model's held-out gold on 6000 prompts: std between 6 draws of prompts
HELD_OUT_PROMPTS = 6000
PEAK_TOLERANCE = 0.05  # returned >= peak - this
CRITERIA = ("in_time", "near_peak", "not_below_sft", "no_false_stop")
MODEL_CRITERIA = ("near_peak", "not_below_sft", "no_false_stop")  # about the returned model: they rank first


def held_out_se(prompts: int) -> float:
    """Standard error of one model's held-out gold on ``prompts`` prompts (scaled from the measured 0.0059 at 6000)."""
    return HELD_OUT_SE * math.sqrt(HELD_OUT_PROMPTS / prompts)


def parse_split(spec: Sequence[str] | str) -> dict[str, list[tuple[int, int]]]:
    """``"tune=s0,s1@1 test=s2,s3@1,s0,s1@2"`` -> ``{"tune": [(0, 1), (1, 1)], "test": [(2, 1), (3, 1), (0, 2),
    (1, 2)]}``; refuses a run in two groups, an empty group and malformed items."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for part in spec.split() if isinstance(spec, str) else spec:
        name, sep, items = part.partition("=")
        if not sep or not name or not items:
            raise ValueError(f"split group {part!r} is not NAME=s0,s1@1 (e.g. tune=s0,s1@1)")
        runs, pending = [], []
        for item in items.split(","):
            seed, at, threads = item.partition("@")
            if not seed.startswith("s") or not seed[1:].isdigit() or (at and not threads.isdigit()):
                raise ValueError(f"split item {item!r} in {part!r} is not s<seed> or s<seed>@<threads> (e.g. s0@1)")
            pending.append(int(seed[1:]))
            if at:
                runs += [(s, int(threads)) for s in pending]
                pending = []
        runs += [(s, 1) for s in pending]
        groups[name] = runs
    seen: dict[tuple[int, int], str] = {}
    for name, runs in groups.items():
        for run in runs:
            if run in seen:
                raise ValueError(f"run seed {run[0]} at {run[1]} thread(s) is in both {seen[run]!r} and {name!r}")
            seen[run] = name
    return groups


def healthy_looking(record: Mapping[str, Any]) -> bool:
    """The warn-only twin's final held-out gold is within noise of the smoothed gold peak (see the module doc)."""
    se = math.hypot(held_out_se(record.get("eval_prompts", HELD_OUT_PROMPTS)), record.get("gold_smooth_se", 0.0))
    return record["gold_final_unstopped"] >= record["gold_peak"] - 2 * se


def criteria(record: Mapping[str, Any]) -> dict[str, bool | None]:
    """The four criteria of one cell (None: not judged, ``no_false_stop`` on a run that is not healthy-looking).
    Reads ``gold_sft``, ``gold_peak``, ``gold_10pct_below_peak_step``, ``stop_step`` (None: no stop; 0: the gate),
    ``gold_returned``, ``gold_final_unstopped`` and optionally ``eval_prompts``, ``gold_smooth_se``."""
    noise = 2 * held_out_se(record.get("eval_prompts", HELD_OUT_PROMPTS))
    fall, stop = record["gold_10pct_below_peak_step"], record["stop_step"]
    return {
        "in_time": fall is None or (stop is not None and stop < fall),
        "near_peak": record["gold_returned"] >= record["gold_peak"] - PEAK_TOLERANCE,
        "not_below_sft": record["gold_returned"] >= record["gold_sft"] - noise,
        "no_false_stop": (stop is None) if healthy_looking(record) else None,
    }


def wilson(passed: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of ``passed`` of ``n`` ((0, 1) when n is 0)."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return 0.0, 1.0
    lo, hi = proportion_confint(passed, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def pass_rates(rows: Iterable[Mapping[str, bool | None]]) -> dict[str, dict[str, Any]]:
    """criterion -> ``{"passed", "n", "rate", "ci95"}`` over the rows that judge it (a row: :func:`criteria`)."""
    rows = list(rows)
    out = {}
    for name in CRITERIA:
        judged = [r[name] for r in rows if r.get(name) is not None]
        passed = sum(judged)
        out[name] = {
            "passed": passed,
            "n": len(judged),
            "rate": passed / len(judged) if judged else None,
            "ci95": wilson(passed, len(judged)),
        }
    return out


def score(rates: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
    """How a setting ranks on the tuning runs (higher is better): first the passes of the criteria about the model a
    user gets (``near_peak``, ``not_below_sft``, ``no_false_stop``: the issue's "done"), then ``in_time``'s -- a stop
    after the 10% fall costs training time, not the returned model, which is the healthy checkpoints' average."""
    model = sum(rates[name]["passed"] for name in MODEL_CRITERIA)
    return model, rates["in_time"]["passed"]


def rates_line(rates: Mapping[str, Mapping[str, Any]]) -> str:
    """``in_time 15/16 (0.72-0.99), ...`` -- a pass-rate table's cells."""
    return ", ".join(
        f"{name} {r['passed']}/{r['n']} ({r['ci95'][0]:.2f}-{r['ci95'][1]:.2f})" for name, r in rates.items()
    )
