"""The over-optimisation protocol (bench/overopt_protocol.py): splits, the four criteria and Wilson pass rates, on
hand-made grid records."""

from __future__ import annotations

import pytest

from bench.overopt_protocol import criteria, held_out_se, parse_split, pass_rates, rates_line, score, wilson


def record(**kw):
    base = {"gold_sft": 0.70, "gold_peak": 0.80, "gold_10pct_below_peak_step": None, "stop_step": None,
            "gold_returned": 0.79, "gold_final_unstopped": 0.79, "eval_prompts": 6000,
            "gold_smooth_se": 0.0}  # fmt: skip
    return {**base, **kw}


def test_split_assigns_threads_to_the_seeds_before_each_at():
    groups = parse_split("tune=s0,s1@1 test=s2,s3@1,s0,s1@2")
    assert groups == {"tune": [(0, 1), (1, 1)], "test": [(2, 1), (3, 1), (0, 2), (1, 2)]}
    assert parse_split(["tune=s4"]) == {"tune": [(4, 1)]}


@pytest.mark.parametrize("spec", ["tune", "tune=", "tune=0,1", "tune=s0@x", "tune=s0 test=s0@1"])
def test_split_refuses_malformed_or_overlapping_groups(spec):
    with pytest.raises(ValueError):
        parse_split(spec)


def test_noise_is_twice_the_held_out_se():
    assert 2 * held_out_se(6000) == pytest.approx(0.0118)
    assert held_out_se(1500) == pytest.approx(0.0118)  # 4x fewer prompts: twice the SE


def test_a_healthy_run_trained_to_the_end_passes_everything():
    assert criteria(record()) == {"in_time": True, "near_peak": True, "not_below_sft": True, "no_false_stop": True}


def test_a_late_stop_and_a_returned_model_below_sft_fail():
    r = record(gold_10pct_below_peak_step=40, stop_step=42, gold_returned=0.682, gold_final_unstopped=0.60)
    c = criteria(r)
    assert c["in_time"] is False and c["near_peak"] is False and c["not_below_sft"] is False
    assert c["no_false_stop"] is None  # the twin ended far below its peak: not a healthy-looking run


def test_sft_within_noise_passes_and_the_gate_stop_is_in_time():
    c = criteria(record(gold_10pct_below_peak_step=9, stop_step=0, gold_returned=0.689, gold_peak=0.72,
                        gold_final_unstopped=0.45))  # fmt: skip
    assert c["in_time"] and c["near_peak"] and c["not_below_sft"]  # 0.689 >= 0.70 - 0.0118
    assert not criteria(record(gold_returned=0.687))["not_below_sft"]


def test_a_stop_on_a_healthy_looking_run_is_a_false_stop():
    # the PPO seed-1 ensemble run: stopped at 12, the twin reached 0.802 against a smoothed peak of 0.819
    r = record(gold_peak=0.819, stop_step=12, gold_returned=0.715, gold_final_unstopped=0.802, gold_smooth_se=0.008)
    assert criteria(r)["no_false_stop"] is False  # 0.802 >= 0.819 - 2 * hypot(0.0059, 0.008) = 0.799
    assert criteria({**r, "gold_smooth_se": 0.0})["no_false_stop"] is None  # held-out noise alone: not within


def test_pass_rates_count_only_judged_rows_with_wilson_intervals():
    rows = [criteria(record()), criteria(record(stop_step=12, gold_returned=0.60)), criteria(record(
        gold_final_unstopped=0.5))]  # fmt: skip
    rates = pass_rates(rows)
    assert (rates["near_peak"]["passed"], rates["near_peak"]["n"]) == (2, 3)
    assert (rates["no_false_stop"]["passed"], rates["no_false_stop"]["n"]) == (1, 2)
    lo, hi = rates["near_peak"]["ci95"]
    assert lo == pytest.approx(0.2077, abs=1e-4) and hi == pytest.approx(0.9385, abs=1e-4)  # Wilson, 2 of 3
    assert score(rates) == (2 + 2 + 1, 3)  # the returned model's criteria first, then in_time
    assert "near_peak 2/3 (0.21-0.94)" in rates_line(rates)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(16, 16)[0] == pytest.approx(0.8063, abs=1e-4)
