"""Label Studio in and out: an export read into vote rows, comparisons written as tasks and a labeling config.

The exports below are made from Label Studio's documented JSON export format:

* the task / annotation layout (``id``, ``data``, ``annotations[].result[]``, ``completed_by``, ``was_cancelled``,
  ``created_at``, ``lead_time``): https://labelstud.io/guide/export.html#Label-Studio-JSON-format-of-annotated-tasks
  (``completed_by`` as an id there; as ``{"id", "email", ...}`` in exports with user details);
* the ``<Pairwise>`` result (``type: "pairwise"``, ``value: {"selected": "left" | "right"}``, ``from_name`` equal to
  ``to_name``) and the RLHF template's data keys ``prompt`` / ``answer1`` / ``answer2``:
  https://labelstud.io/tags/pairwise.html, https://labelstud.io/templates/generative-pairwise-human-preference.html;
* the ``<Ranker>`` result (``type: "ranker"``, ``value: {"ranker": {"rank": [ids best first]}}``, older versions a bare
  list) over a ``<List>`` of ``{"id", "title", "body"}`` items: https://labelstud.io/tags/ranker.html,
  https://labelstud.io/templates/generative-llm-ranker.html;
* a ``<Choices>`` result (``type: "choices"``, ``value: {"choices": [...]}``): https://labelstud.io/tags/choices.html.
"""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.core.errors import DataError
from rlhfkit.data.comparisons import AppendLog, comparison_row, item_id
from rlhfkit.data.votelog import read_vote_log, vote_problem
from rlhfkit.feedback.labelstudio import export_tasks, read_export

PROMPT = "Q: List 2 fruits.\nA:"
ANSWERS = (" apple, pear.", " apple, dog.")


def _annotation(ann_id, completed_by, result, cancelled=False):
    return {
        "id": ann_id,
        "completed_by": completed_by,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2021-03-09T22:16:08.728353Z",
        "updated_at": "2021-03-09T22:16:08.728378Z",
        "lead_time": 4.288,
        "result_count": 0,
        "task": 1,
    }


def _pairwise(selected):
    return [
        {
            "id": "Dx_aB91ISN",
            "from_name": "comparison",
            "to_name": "comparison",
            "type": "pairwise",
            "value": {"selected": selected},
            "origin": "manual",
        }
    ]


def pairwise_export():
    """Two RLHF-template tasks: three annotators on the first (one cancelled), two on the second; a third unlabeled."""
    alice = {"id": 10, "first_name": "", "last_name": "", "avatar": None, "email": "alice@example.com"}
    return [
        {
            "id": 1,
            "data": {"prompt": PROMPT, "answer1": ANSWERS[0], "answer2": ANSWERS[1]},
            "annotations": [
                _annotation(1001, alice, _pairwise("left")),
                _annotation(1002, 11, _pairwise("left")),
                _annotation(1003, 12, [], cancelled=True),
            ],
            "predictions": [{"model_version": "m", "result": _pairwise("right")}],
            "created_at": "2021-03-09T21:52:49.513742Z",
            "project": 83,
        },
        {
            "id": 2,
            "data": {"prompt": "Q: Name 1 colors.\nA:", "answer1": " red.", "answer2": " red, blue, cat."},
            "annotations": [_annotation(1004, alice, _pairwise("right")), _annotation(1005, 11, _pairwise("left"))],
            "project": 83,
        },
        {"id": 3, "data": {"prompt": PROMPT, "answer1": " kiwi, plum.", "answer2": " plum."}, "annotations": []},
    ]


def test_pairwise_export_becomes_vote_rows_in_the_comparisons_order(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(pairwise_export()))
    votes, report = read_export(path)
    assert [vote_problem(v) for v in votes] == [None] * 4
    first = votes[0]
    assert first["item_id"] == item_id(PROMPT, list(ANSWERS)) and first["responses"] == list(ANSWERS)
    assert (first["labeler"], first["pair"], first["label"], first["shown_order"]) == (
        "alice@example.com",
        [0, 1],
        "a",
        [0, 1],
    )
    assert votes[1]["labeler"] == "11"  # completed_by as a bare user id
    assert [v["label"] for v in votes[2:]] == ["b", "a"]
    assert first["time"] == "2021-03-09T22:16:08.728378Z" and first["vote_id"] == "ls-1-1001"
    assert (report.tasks, report.unlabeled, report.annotations, report.votes) == (3, 1, 5, 4)
    assert report.dropped == {"cancelled (skipped in Label Studio)": 1}
    assert "3 tasks (1 without annotations), 5 annotations -> 4 votes (pairwise 4)" in report.summary()
    assert read_export(path)[0] == votes  # the same export converts to the same rows


def test_ranker_export_becomes_ranking_votes():
    items = [{"id": "llm_1", "title": "LLM 1", "body": "a"}, {"id": "llm_2", "title": "LLM 2", "body": "b"}]
    items.append({"id": "llm_3", "title": "LLM 3", "body": "c"})
    ranker = {"from_name": "rank", "to_name": "answers", "type": "ranker"}
    tasks = [
        {
            "id": 7,
            "data": {"prompt": "p", "items": items},
            "annotations": [
                _annotation(1, 3, [{**ranker, "value": {"ranker": {"rank": ["llm_2", "llm_3", "llm_1"]}}}]),
                _annotation(2, 4, [{**ranker, "value": {"ranker": ["llm_1", "llm_2", "llm_3"]}}]),  # older form
            ],
        }
    ]
    votes, _ = read_export(tasks)
    assert [v["ranking"] for v in votes] == [[[1], [2], [0]], [[0], [1], [2]]]
    assert votes[0]["responses"] == ["a", "b", "c"] and votes[0]["mode"] == "ranking"
    bucketed = {**ranker, "value": {"ranker": {"best": ["llm_2"], "_": ["llm_1", "llm_3"]}}}
    tasks[0]["annotations"] = [_annotation(3, 3, [bucketed])]
    with pytest.raises(DataError, match=r"task 7, annotation 3: is a Ranker with buckets .*groups, not an order"):
        read_export(tasks)
    partial = {**ranker, "value": {"ranker": {"rank": ["llm_2", "llm_1"]}}}
    tasks[0]["annotations"] = [_annotation(4, 3, [partial])]
    with pytest.raises(DataError, match=r"ranks the items \['llm_2', 'llm_1'\] but the task has"):
        read_export(tasks)


def test_choices_projects_need_a_label_map_and_ties_are_votes():
    def choice(value):
        return [{"from_name": "preference", "to_name": "prompt", "type": "choices", "value": {"choices": [value]}}]

    data = {"prompt": "p", "response_a": "x", "response_b": "y"}
    tasks = [
        {
            "id": 5,
            "data": data,
            "annotations": [_annotation(1, 1, choice("A")), _annotation(2, 2, choice("Tie"))],
        }
    ]
    tasks[0]["annotations"].append(_annotation(3, 3, choice("Skip")))
    with pytest.raises(DataError, match=r"task 5, annotation 1: is a <Choices> result 'A' .*--labels 'Response A=a"):
        read_export(tasks)
    votes, report = read_export(tasks, labels="A=a,B=b,Tie=tie,Skip=missing")
    assert [v["label"] for v in votes] == ["a", "tie"]
    assert report.dropped == {"choice mapped to missing": 1}


def test_bad_tasks_are_named_or_skipped_and_counted(tmp_path):
    tasks = pairwise_export()
    tasks[1]["data"] = {"question": "p", "answer1": "x", "answer2": "y"}
    with pytest.raises(DataError, match=r"task 2: data has no 'prompt' \(keys: question, answer1, answer2\); name"):
        read_export(tasks)
    votes, report = read_export(tasks, on_bad_row="skip")
    assert len(votes) == 2 and report.skipped == {"missing data key": 1}
    assert report.examples[0].startswith("rows: task 2: data has no 'prompt'")
    both = _pairwise("left") + [{"from_name": "other", "to_name": "other", "type": "pairwise", "value": {}}]
    tasks = [{"id": 9, "data": pairwise_export()[0]["data"], "annotations": [_annotation(1, 1, both)]}]
    with pytest.raises(DataError, match=r"has 2 preference results \(from_name: comparison, other\); .*--from-name"):
        read_export(tasks)
    assert read_export(tasks, from_name="comparison")[0][0]["label"] == "a"
    with pytest.raises(DataError, match=r"no votes: .*3 tasks \(3 without annotations\), 0 annotations"):
        read_export([{**t, "annotations": []} for t in pairwise_export()])


def test_export_tasks_round_trip_keeps_item_ids(tmp_path):
    pairs = [comparison_row("p1", ["x", "y"]), comparison_row("p2", ["u", "v"])]
    path = tmp_path / "comparisons.jsonl"
    with AppendLog(path) as log:
        log.append(*pairs)
    tasks_path, config_path = export_tasks(path, tmp_path / "tasks.json")
    assert config_path.name == "tasks.labelconfig.xml"
    config = config_path.read_text()
    assert '<Pairwise name="comparison" toName="answer1,answer2"' in config and '$answer2"' in config
    tasks = json.loads(tasks_path.read_text())
    assert tasks[0]["data"] == {"item_id": pairs[0]["item_id"], "prompt": "p1", "answer1": "x", "answer2": "y"}
    for n, task in enumerate(tasks):  # what Label Studio exports after labeling: the data unchanged, ids added
        task.update(id=n + 1, annotations=[_annotation(n, "bob@example.com", _pairwise("right"))])
    votes, _ = read_export(tasks)
    assert [v["item_id"] for v in votes] == [r["item_id"] for r in pairs]

    chat = [{"role": "user", "content": "hi"}]
    ranked = [comparison_row(chat, ["a", "b", "c"]), comparison_row(chat, ["d", "e"])]
    path.unlink()
    with AppendLog(path) as log:
        log.append(*ranked)
    tasks_path, config_path = export_tasks(path, tmp_path / "ranked.json")
    config = config_path.read_text()
    assert '<Ranker name="rank" toName="answers"/>' in config and '<Paragraphs name="prompt"' in config
    tasks = json.loads(tasks_path.read_text())
    assert [i["id"] for i in tasks[0]["data"]["items"]] == ["0", "1", "2"] and len(tasks[1]["data"]["items"]) == 2
    rank = {"from_name": "rank", "to_name": "answers", "type": "ranker"}
    rank["value"] = {"ranker": {"rank": ["2", "0", "1"]}}
    tasks[0].update(id=1, annotations=[_annotation(1, 1, [rank])])
    votes, _ = read_export(tasks[:1])
    assert votes[0]["item_id"] == ranked[0]["item_id"] and votes[0]["ranking"] == [[2], [0], [1]]

    path.write_text(json.dumps(comparison_row("text", ["a", "b"])) + "\n" + json.dumps(ranked[0]) + "\n")
    with pytest.raises(DataError, match="mixes text and chat prompts"):
        export_tasks(path, tmp_path / "mixed.json")


def test_label_studio_export_to_votes_to_agreement(tmp_path, capsys):
    export = tmp_path / "export.json"
    export.write_text(json.dumps(pairwise_export()))
    out = tmp_path / "votes.jsonl"
    assert main(["data", "convert", str(export), "--format", "label-studio", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 annotations -> 4 votes" in printed and "cancelled (skipped in Label Studio) 1" in printed
    assert len(read_vote_log(out)) == 4
    report = tmp_path / "agreement.json"
    assert main(["data", "agreement", str(out), "--json", str(report), "--out", str(tmp_path / "pairs.jsonl")]) == 0
    agreement = json.loads(report.read_text())
    assert (agreement["n_items"], agreement["n_labelers"], agreement["kept"]) == (2, 2, 1)  # task 2 is split 1:1
    left = {row["labeler"]: row["left_choice_rate"] for row in agreement["labelers"]}
    assert left == {"alice@example.com": 0.5, "11": 1.0}  # Label Studio shows answer1 on the left
    capsys.readouterr()
    assert main(["data", "convert", str(export), "--format", "label-studio", "--out", str(out), "--rule", "x"]) == 2
    assert "--rule does not apply to --format label-studio" in capsys.readouterr().err
    bad = pairwise_export()
    del bad[0]["data"]["answer2"]
    export.write_text(json.dumps(bad))
    assert main(["data", "convert", str(export), "--format", "label-studio", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "task 1: data has none of the response keys" in err[0]


def test_label_export_label_studio_writes_tasks_and_prints_the_config(tmp_path, capsys):
    path = tmp_path / "comparisons.jsonl"
    with AppendLog(path) as log:
        log.append(comparison_row("p1", ["x", "y", "z"]))
    out = tmp_path / "tasks.json"
    assert main(["label", str(path), "--export", "label-studio", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '<Ranker name="rank" toName="answers"/>' in printed and "Settings > Labeling Interface" in printed
    assert len(json.loads(out.read_text())) == 1 and (tmp_path / "tasks.labelconfig.xml").is_file()
    assert main(["label", str(path), "--export", "label-studio", "--out", str(out), "--judge", "m"]) == 2
    assert capsys.readouterr().err.startswith("error: --export writes tasks for Label Studio; --judge 'm' answers")
