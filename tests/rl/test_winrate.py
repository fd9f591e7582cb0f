"""``rl.winrate``: win rates of a policy over a reference on paired prompts, their intervals, length control."""

import math

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from statsmodels.stats.proportion import proportion_confint

from rlhfkit.rl.winrate import (
    Z95,
    length_controlled_win_rate,
    outcomes,
    win_rate,
    win_rate_from_outcomes,
    win_rate_metrics,
)


# ----------------------------------------------------------------------------- the win rate and its interval
def test_outcomes_count_a_tie_as_one_half_and_identical_answers_tie():
    policy = [0.9, 0.2, 0.5, 0.7, 0.3000001]
    ref = [0.1, 0.6, 0.5, 0.7, 0.3]
    assert outcomes(policy, ref).tolist() == [1.0, 0.0, 0.5, 0.5, 1.0]
    assert outcomes(policy, ref, same_answer=[False, False, False, False, True]).tolist() == [1, 0, 0.5, 0.5, 0.5]
    wr = win_rate(policy, ref)
    assert (wr.rate, wr.n, wr.ties) == (pytest.approx(3 / 5), 5, 2)
    with pytest.raises(ValueError, match="equal-length"):
        win_rate([0.1, 0.2], [0.3])


def test_without_ties_the_interval_is_wilsons():
    for wins, n in ((7, 10), (0, 12), (12, 12), (131, 200)):
        wr = win_rate_from_outcomes([1.0] * wins + [0.0] * (n - wins))
        low, high = proportion_confint(wins, n, alpha=0.05, method="wilson")
        assert wr.rate == pytest.approx(wins / n) and wr.ties == 0
        assert (wr.low, wr.high) == pytest.approx((low, high), abs=1e-12)


def test_hand_made_ties_against_the_score_intervals_quadratic():
    o = [1, 1, 1, 0.5, 0.5, 0, 1, 0.5, 0, 1]  # 5 wins, 3 ties, 2 losses: rate 6.5 / 10
    wr = win_rate_from_outcomes(o)
    assert (wr.rate, wr.n, wr.ties) == (pytest.approx(0.65), 10, 3)
    # every p with (0.65 - p)^2 = z^2 / n * (p (1 - p) - c), c = 3 ties * 1/4 / 10
    k, c = Z95**2 / 10, 0.075
    roots = np.roots([1 + k, -(2 * 0.65 + k), 0.65**2 + k * c])
    assert (wr.low, wr.high) == pytest.approx(sorted(roots), abs=1e-12)
    wilson_half_ties = proportion_confint(6.5, 10, method="wilson")  # ties as half a Bernoulli win: wider
    assert wr.high - wr.low < wilson_half_ties[1] - wilson_half_ties[0]


def test_for_many_prompts_the_interval_is_the_normal_one_of_the_outcomes_mean():
    rng = np.random.default_rng(0)
    o = rng.choice([0.0, 0.5, 1.0], size=20000, p=[0.3, 0.3, 0.4])
    wr = win_rate_from_outcomes(o)
    half = Z95 * o.std() / math.sqrt(len(o))
    assert (wr.low, wr.high) == pytest.approx((o.mean() - half, o.mean() + half), abs=2e-5)


@pytest.mark.parametrize(("n", "p_win", "p_tie"), [(30, 0.5, 0.0), (60, 0.55, 0.4), (200, 0.15, 0.8), (40, 0.8, 0.1)])
def test_intervals_cover_the_true_win_rate(n, p_win, p_tie):
    rng = np.random.default_rng(n)
    truth = p_win + p_tie / 2
    draws = rng.choice([1.0, 0.5, 0.0], size=(4000, n), p=[p_win, p_tie, 1 - p_win - p_tie])
    covered = [wr.low <= truth <= wr.high for wr in map(win_rate_from_outcomes, draws)]
    # 4000 draws: the share's own standard error is 0.0035; a score interval is near-nominal at these sizes
    assert 0.935 <= np.mean(covered) <= 0.975


def test_judge_probabilities_are_outcomes_too():
    wr = win_rate_from_outcomes([0.9, 0.8, 0.5, 0.3, 1.0])
    assert wr.rate == pytest.approx(0.7) and wr.ties == 1 and 0 < wr.low < 0.7 < wr.high < 1
    for bad in ([], [1.2], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="outcome|non-empty"):
            win_rate_from_outcomes(bad)


def test_every_prompt_tied_is_the_point_one_half():
    wr = win_rate_from_outcomes([0.5] * 8)
    assert (wr.rate, wr.low, wr.high, wr.ties) == (0.5, pytest.approx(0.5), pytest.approx(0.5), 8)


# ----------------------------------------------------------------------------- length-controlled
def _reference_lc(o, diff):
    """The same logistic model fitted by scikit-learn: a tie (or probability q) is a win with weight q plus a loss
    with weight 1 - q, which has the fractional logit's likelihood."""
    x = np.tanh(diff / diff.std(ddof=1))[:, None]
    X, y, w = np.vstack([x, x]), np.r_[np.ones(len(o)), np.zeros(len(o))], np.r_[o, 1 - o]
    fit = LogisticRegression(penalty=None, tol=1e-10, max_iter=10000).fit(X, y, sample_weight=w)
    return float(expit(fit.intercept_[0]))


def test_length_controlled_rate_matches_a_weighted_logistic_regression():
    o = np.array([1, 1, 0.5, 0, 1, 0, 1, 0.5, 1, 0, 1, 1])
    diff = np.array([30, 12, 0, -5, 40, -22, 3, 0, 18, -8, -3, 25], dtype=float)
    lc = length_controlled_win_rate(o, lengths_policy=100 + diff, lengths_ref=np.full(12, 100.0))
    assert lc.rate == pytest.approx(_reference_lc(o, diff), abs=1e-5)
    assert lc.n == 12 and lc.ties == 2 and lc.low < lc.rate < lc.high


def test_a_judge_that_prefers_longer_answers_gives_a_high_raw_rate_and_an_even_length_controlled_one():
    # Equal quality, the policy's answers ~60 characters longer; the judge's logit rises with the length difference.
    rng = np.random.default_rng(0)
    n = 1000
    len_ref = rng.normal(200, 40, n)
    len_policy = len_ref + rng.normal(60, 50, n)
    diff = len_policy - len_ref
    judged = (rng.random(n) < expit(1.5 * np.tanh(diff / diff.std(ddof=1)))).astype(float)
    raw = win_rate_from_outcomes(judged)
    lc = length_controlled_win_rate(judged, len_policy, len_ref)
    assert raw.low > 0.65  # measured 0.72 [0.69, 0.75]
    assert lc.low < 0.5 < lc.high and abs(lc.rate - 0.5) < 0.05


def test_length_control_keeps_a_real_quality_difference():
    rng = np.random.default_rng(1)
    n = 1000
    len_ref = rng.normal(200, 40, n)
    len_policy = len_ref + rng.normal(0, 50, n)  # no length difference on average, a better policy
    diff = len_policy - len_ref
    judged = (rng.random(n) < expit(0.8 + 1.0 * np.tanh(diff / diff.std(ddof=1)))).astype(float)
    lc = length_controlled_win_rate(judged, len_policy, len_ref)
    assert lc.low < expit(0.8) < lc.high and lc.low > 0.6


def test_length_controlled_intervals_cover():
    rng = np.random.default_rng(2)
    theta, phi, n, covered = 0.4, 1.0, 150, []
    for _ in range(300):
        diff = rng.normal(30, 60, n)
        x = np.tanh(diff / diff.std(ddof=1))
        mean, u = expit(theta + phi * x), rng.random(n)  # 30% ties, wins and losses around them: E[o] = mean
        judged = np.where(u < mean - 0.15, 1.0, np.where(u < mean + 0.15, 0.5, 0.0))
        lc = length_controlled_win_rate(judged, diff, np.zeros(n))
        covered.append(lc.low <= expit(theta) <= lc.high)
    assert np.mean(covered) >= 0.92  # 300 draws: nominal 0.95 has a standard error of 0.013


def test_length_control_without_a_fit_is_none_and_equal_lengths_read_the_raw_rate():
    assert length_controlled_win_rate([1.0] * 6, [9, 8, 7, 6, 5, 4], [1] * 6) is None  # every prompt won
    separated = length_controlled_win_rate([1, 1, 1, 0, 0, 0], [9, 8, 7, 1, 2, 3], [5] * 6)
    assert separated is None  # wins exactly where longer: the logit at zero difference is not identified
    same = length_controlled_win_rate([1, 0, 1, 0.5, 1], [5] * 5, [5] * 5)
    assert same.rate == pytest.approx(0.7)


def test_the_final_evaluations_keys():
    o = [1, 0, 0.5, 1, 1, 0, 1, 0.5]
    metrics = win_rate_metrics("gold", o, [10, 9, 5, 12, 7, 8, 11, 5], [8, 12, 5, 9, 9, 6, 10, 5])
    assert set(metrics) == {
        "win_rate_gold",
        "win_rate_gold_low",
        "win_rate_gold_high",
        "win_rate_gold_ties",
        "lc_win_rate_gold",
        "lc_win_rate_gold_low",
        "lc_win_rate_gold_high",
    }
    assert metrics["win_rate_gold"] == pytest.approx(0.625) and metrics["win_rate_gold_ties"] == 2
    assert set(win_rate_metrics("rm", [1.0] * 4, [1, 2, 3, 4], [0] * 4)) == {
        "win_rate_rm",
        "win_rate_rm_low",
        "win_rate_rm_high",
        "win_rate_rm_ties",
    }
