"""The lab judge: what it is taught (position bias, length bias, noise), that it is an ordinary judge folder, and
what both-order averaging does to a position-biased one (measured against the lab's gold reward)."""

import json
import random

import pytest

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.judge_votes import gold_accuracy
from rlhfkit.data.votelog import read_vote_log
from rlhfkit.feedback.judge import DEFAULT_CONSTITUTION, judge_file
from rlhfkit.feedback.lab_judge import build_judge, training_examples


def _taught(examples):
    """(first shown, second shown, answer) of each example, read back from the judging prompt."""
    out = []
    for messages, answer in examples:
        text = messages[0]["content"]
        prompt = text.split("Prompt: ")[1].split("\n\nResponse 1: ")[0]
        first = text.split("Response 1: ")[1].split("\n\nResponse 2: ")[0]
        second = text.split("Response 2: ")[1].split("\n\nWhich")[0]
        out.append((prompt, first, second, answer))
    return out


def test_training_examples_follow_the_knobs():
    principles = DEFAULT_CONSTITUTION
    fair = _taught(training_examples(200, principles, seed=0))
    assert len(fair) == 400
    for (p, a, b, x), (_, b2, a2, y) in zip(fair[0::2], fair[1::2], strict=True):  # both orders, consecutive
        assert (a, b) == (a2, b2) and x == 1 - y
        assert (x == 0) == (lab.gold_reward(p, a) > lab.gold_reward(p, b))
    assert all(answer == 0 for *_, answer in _taught(training_examples(100, principles, position_bias=1.0)))
    for _, a, b, answer in _taught(training_examples(100, principles, length_bias=1.0)):
        if lab.count_items(a) != lab.count_items(b):
            assert (answer == 0) == (lab.count_items(a) > lab.count_items(b))
    noisy = _taught(training_examples(500, principles, label_noise=0.3, seed=1))
    wrong = sum((answer == 0) != (lab.gold_reward(p, a) > lab.gold_reward(p, b)) for p, a, b, answer in noisy)
    assert 0.24 < wrong / len(noisy) < 0.36  # 1000 answers, flip rate 0.3: SE 0.0145
    with pytest.raises(ConfigError, match=r"position_bias=1.5 must be a probability"):
        training_examples(10, principles, position_bias=1.5)


def _held_out(tmp_path, n=600):
    rng = random.Random(12345)
    rows = []
    for prompt in lab.make_prompts(n, seed=777):
        a, b = lab.candidates(prompt, 2, rng)
        if a != b:
            rows.append(comparison_row(prompt, [a, b]))
    path = tmp_path / "comparisons.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_lab_judge_is_an_ordinary_judge_folder(tmp_path):
    path = build_judge(tmp_path / "judge", n_train=50, steps=5, position_bias=0.2, seed=3)
    settings = json.loads((path / "lab_judge.json").read_text())
    assert settings["position_bias"] == 0.2 and settings["steps"] == 5 and settings["seed"] == 3
    comparisons = _held_out(tmp_path, n=10)
    report = judge_file(comparisons, tmp_path / "votes.jsonl", model=path, principles_per_pair=1)
    assert report.n_written == len(read_vote_log(tmp_path / "votes.jsonl")) > 0
    assert all(labeler.startswith("judge:judge:") for labeler in report.labelers)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_order_averaging_undoes_a_position_bias(tmp_path, seed):
    """Measured on 551 held-out lab pairs of different gold (docs/feedback.md), seed 0 / 1, labels read as the sign
    of the two-order probability (tie margin 0): the unbiased judge's accuracy vs gold 0.686 / 0.695, position
    consistency 0.82 / 0.80, left-choice rate 0.47 / 0.45; taught a position bias of 0.4: consistency 0.00 / 0.00,
    left-choice 1.00 / 1.00, accuracy one order 0.519 / 0.521 -> both orders 0.679 / 0.659 (paired SE 0.03).
    Floors: at least 3 standard errors below the smaller measurement."""
    comparisons = _held_out(tmp_path)
    results = {}
    for bias in (0.0, 0.4):
        path = build_judge(tmp_path / f"judge-{bias}", n_train=4000, steps=400, position_bias=bias, seed=seed)
        out = tmp_path / f"votes-{bias}.jsonl"
        report = judge_file(comparisons, out, model=path, principles_per_pair=1, tie_margin=0.0, batch_size=32)
        votes = read_vote_log(out)
        results[bias] = (report, gold_accuracy(votes)[0], gold_accuracy(votes, order=0)[0])
    fair, fair_accuracy, _ = results[0.0]
    assert fair_accuracy > 0.62 and fair.position_consistency > 0.6 and abs(fair.left_choice_rate - 0.5) < 0.15
    biased, both_orders, one_order = results[0.4]
    assert biased.position_consistency < 0.3 and biased.left_choice_rate > 0.8
    assert both_orders > 0.60 and both_orders - one_order > 0.05
