"""Votes files (one row per vote) -> the item x labeler matrix, agreement, left-choice rate, pairs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rlhfkit.core.errors import DataError
from rlhfkit.data import load_preferences
from rlhfkit.data.agreement import MISSING, TIE, A, B
from rlhfkit.data.comparisons import AppendLog, comparison_row
from rlhfkit.data.votelog import pairwise_vote, ranking_vote, undo_row
from rlhfkit.data.votes import from_vote_log, read_vote_log_table, vote_log_agreement
from rlhfkit.reward.loss import group_pairs

TWO = comparison_row("p2", ["x", "y"])
THREE = comparison_row("p3", ["u", "v", "w"])


def _log():
    return [
        pairwise_vote(TWO, "ann", (0, 1), "a", [0, 1]),  # chose left
        pairwise_vote(TWO, "bob", (1, 0), "b", [1, 0]),  # pair reversed: b = responses[0] better; chose right
        pairwise_vote(TWO, "cat", (0, 1), "tie", [1, 0]),
        ranking_vote(THREE, "ann", [[2], [0, 1]], [0, 1, 2]),
        ranking_vote(THREE, "bob", [[2], [0], [1]], [2, 1, 0]),
    ]


def test_table_by_hand():
    table = read_vote_log_table(_log())
    assert table.labelers == ["ann", "bob", "cat"]
    keys = [(r["item_id"], *r["pair"]) for r in table.rows]
    assert keys == [
        (TWO["item_id"], 0, 1),
        (THREE["item_id"], 0, 1),
        (THREE["item_id"], 0, 2),
        (THREE["item_id"], 1, 2),
    ]
    expected = np.array(
        [
            [A, A, TIE],  # both say responses[0] better, cat ties
            [TIE, A, MISSING],  # u=v for ann, u>v for bob
            [B, B, MISSING],  # w best for both
            [B, B, MISSING],
        ]
    )
    np.testing.assert_array_equal(table.votes, expected)
    assert table.left_choice == {"ann": 1.0, "bob": 0.0, "cat": pytest.approx(float("nan"), nan_ok=True)}


def test_undo_removes_the_vote_and_last_revote_counts():
    votes = _log()
    again = pairwise_vote(TWO, "ann", (0, 1), "b", [1, 0])
    table = read_vote_log_table([*votes, undo_row(votes[1]), again])
    assert table.labelers == ["ann", "cat", "bob"] or "bob" in table.labelers
    row = table.votes[0]
    assert row[table.labelers.index("ann")] == B  # the later vote counts
    assert row[table.labelers.index("bob")] == MISSING  # undone
    assert table.report.notes["revotes (last one counts)"] == 1


def test_pairs_groups_and_soft_labels(tmp_path):
    log = [
        pairwise_vote(TWO, "judge:m:helpful", (0, 1), "a", [0, 1], p=0.8, p_orders=[0.9, 0.7]),
        pairwise_vote(TWO, "judge:m:harmless", (1, 0), "b", [1, 0], p=0.4, p_orders=[0.5, 0.3]),  # P(x better) 0.6
        *_log()[3:],
    ]
    data = from_vote_log(log)
    by_pair = {(p["chosen"], p["rejected"]): p for p in data.pairs}
    assert by_pair[("x", "y")]["p"] == pytest.approx(0.7)  # (0.8 + 0.6) / 2, oriented to the chosen response
    assert by_pair[("w", "u")]["group"] == by_pair[("w", "v")]["group"] == THREE["item_id"]
    assert by_pair[("x", "y")]["group"] == TWO["item_id"]  # K-wise data: every pair grouped, K = 2 items alone
    assert [len(g["pairs"]) for g in group_pairs(data.pairs)] == [1, 2]  # what the reward trainer reads
    assert all("group" not in p for p in from_vote_log(log[:2]).pairs)  # K = 2 only: plain pairs
    assert "p" not in by_pair[("w", "u")]
    assert ("u", "v") not in by_pair  # a tie and a vote: agreement 0.5, kept only with min_agreement <= 0.5
    path = tmp_path / "votes.jsonl"
    with AppendLog(path) as f:
        f.append(*_log())
    assert load_preferences(path).pairs == from_vote_log(path).pairs  # auto-detected


def test_no_pairs_raise_unless_asked(tmp_path):
    only_ties = [pairwise_vote(TWO, "ann", (0, 1), "tie", [0, 1])]
    with pytest.raises(DataError, match="no preference pairs left"):
        from_vote_log(only_ties)
    summary = vote_log_agreement(only_ties)
    assert summary["kept"] == 0 and summary["labelers"][0]["left_choice_rate"] is None


def test_cli_agreement_reads_a_votes_file(tmp_path):
    path = tmp_path / "votes.jsonl"
    with AppendLog(path) as f:
        f.append(*_log())
    out = tmp_path / "agreement.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhfkit.cli",
            "data",
            "agreement",
            str(path),
            "--json",
            str(out),
            "--min-agreement",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    rates = {row["labeler"]: row["left_choice_rate"] for row in summary["labelers"]}
    assert rates == {"ann": 1.0, "bob": 0.0, "cat": None}
    assert summary["n_items"] == 4 and "left chosen" in proc.stdout


def test_a_votes_file_passes_the_check_at_the_door(tmp_path):
    from rlhfkit.data.checks import preference_problems

    path = tmp_path / "votes.jsonl"
    with AppendLog(path) as f:
        f.append(*_log())
    assert preference_problems(str(path), "data.preferences", "votes") == []
    assert preference_problems(str(path), "data.preferences", "auto") == []


def test_soft_labels_at_the_door_take_a_judges_votes_file(tmp_path):
    from rlhfkit.data.checks import soft_label_problems

    judged, people = tmp_path / "judge.jsonl", tmp_path / "people.jsonl"
    with AppendLog(judged) as f:
        f.append(pairwise_vote(TWO, "judge:m:helpful", (0, 1), "a", [0, 1], p=0.8, p_orders=[0.9, 0.7]))
    with AppendLog(people) as f:
        f.append(*_log())
    assert soft_label_problems(str(judged), "data.preferences", "auto") == []
    (problem,) = soft_label_problems(str(people), "data.preferences", "votes")
    assert "carry no judge probability 'p'" in problem


def test_labelling_progress_counts_votes_and_decided_pairs_of_these_comparisons(tmp_path):
    from rlhfkit.data.votes import labelling_progress

    four = comparison_row("p4", ["a", "b", "c", "d"])  # 6 pairs
    items, path = [TWO, THREE, four], tmp_path / "votes.jsonl"
    assert labelling_progress(path, items) == (0, 0, 1 + 3 + 6)  # no file yet: nothing labelled
    other = comparison_row("elsewhere", ["q", "r"])
    undone = pairwise_vote(four, "ann", (0, 3), "a", [0, 1, 2, 3])
    rows = [
        pairwise_vote(TWO, "ann", (1, 0), "b", [1, 0]),
        pairwise_vote(TWO, "bob", (0, 1), "a", [0, 1]),  # the same pair again: one pair, two votes
        ranking_vote(THREE, "ann", [[2], [0, 1]], [0, 1, 2]),  # a ranking decides its 3 pairs
        pairwise_vote(four, "ann", (2, 1), "tie", [0, 1, 2, 3]),  # a tie decides its pair
        undone,
        undo_row(undone),
        pairwise_vote(other, "ann", (0, 1), "a", [0, 1]),  # not one of these comparisons
    ]
    with AppendLog(path) as log:
        log.append(*rows)
    progress = labelling_progress(path, items)
    assert progress == (4, 1 + 3 + 1, 10) and progress.summary() == "4 votes, 5 of 10 pairs labelled"
    assert not progress.enough(None) and progress.enough(4) and not progress.enough(5)
    assert labelling_progress(path, [TWO, THREE]).enough(None)  # every pair of these labelled once
