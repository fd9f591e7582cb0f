"""The comparisons and votes files: ids, checks, the append-only log, undo."""

import json
import multiprocessing as mp

import pytest

from rlhfkit.core.errors import DataError
from rlhfkit.data.comparisons import AppendLog, comparison_row, item_id, read_comparisons
from rlhfkit.data.votelog import (
    is_vote_log,
    pairwise_vote,
    ranking_vote,
    read_vote_log,
    read_vote_rows,
    standing_votes,
    undo_row,
    vote_problem,
)


def test_item_id_is_stable_and_depends_on_prompt_and_responses():
    a = item_id("p", ["x", "y"])
    assert a == item_id("p", ["x", "y"]) and len(a) == 16
    assert a != item_id("p", ["y", "x"]) and a != item_id("q", ["x", "y"])
    chat = [{"role": "user", "content": "p"}]
    assert item_id(chat, ["x", "y"]) != a


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_read_comparisons_names_the_bad_row(tmp_path):
    good = comparison_row("p", ["x", "y"], model="m")
    path = tmp_path / "c.jsonl"
    _write(path, [good, {"item_id": "z", "prompt": "p", "responses": ["same", "same"]}])
    with pytest.raises(DataError, match=r"row 2 responses holds the same text twice"):
        read_comparisons(path)
    _write(path, [good, good])
    with pytest.raises(DataError, match=r"row 2 repeats item_id"):
        read_comparisons(path)
    _write(path, [good], tail='{"item_id": "cut')  # a writer killed mid-line
    assert read_comparisons(path) == [good]


def test_append_log_cuts_an_unfinished_line_and_appends_after_it(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    with AppendLog(path) as log:
        log.append({"a": 3})
    assert path.read_text() == '{"a": 1}\n{"a": 3}\n'


def test_an_exclusive_append_log_keeps_other_writers_out_until_closed(tmp_path):
    path = tmp_path / "c.jsonl"
    with AppendLog(path, exclusive=True) as log:
        log.append({"a": 1})
        with pytest.raises(DataError, match="is being written by another process"):
            AppendLog(path, exclusive=True)
        log.append({"a": 2})
    with AppendLog(path, exclusive=True) as log:
        log.append({"a": 3})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'


def _writer(path, who, n):
    with AppendLog(path) as log:
        for i in range(n):
            log.append({"who": who, "i": i, "pad": "x" * 5000})


def test_append_log_processes_at_once_lose_and_double_nothing(tmp_path):
    path = tmp_path / "v.jsonl"
    procs = [mp.get_context("fork").Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["who"], r["i"]) for r in rows) == [(w, i) for w in range(4) for i in range(50)]


def test_votes_undo_and_checks(tmp_path):
    item = comparison_row("p", ["x", "y", "z"])
    v1 = pairwise_vote(item, "ann", (0, 2), "b", [2, 0], margin="better")
    v2 = ranking_vote(item, "bob", [[1], [0, 2]], [0, 1, 2])
    path = tmp_path / "votes.jsonl"
    with AppendLog(path) as log:
        log.append(v1, v2, undo_row(v1))
    assert [v["vote_id"] for v in read_vote_log(path)] == [v2["vote_id"]]
    assert len(read_vote_log(path, keep_undone=True)) == 2
    rows = read_vote_rows(path)
    assert [r["vote_id"] for r in rows][:2] == [v1["vote_id"], v2["vote_id"]] and rows[2]["undoes"] == v1["vote_id"]
    assert standing_votes(rows) == read_vote_log(path)
    assert is_vote_log(v1.keys()) and not is_vote_log(["prompt", "response_a", "response_b", "votes"])
    assert "must name each of the 3 responses" in vote_problem({**v2, "ranking": [[1], [0]]})
    assert "pair=" in vote_problem({**v1, "pair": [1, 1]})
    assert "margin=" in vote_problem({**v1, "margin": "huge"})
    with pytest.raises(DataError, match="label='left'"):
        pairwise_vote(item, "ann", (0, 1), "left", [0, 1])
    path.write_text(json.dumps({**v1, "shown_order": [0, 0]}) + "\n")
    with pytest.raises(DataError, match=r"row 1 shown_order"):
        read_vote_log(path)
