"""The loop with no manual step: ``rlhfkit sample`` -> the labeling session -> ``rlhfkit data agreement`` -> pairs."""

import json
import uuid

from rlhfkit.cli import main
from rlhfkit.data.comparisons import read_comparisons
from rlhfkit.data.rows import read_rows
from rlhfkit.feedback.session import LabelSession


def test_sample_label_agreement_consume_each_others_files(nano_model, tmp_path, capsys):
    comparisons, votes, pairs = tmp_path / "c.jsonl", tmp_path / "votes.jsonl", tmp_path / "pairs.jsonl"
    sample = ["sample", str(nano_model), "lab", "--num-prompts", "6", "--k", "3", "--max-new-tokens", "8"]
    assert main([*sample, "--out", str(comparisons)]) == 0
    items = read_comparisons(comparisons)
    assert len(items) >= 4 and all(len(r["responses"]) == 3 for r in items)

    session = LabelSession(comparisons, votes, mode="pairwise", overlap=2, seed=0)
    try:
        for labeler in ("ann", "bob"):  # each answers every pair, preferring the longer answer
            page = session.task(labeler)
            while page["task"] is not None:
                task = page["task"]
                size = [len(r) for r in task["responses"]]
                choice = "tie" if size[0] == size[1] else ("left" if size[0] > size[1] else "right")
                body = {
                    "vote_id": uuid.uuid4().hex,
                    "item_id": task["item_id"],
                    "pair": task["pair"],
                    "choice": choice,
                }
                page = session.vote(labeler, body)
    finally:
        session.close()

    out = tmp_path / "agreement.json"
    argv = ["data", "agreement", str(votes), "--min-agreement", "1", "--json", str(out), "--out", str(pairs)]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["n_items"] == 3 * len(items) and summary["n_labelers"] == 2
    assert summary["cohen_kappa"]["ann,bob"] == 1.0  # both follow the same rule
    _, rows, _, _ = read_rows(str(pairs))
    rows = [r for _, r in rows]
    assert rows and all(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    assert {r["group"] for r in rows} <= {i["item_id"] for i in items}  # K = 3: the K-wise loss sees an item at once
