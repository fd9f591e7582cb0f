"""A judge's votes against people and the lab's gold: ``judge_summary`` by hand, and ``rlhfkit data agreement``'s
``judge`` section."""

import json
import random

import numpy as np
import pytest

from rlhfkit import lab
from rlhfkit.cli import main
from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.judge_votes import judge_summary
from rlhfkit.data.votelog import pairwise_vote


def _items(n: int, seed: int = 0) -> list[dict]:
    """Lab items of two responses with different gold rewards, the better one first or second at random."""
    rng = random.Random(seed)
    items = []
    for prompt in lab.make_prompts(4 * n, seed=seed):
        a, b = lab.candidates(prompt, 2, rng)
        if a != b and lab.gold_reward(prompt, a) != lab.gold_reward(prompt, b) and len(items) < n:
            items.append(comparison_row(prompt, [a, b]))
    return items


def _better_first(item) -> bool:
    return lab.gold_reward(item["prompt"], item["responses"][0]) > lab.gold_reward(
        item["prompt"], item["responses"][1]
    )


def _votes(items, flips: dict[str, float], judge_flip: float, seed: int = 0) -> list[dict]:
    """People who vote by gold, each flipping with their rate, and one judge (one principle) flipping with its own;
    the judge shows the first response first and has no position bias."""
    rng = random.Random(seed)
    rows = []
    for item in items:
        truth = _better_first(item)
        for name, flip in flips.items():
            label = "a" if truth != (rng.random() < flip) else "b"
            rows.append(pairwise_vote(item, name, (0, 1), label, [0, 1]))
        first = truth != (rng.random() < judge_flip)
        p = 0.8 if first else 0.2
        rows.append(
            pairwise_vote(item, "judge:m:helpful", (0, 1), "a" if first else "b", [0, 1], p=p, p_orders=[p, p])
        )
    return rows


def test_a_judge_that_votes_like_the_truth_agrees_with_people_better_than_they_do():
    items = _items(200)
    summary = judge_summary(_votes(items, {"ann": 0.1, "bob": 0.2, "cat": 0.3}, judge_flip=0.0))
    assert summary["n_pairs"] == 200 and summary["n_shared"] == 200
    assert summary["position_consistency"] == 1.0 and summary["tie_rate"] == 0.0
    assert summary["left_choice_rate"] == pytest.approx(0.5)  # p = p_orders: the first order picks the first half
    assert summary["accuracy_vs_gold"] == 1.0
    assert summary["agreement_with_humans"]["ann"] > summary["agreement_with_humans"]["cat"]
    assert summary["accuracy_vs_majority"] > 0.85 and summary["agreement_with_humans"]["majority"] > 0.7
    assert summary["judge_kappa"] > summary["human_kappa"] and summary["flag_below_human_agreement"] is False
    assert summary["labelers"]["judge:m:helpful"]["n_pairs"] == 200


def test_a_judge_near_chance_is_flagged():
    items = _items(200, seed=1)
    summary = judge_summary(_votes(items, {"ann": 0.05, "bob": 0.1}, judge_flip=0.45, seed=1))
    assert summary["flag_below_human_agreement"] is True
    assert abs(summary["accuracy_vs_gold"] - 0.55) < 0.12  # 200 votes at 0.55: SE 0.035


def test_no_judge_no_section_and_no_gold_outside_the_lab():
    items = _items(20)
    assert judge_summary(_votes(items, {"ann": 0.1}, 0.0)[0::2]) is None  # the people's rows only
    item = comparison_row("Write a haiku.", ["one", "two"])
    rows = [pairwise_vote(item, "judge:m:x", (0, 1), "a", [0, 1], p=0.7, p_orders=[0.9, 0.5])]
    summary = judge_summary(rows)
    assert "accuracy_vs_gold" not in summary and summary["flag_below_human_agreement"] is None
    assert summary["agreement_with_humans"] == {"majority": None} and summary["accuracy_vs_majority"] is None


def test_data_agreement_reports_the_judge(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    rows = _votes(_items(60), {"ann": 0.1, "bob": 0.2, "cat": 0.3}, judge_flip=0.2)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "agreement", str(path), "--json", str(tmp_path / "a.json")]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    judge = report["judge"]
    keys = ["n_pairs", "position_consistency", "left_choice_rate", "tie_rate", "agreement_with_humans"]
    keys += ["accuracy_vs_majority", "flag_below_human_agreement", "accuracy_vs_gold"]
    assert set(keys) <= set(judge)
    assert set(judge["agreement_with_humans"]) == {"ann", "bob", "cat", "majority"}
    judged = [r for r in rows if r["labeler"].startswith("judge:")]
    expected = np.mean([(r["label"] == "a") == _better_first(r) for r in judged])
    assert judge["accuracy_vs_gold"] == pytest.approx(expected) and judge["n_pairs"] == len(judged) == 60
    out = capsys.readouterr().out
    assert "AI judge vs people" in out and "kappa with the majority of people" in out
    assert "judge:m:helpful" in out  # a labeler name, not an emoji code
