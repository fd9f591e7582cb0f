"""``rlhfkit label``: SIGKILL and restart lose no acknowledged vote and write none twice; SIGTERM stops cleanly; the
one-line errors at start; ``--judge`` hands the file to the AI judge."""

import signal
import sys
from collections import Counter

from rlhfkit.cli import main
from rlhfkit.data.votelog import read_vote_log, read_vote_rows

from .conftest import request, write_comparisons


def _vote(base, labeler, task, vote_id, choice="left"):
    body = {"vote_id": vote_id, "item_id": task["item_id"], "pair": task["pair"], "choice": choice}
    return request(f"{base}/api/vote?labeler={labeler}", body)


def test_sigkill_and_restart_lose_no_acknowledged_vote_and_write_none_twice(tmp_path, label_process):
    write_comparisons(tmp_path / "c.jsonl", n=12)
    votes = tmp_path / "votes.jsonl"
    server = label_process(tmp_path / "c.jsonl", votes, "--overlap", "2")
    acked, tasks = [], {}
    for name in ("ann", "bob"):
        answer = request(f"{server.base}/api/task?labeler={name}")[1]
        for n in range(4):
            vote_id = f"{name}-vote-{n:02d}"
            status, next_answer = _vote(server.base, name, answer["task"], vote_id)
            assert status == 200 and next_answer["saved"] == vote_id
            acked.append(vote_id)
            tasks[vote_id] = answer["task"]
            answer = next_answer
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    server = label_process(tmp_path / "c.jsonl", votes, "--overlap", "2")
    assert "ann  " in server.output and "(4 done, 8 left)" in server.output  # the voters' links are printed again
    # the page of a labeler whose last answer got lost in the kill retries it with the same id: written once
    status, retried = _vote(server.base, "ann", tasks["ann-vote-03"], "ann-vote-03")
    assert status == 200 and retried["duplicate"] is True and retried["done"] == 4
    seen = [tasks[v]["item_id"] for v in acked if v.startswith("ann")]
    assert retried["task"]["item_id"] not in seen  # ann continues where she stopped
    status, answer = _vote(server.base, "ann", retried["task"], "ann-vote-04")
    assert status == 200
    acked.append("ann-vote-04")
    assert server.stop(signal.SIGTERM) == 0
    assert "stopped: 9 votes by 2 labelers" in server.output

    counts = Counter(r["vote_id"] for r in read_vote_rows(votes))
    assert set(counts) == set(acked) and set(counts.values()) == {1}
    assert Counter(v["labeler"] for v in read_vote_log(votes)) == {"ann": 5, "bob": 4}


def test_errors_at_start_are_one_line(tmp_path, capsys, monkeypatch):
    write_comparisons(tmp_path / "c.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text((tmp_path / "c.jsonl").read_text() + '{"item_id": "x", "prompt": "", "responses": ["a", "b"]}\n')
    cases = [
        (["label", str(bad), "--out", str(tmp_path / "v.jsonl"), "--port", "0"], "row 13 prompt must be non-empty"),
        (
            ["label", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "v.jsonl"), "--host", "0.0.0.0"],
            "--host 0.0.0.0 lets other machines reach the page: name the labelers with --labelers",
        ),
        (["label", str(tmp_path / "c.jsonl"), "--out", "v.jsonl", "--overlap", "0"], "'0' must be a whole number"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "v.jsonl").exists()
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the label extra is not installed
    assert main(["label", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "v.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: rlhfkit label needs uvicorn, which is not installed: pip install 'rlhfkit[label]'"]
