"""Votes as annotation tools export them: per-annotator columns, label maps, missing votes, ties, text values."""

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from rlhfkit import data
from rlhfkit.cli import main
from rlhfkit.core.errors import DataError
from rlhfkit.data import agreement as ag
from rlhfkit.data.votes import label_key

# One row per comparison, one column per annotator; 1 = first response better, 2 = second, 0 = tie, "" = not rated.
ANNOTATED = [
    {"prompt": "p1", "response_a": "good", "response_b": "bad", "ann1": 1, "ann2": 1, "ann3": 0},
    {"prompt": "p2", "response_a": "x", "response_b": "y", "ann1": 2, "ann2": 2, "ann3": 2},
    {"prompt": "p3", "response_a": "", "response_b": "an answer", "ann1": 2, "ann2": 0, "ann3": 0},
    {"prompt": "p4", "response_a": True, "response_b": "no", "ann1": 1, "ann2": "", "ann3": 1},
    {"prompt": "p5", "response_a": "same", "response_b": "same", "ann1": 0, "ann2": 0, "ann3": 1},
    {"prompt": "p6", "response_a": 42, "response_b": "forty-two", "ann1": 0, "ann2": 1, "ann3": 2},
]


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_annotator_columns_with_ties_from_csv(tmp_path):
    path = _csv(tmp_path / "votes.csv", ANNOTATED)
    result = data.from_votes(path, labeler_cols="ann1,ann2,ann3", labels="1=a,2=b,0=tie")
    votes = result.agreement.report
    assert votes.n_items == votes.n_rated_items == 6  # every item with votes counts, empty/boolean/identical too
    assert votes.labeler_names == ["ann1", "ann2", "ann3"] and set(votes.cohen_kappa) == {
        "ann1,ann2",
        "ann1,ann3",
        "ann2,ann3",
    }
    assert votes.n_votes == 17  # one missing vote (p4, ann2)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in result.pairs] == [
        ("p1", "good", "bad"),
        ("p2", "y", "x"),
        ("p4", "True", "no"),  # CSV: the boolean was written as text already
    ]
    assert result.pairs[0]["agreement"] == pytest.approx(2 / 3) and result.pairs[2]["n_votes"] == 2
    # p3: (b, tie, tie) is a tie item; p5: identical responses; p6: (tie, a, b) has no majority
    assert result.agreement.dropped == {"no votes": 0, "identical responses": 1, "tie": 2, "below min_agreement": 0}
    assert result.report.dropped_rows == {"identical responses": 1, "tie": 2}
    assert result.report.notes == {"empty response": 1}  # CSV has no numbers or booleans, only text


def test_numbers_booleans_and_empty_responses_are_kept_and_counted():
    result = data.from_votes(ANNOTATED, labeler_cols=["ann1", "ann2", "ann3"], labels={1: "a", 2: "b", 0: "tie"})
    assert result.report.notes == {"empty response": 1, "number or boolean read as text": 2}
    assert result.pairs[2]["chosen"] == "true"  # JSON's text for the boolean
    assert "kept as they came: " in result.report.summary()
    margin = data.from_votes(ANNOTATED, labeler_cols=["ann1", "ann2", "ann3"], labels="1=a,2=b,0=tie", ties="margin")
    by_prompt = {p["prompt"]: p for p in margin.pairs}
    assert by_prompt["p3"] == {  # (b, tie, tie): b beats a 1-0, kept with a small margin
        "prompt": "p3",
        "chosen": "an answer",
        "rejected": "",
        "agreement": pytest.approx(1 / 3),
        "n_votes": 3,
        "margin": pytest.approx(1 / 3),
    }
    assert by_prompt["p1"]["margin"] == pytest.approx(2 / 3) and "p6" not in by_prompt
    assert margin.report.dropped_rows == {"identical responses": 1, "tie": 1}


def test_string_labels_and_missing_votes_as_null_nan_and_empty():
    rows = [
        {"prompt": "p", "response_a": "a1", "response_b": "b1", "w1": "A", "w2": " Tie ", "w3": None},
        {"prompt": "q", "response_a": "a2", "response_b": "b2", "w1": "B", "w2": float("nan"), "w3": "B"},
        {"prompt": "r", "response_a": "a3", "response_b": "b3", "w1": "A", "w2": "A", "w3": ""},
    ]
    table = data.read_votes(rows, labeler_cols=["w1", "w2", "w3"], labels="A=a,B=b,Tie=tie")
    assert table.votes.tolist() == [[1, 2, -1], [0, -1, 0], [1, 1, -1]]
    assert table.labelers == ["w1", "w2", "w3"] and len(table.rows) == 3


def test_list_column_with_a_label_map_and_the_default_coding():
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b", "votes": [2, 2, None]},
        {"prompt": "q", "response_a": "c", "response_b": "d", "votes": ["1", 1.0, 0]},
    ]
    table = data.read_votes(rows, labels="1=a,2=b,0=tie")
    assert table.votes.tolist() == [[0, 0, -1], [1, 1, 2]] and table.labelers == ["0", "1", "2"]
    legacy = data.read_votes([{"prompt": "p", "response_a": "a", "response_b": "b", "votes": [1, 0, -1]}])
    assert legacy.votes.tolist() == [[1, 0, -1]]  # the lab's 1 / 0 / -1 lists, unchanged


def test_bad_label_is_one_line_naming_row_column_and_labels(tmp_path):
    rows = [dict(ANNOTATED[0]), dict(ANNOTATED[1], ann2=3)]
    path = _csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as err:
        data.from_votes(path, labeler_cols="ann1,ann2,ann3", labels="1=a,2=b,0=tie")
    message = str(err.value)
    assert message.startswith(f"{path}: row 2: column 'ann2' has label '3', not one of the labels 1=a, 2=b, 0=tie;")
    assert "--labels" in message and "\n" not in message
    skipped = data.from_votes(path, labeler_cols="ann1,ann2,ann3", labels="1=a,2=b,0=tie", on_bad_row="skip")
    assert skipped.report.skipped == {"bad label": 1} and skipped.agreement.report.n_items == 1
    with pytest.raises(DataError, match=r"row 1: missing column 'ann4' .*labeler_cols=\.\.\. \(CLI: --labeler-cols\)"):
        data.from_votes(ANNOTATED, labeler_cols="ann1,ann4", labels="1=a,2=b,0=tie")
    with pytest.raises(DataError, match="row 1: column 'response_b' is null"):
        data.from_votes([dict(ANNOTATED[0], response_b=None)], labeler_cols="ann1,ann2", labels="1=a,2=b,0=tie")


@pytest.mark.parametrize(
    "labels, message",
    [
        ("1=a,2b", r"'2b' is not VALUE=TARGET"),
        ("1=a,2=c", r"target 'c' for '2'; targets are a, b, tie, missing"),
        ("1=a,1=b", r"value '1' is mapped twice"),
        ("1=a,0=tie", r"map some value to 'a' .* and some to 'b'"),
        (3, r"give 'VALUE=TARGET,...'"),
    ],
)
def test_label_map_errors(labels, message):
    with pytest.raises(DataError, match=message):
        data.parse_labels(labels)


def test_label_map_parsing_and_keys():
    assert data.parse_labels("1=a, 2=b ,0=TIE,-1=missing") == {"1": "a", "2": "b", "0": "tie", "-1": "missing"}
    assert data.parse_labels({1.0: "a", "B": "b"}) == {"1": "a", "B": "b"}
    assert [label_key(v) for v in (1, 2.0, " x ", "", None, float("nan"), False)] == [
        "1",
        "2",
        "x",
        None,
        None,
        None,
        "false",
    ]


def test_agreement_summary_is_json_with_named_pairs():
    result = data.from_votes(ANNOTATED, labeler_cols="ann1,ann2,ann3", labels="1=a,2=b,0=tie")
    summary = json.loads(json.dumps(data.agreement_summary(result)))
    assert summary["n_items"] == 6 and summary["n_labelers"] == 3 and summary["kept"] == 3
    assert summary["fleiss_kappa"] is None and "same number" in summary["fleiss_kappa_note"]  # p4 has 2 votes
    assert isinstance(summary["krippendorff_alpha"], float)
    assert set(summary["cohen_kappa"]) == {"ann1,ann2", "ann1,ann3", "ann2,ann3"}
    assert [row["labeler"] for row in summary["labelers"]] == ["ann1", "ann2", "ann3"]
    assert summary["labelers"][2]["tie_rate"] == pytest.approx(2 / 6)  # ann3: 0 on p1 and p3
    assert summary["dropped"] == {"no votes": 0, "identical responses": 1, "tie": 2, "below min_agreement": 0}
    assert summary["data"]["notes"] == {"empty response": 1, "number or boolean read as text": 2}


def test_a_real_shaped_export_keeps_every_item_for_the_statistics(tmp_path):
    """An export shaped like a real one: 999 items, 3 annotators, labels 1/2/0 (0 = tie), 54 empty and 6 boolean
    responses."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(999):
        a, b = f"answer {i} a", f"answer {i} b"
        if i < 54:
            a = ""
        elif i < 60:
            b = bool(i % 2)
        truth = int(rng.choice([1, 2, 0], p=[0.45, 0.4, 0.15]))
        votes = [truth if rng.random() < 0.75 else int(rng.integers(0, 3)) for _ in range(3)]
        rows.append({"prompt": f"q{i}", "response_a": a, "response_b": b, **dict(zip(("x", "y", "z"), votes))})
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = data.from_votes(path, labeler_cols="x,y,z", labels="1=a,2=b,0=tie", min_agreement=0.6)
    report = result.agreement.report
    assert report.n_items == 999 and report.fleiss_kappa is not None  # 3 votes on every item
    assert result.report.notes == {"empty response": 54, "number or boolean read as text": 6}
    votes = np.array([[{1: ag.A, 2: ag.B, 0: ag.TIE}[r[c]] for c in "xyz"] for r in rows], dtype=np.int8)
    assert report.fleiss_kappa == pytest.approx(ag.analyze(votes).fleiss_kappa)
    dropped = result.agreement.dropped
    assert len(result) + sum(dropped.values()) == 999 and dropped["tie"] > 0


# ----------------------------------------------------------------------------- CLI
def _readme_command() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Real annotation data") :]
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(command)
    assert argv[0] == "rlhfkit"
    return argv[1:]


def test_readme_command_for_annotator_columns_with_ties(tmp_path, monkeypatch, capsys):
    rows = [dict(r, ann2=r["ann2"] if r["ann2"] != "" else None) for r in ANNOTATED] * 10  # 60 items
    _csv(tmp_path / "annotations.csv", [{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    monkeypatch.chdir(tmp_path)
    assert main(_readme_command()) == 0
    printed = capsys.readouterr().out
    assert "Cohen's kappa per pair" in printed and "ann1,ann2" in printed and "tie votes" in printed
    report = json.loads((tmp_path / "agreement.json").read_text())
    assert (
        report["n_items"] == 60
        and report["n_labelers"] == 3
        and set(report["cohen_kappa"])
        == {
            "ann1,ann2",
            "ann1,ann3",
            "ann2,ann3",
        }
    )
    kept = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert report["dropped"]["tie"] == 20 and report["kept"] == len(kept)


def test_cli_bad_label_and_convert_with_margin(tmp_path, capsys):
    path = _csv(tmp_path / "votes.csv", [dict(ANNOTATED[0]), dict(ANNOTATED[1], ann3="x")])
    argv = ["data", "agreement", str(path), "--labeler-cols", "ann1,ann2,ann3", "--labels", "1=a,2=b,0=tie"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {path}: row 2: column 'ann3' has label 'x', not one of the labels 1=a, 2=b, 0=tie; map it with "
        "labels=... (CLI: --labels) or leave the cell empty for a missing vote"
    )
    src = _csv(tmp_path / "all.csv", ANNOTATED)
    out = tmp_path / "pairs.jsonl"
    flags = ["--labeler-cols", "ann1,ann2,ann3", "--labels", "1=a,2=b,0=tie", "--ties", "margin", "--out", str(out)]
    assert main(["data", "convert", str(src), "--format", "votes", *flags]) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["prompt"] for p in pairs] == ["p1", "p2", "p3", "p4"] and pairs[2]["margin"] == pytest.approx(1 / 3)
    assert main(["data", "convert", str(src), "--format", "hh", "--labels", "1=a", "--out", str(out)]) == 2
    assert "--labels does not apply to --format hh" in capsys.readouterr().err
