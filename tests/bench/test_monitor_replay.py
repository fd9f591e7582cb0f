"""bench/monitor_replay.py's search: the defaults come first (a tie keeps them) and every candidate is a valid
setting; the bench-only keys stay out of MonitorConfig."""

from __future__ import annotations

import inspect

from bench.monitor_replay import KL_PAIRS, SEARCH, monitor_fields
from rlhfkit.monitors import MonitorConfig
from rlhfkit.reward.gate import rm_gate


def test_the_first_candidate_is_the_defaults_now():
    first, defaults = SEARCH[0], MonitorConfig(health_plots=False)
    assert all(getattr(defaults, k) == v for k, v in monitor_fields(first).items())
    gate_defaults = {k: p.default for k, p in inspect.signature(rm_gate).parameters.items() if k != "report"}
    assert all(gate_defaults[k] == v for k, v in first["gate"].items())


def test_every_candidate_is_a_valid_setting_with_caution_at_most_the_limit():
    assert len({repr(s) for s in SEARCH}) == len(SEARCH)
    assert all(caution <= limit for limit, caution in KL_PAIRS)
    for setting in SEARCH:
        config = MonitorConfig(health_plots=False, **monitor_fields(setting))
        assert config.kl_caution <= config.kl_limit


def test_bench_only_keys_are_not_monitor_fields():
    setting = {"kl_limit": 0.2, "gate": {"min_accuracy": 0.65}, "no_harm": True}
    assert monitor_fields(setting) == {"kl_limit": 0.2}
