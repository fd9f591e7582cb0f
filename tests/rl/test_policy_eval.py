"""``policy_eval``: the gain (with its standard error) and the win rates of one policy over another on the same
prompts."""

import math

import numpy as np
import pytest
from scipy import stats

from rlhfkit.rl.policy_eval import PolicyEval, paired_gain, paired_win_rates
from rlhfkit.rl.winrate import length_controlled_win_rate, win_rate


def test_paired_gain_is_the_mean_difference_and_the_paired_t_tests_standard_error():
    before = [0.70, 0.55, 0.90, 0.40, 0.80, 0.65]
    after = [0.75, 0.60, 0.88, 0.52, 0.85, 0.66]
    gain, sem = paired_gain(before, after)
    diff = np.subtract(after, before)  # 0.05, 0.05, -0.02, 0.12, 0.05, 0.01
    assert gain == pytest.approx(0.26 / 6)
    assert sem == pytest.approx(np.std(diff, ddof=1) / math.sqrt(6))
    t = stats.ttest_rel(after, before).statistic  # t = mean difference / its standard error
    assert gain / sem == pytest.approx(t)


def test_pairing_removes_the_prompt_to_prompt_variance():
    rng = np.random.default_rng(0)
    prompt = rng.normal(0.0, 1.0, 300)  # how hard each prompt is: shared by both policies
    before, after = prompt + rng.normal(0, 0.1, 300), prompt + 0.05 + rng.normal(0, 0.1, 300)
    gain, sem = paired_gain(before, after)
    unpaired = math.sqrt(np.var(before, ddof=1) / 300 + np.var(after, ddof=1) / 300)
    assert sem < unpaired / 5 and abs(gain - 0.05) < 3 * sem


def test_paired_gain_needs_two_equal_lists():
    with pytest.raises(ValueError, match="equal-length"):
        paired_gain([0.1, 0.2], [0.3])
    gain, sem = paired_gain([0.5], [0.7])
    assert gain == pytest.approx(0.2) and math.isnan(sem)


def test_per_prompt_values_stay_out_of_the_metrics_and_the_repr():
    ev = PolicyEval(proxy=1.0, gold=0.5, kl=0.0, kl_sem=0.0, length=3.0, tokens=2.0, truncated=0.0,
                    proxy_values=[1.0, 1.0], gold_values=[0.4, 0.6])  # fmt: skip
    assert "gold_values" not in repr(ev) and set(ev.metrics("rl")) == {
        "proxy_rl", "length_rl", "kl_rl", "kl_sem_rl", "truncated_rl", "gold_rl"}  # fmt: skip


def _eval(responses, proxy, gold=()) -> PolicyEval:
    return PolicyEval(
        proxy=float(np.mean(proxy)),
        gold=float(np.mean(gold)) if gold else None,
        kl=0.0,
        kl_sem=0.0,
        length=0.0,
        tokens=0.0,
        truncated=0.0,
        responses=list(responses),
        proxy_values=list(proxy),
        gold_values=list(gold),
    )


def test_paired_win_rates_by_gold_and_reward_model_with_the_same_answer_a_tie():
    sft = _eval(
        ["a", "bb", "same", "dddd", "e", "ff"], [0.1, 0.5, 0.30000001, 0.2, 0.9, 0.0], [0.2, 0.6, 0.4, 0.5, 0.9, 0.1]
    )
    rl = _eval(
        ["aaa", "b", "same", "dd", "eeeee", "f"], [0.4, 0.2, 0.3, 0.6, 0.8, 0.7], [0.3, 0.5, 0.4, 0.7, 0.95, 0.2]
    )
    metrics = paired_win_rates(sft, rl)
    gold = win_rate(rl.gold_values, sft.gold_values)  # by gold: win, loss, tie, win, win, win
    assert metrics["win_rate_gold"] == pytest.approx(4.5 / 6) == gold.rate
    assert (metrics["win_rate_gold_low"], metrics["win_rate_gold_high"]) == (gold.low, gold.high)
    # by the reward model the identical answer "same" ties although its two scores differ in the 8th digit
    assert metrics["win_rate_rm"] == pytest.approx(3.5 / 6) and metrics["win_rate_rm_ties"] == 1
    lc = length_controlled_win_rate([1, 0, 0.5, 1, 0, 1], [3, 1, 4, 2, 5, 1], [1, 2, 4, 4, 1, 2])
    assert metrics["lc_win_rate_rm"] == pytest.approx(lc.rate)  # lengths in characters, RL minus SFT
    assert not any("gold" in k for k in paired_win_rates(_eval(["x", "y"], [0, 1]), _eval(["z", "y"], [1, 1])))
