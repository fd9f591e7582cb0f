"""A labeling session without HTTP: answers in the shown order stored in the file's order, ids written once,
refusals, the secrets file, refused files at start."""

import json
import stat

import pytest

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.votelog import read_vote_log, read_vote_rows
from rlhfkit.feedback.session import LabelSession, Refused, keys_path

from .conftest import write_comparisons


def _session(tmp_path, **kw):
    write_comparisons(tmp_path / "c.jsonl", n=kw.pop("n", 6), k=kw.pop("k", 2))
    return LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl", **kw)


def test_left_right_are_stored_in_the_files_order_with_the_shown_order(tmp_path):
    s = _session(tmp_path, overlap=1)
    labels = []
    for choice in ("left", "right", "tie", "left"):
        task = s.task("ann")["task"]
        answer = s.vote("ann", {"vote_id": f"vote-{choice}-{len(labels)}", **task, "choice": choice})
        row = read_vote_rows(tmp_path / "votes.jsonl")[-1]
        item_responses = row["responses"]
        shown = [item_responses[i] for i in row["shown_order"]]
        assert shown == task["responses"]  # shown_order is what the page showed
        if choice != "tie":
            picked = task["responses"][0 if choice == "left" else 1]
            better = item_responses[row["pair"][0] if row["label"] == "a" else row["pair"][1]]
            assert better == picked
        labels.append(row["label"])
        assert answer["saved"] == row["vote_id"] and answer["done"] == len(labels)
    assert labels[2] == "tie"
    s.close()


def test_a_repeated_id_is_answered_and_not_written_twice(tmp_path):
    s = _session(tmp_path)
    task = s.task("ann")["task"]
    body = {"vote_id": "same-id-123", **task, "choice": "left", "margin": "slightly better"}
    first = s.vote("ann", body)
    again = s.vote("ann", body)
    assert again["duplicate"] is True and again["task"] == first["task"]
    rows = read_vote_rows(tmp_path / "votes.jsonl")
    assert [r["vote_id"] for r in rows] == ["same-id-123"] and rows[0]["margin"] == "slightly better"
    with pytest.raises(Refused, match="another labeler"):
        s.vote("bob", body)
    s.undo("ann", {"vote_id": "undo-id-123"})
    s.undo("ann", {"vote_id": "undo-id-123"})  # a retried undo takes back one vote, not two
    assert len(read_vote_rows(tmp_path / "votes.jsonl")) == 2 and read_vote_log(tmp_path / "votes.jsonl") == []
    s.close()


def test_bad_answers_are_refused_with_a_reason(tmp_path):
    s = _session(tmp_path, k=3)
    task = s.task("ann")["task"]
    ok = {"vote_id": "abcdefgh", **task, "choice": "left"}
    cases = [
        ({**ok, "vote_id": "x"}, 400, "vote_id"),
        ({**ok, "item_id": "nope"}, 400, "item_id"),
        ({**ok, "pair": [1, 0]}, 400, "pair"),
        ({**ok, "choice": "up"}, 400, "choice"),
        ({**ok, "choice": "tie", "margin": "better"}, 400, "margin"),
        ({**ok, "margin": "huge"}, 400, "margin"),
    ]
    for body, status, word in cases:
        with pytest.raises(Refused, match=word) as e:
            s.vote("ann", body)
        assert e.value.status == status
    s.vote("ann", ok)
    with pytest.raises(Refused, match="already answered") as e:
        s.vote("ann", {**ok, "vote_id": "abcdefgh2"})
    assert e.value.status == 409
    with pytest.raises(Refused, match="labeler="):
        s.task("<script>")
    assert s.undo("bob", {"vote_id": "nothing-to-undo"})["undone"] is None
    s.close()


def test_a_ranking_of_shown_positions_is_stored_as_response_indices(tmp_path):
    s = _session(tmp_path, k=4, mode="ranking")
    task = s.task("ann")["task"]
    s.vote("ann", {"vote_id": "rank-1234", "item_id": task["item_id"], "ranking": [[3], [1, 4], [2]]})
    row = read_vote_rows(tmp_path / "votes.jsonl")[0]
    text = [[row["responses"][i] for i in group] for group in row["ranking"]]
    shown = task["responses"]
    assert text == [[shown[2]], [shown[0], shown[3]], [shown[1]]]
    for bad in ([[1], [2], [3]], [[1, 1], [2], [3, 4]], [[1], [], [2, 3, 4]], [[0], [1, 2, 3]], "1234"):
        with pytest.raises(Refused, match="ranking="):
            s.vote("bob", {"vote_id": "rank-bad1", "item_id": task["item_id"], "ranking": bad})
    s.close()


def test_files_are_refused_at_start(tmp_path):
    write_comparisons(tmp_path / "c.jsonl")
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"item_id": "z", "prompt": "p", "responses": ["one"]}\n')
    with pytest.raises(DataError, match=r"row 13 responses must be a list of at least 2"):
        LabelSession(tmp_path / "c.jsonl", tmp_path / "v.jsonl")
    ten = tmp_path / "ten.jsonl"
    ten.write_text(json.dumps(comparison_row("p", [str(i) for i in range(10)])) + "\n")
    with pytest.raises(DataError, match="ranking mode numbers them with the keys 1-9"):
        LabelSession(ten, tmp_path / "v.jsonl", mode="ranking")
    for out in (tmp_path, tmp_path / "c.jsonl"):
        with pytest.raises(ConfigError, match="must be a votes file"):
            LabelSession(tmp_path / "c.jsonl", out)
    s = _session(tmp_path)
    s.vote("ann", {"vote_id": "pairwise-1", **s.task("ann")["task"], "choice": "tie"})
    s.close()
    with pytest.raises(DataError, match="holds pairwise votes .* --mode pairwise or pass another --out"):
        LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl", mode="ranking")


def test_named_labelers_get_secrets_that_survive_a_restart(tmp_path):
    s = _session(tmp_path, labelers=["ann", "bob"])
    path = keys_path(tmp_path / "votes.jsonl")
    assert path.name == "votes.keys.json" and stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = s.keys["labelers"]["ann"]
    assert s.allowed("ann", secret) and not s.allowed("ann", "guess") and not s.allowed("ann", None)
    assert not s.allowed("eve", secret) and not s.status_allowed(secret) and s.status_allowed(s.keys["status"])
    links = dict(s.links("http://h:1"))
    assert links["ann"] == f"http://h:1/?labeler=ann&key={secret}" and links["status"].endswith(s.keys["status"])
    s.close()
    again = LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl", labelers=["ann", "cyd"])
    assert again.keys["labelers"]["ann"] == secret and again.allowed("cyd", again.keys["labelers"]["cyd"])
    assert not again.allowed("bob", s.keys["labelers"]["bob"])  # not named this time: not let in
    again.close()
    path.write_text("[]")
    with pytest.raises(DataError, match="not a keys file"):
        LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl", labelers=["ann"])


def test_one_session_per_votes_file(tmp_path):
    first = _session(tmp_path)
    try:
        with pytest.raises(DataError, match="is being written by another process"):
            LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl")
    finally:
        first.close()
    LabelSession(tmp_path / "c.jsonl", tmp_path / "votes.jsonl").close()  # free again once the first one stopped
    keys = keys_path(tmp_path / "fresh.jsonl")
    keys.mkdir()  # the secrets file cannot be written: the start is refused after the log was opened
    with pytest.raises(Exception):  # noqa: B017 -- whatever load_keys raises; the point is what is left behind
        LabelSession(tmp_path / "c.jsonl", tmp_path / "fresh.jsonl", labelers=["ann"])
    assert not (tmp_path / "fresh.jsonl").exists()  # a refused start removes the empty votes file it created
