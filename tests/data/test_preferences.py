import csv
import gzip
import json
import re
from math import comb
from pathlib import Path

import pytest

from rlhfkit import data, lab
from rlhfkit.cli import main
from rlhfkit.core.errors import DataError

HH_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def write_jsonl(path: Path, rows: list) -> Path:
    with gzip.open(path, "wt") if path.name.endswith(".gz") else open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def _flat(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------- HH-RLHF
@pytest.fixture(scope="module")
def hh_data():
    if not HH_FILE.exists():
        pytest.skip(f"HH-RLHF harmless-base test split not found at {HH_FILE} (expected in ../shared/data)")
    return data.from_hh(HH_FILE), [json.loads(line) for line in gzip.open(HH_FILE, "rt")]


def test_real_hh_rlhf_split_loads_into_2312_pairs_with_the_shared_prefix(hh_data):
    pairs, raw = hh_data
    assert len(pairs) == 2312 and pairs.report.rows == 2312 and not pairs.report.skipped
    first = pairs.pairs[0]
    assert first["prompt"][0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert [m["role"] for m in first["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
    assert first["prompt"][-1]["content"] == "okay some of these do not have anything to do with pens"
    assert first["chosen"] == [
        {
            "role": "assistant",
            "content": "No, sorry!  All of these involve a pen, the point is that you can get funny results by "
            "doing pranks with pens.",
        }
    ]
    assert first["rejected"][0]["content"].startswith("There are lots of funny things you can do with pens")
    # Row 87: the labeler preferred an empty reply; kept as an empty assistant message.
    assert pairs.pairs[86]["chosen"] == [{"role": "assistant", "content": ""}]
    assert pairs.pairs[86]["rejected"] == [{"role": "assistant", "content": "Sure, the address is ..."}]
    # Every pair: prompt + chosen renders back to the chosen transcript, prompt + rejected to the rejected one,
    # and the prompt is the longest shared prefix ending in a user turn.
    for pair, row in zip(pairs.pairs, raw):
        for side in ("chosen", "rejected"):
            render = "".join(
                f"\n\nHuman: {m['content']}" if m["role"] == "user" else f"\n\nAssistant: {m['content']}"
                for m in pair["prompt"] + pair[side]
            )
            assert _flat(render) == _flat(row[side])
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert pair["chosen"][0] != pair["rejected"][0]
    # The multi-turn quirk: in row 1255 the chosen branch continues with two assistant turns.
    assert [m["role"] for m in pairs.pairs[1254]["chosen"]] == ["assistant", "assistant"]


def test_hh_from_a_datasets_object_and_parse_transcript():
    from datasets import Dataset

    ds = Dataset.from_list([{"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")}])
    pair = data.from_hh(ds).pairs[0]
    assert pair == {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    assert data.parse_transcript(hh("a", "b", "c"))[2] == {"role": "user", "content": "c"}
    with pytest.raises(DataError, match="before the first Human turn"):
        data.parse_transcript("Hello\n\nAssistant: hi")


GOOD = {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")}
BAD_HH_ROWS = [
    ({"chosen": hh("Hi", "Hello!")}, "missing column", r"missing column 'rejected' \(columns present: chosen\)"),
    ({"chosen": "   ", "rejected": hh("Hi", "x")}, "empty text", "column 'chosen' is empty"),
    ({"chosen": hh("Hi", "Same"), "rejected": hh("Hi", "Same")}, "identical chosen and rejected", "identical"),
    ({"chosen": 3, "rejected": hh("Hi", "x")}, "wrong type", "column 'chosen' is int"),
    ({"chosen": "no markers here", "rejected": hh("Hi", "x")}, "unparseable transcript", "before the first Human"),
    ({"chosen": hh("Hi", "a"), "rejected": hh("Yo", "b")}, "unparseable transcript", "do not share a dialogue"),
    ('{"chosen": "oops', "invalid JSON", "invalid JSON"),
    ([1, 2], "wrong type", "expected an object"),
]


@pytest.mark.parametrize("bad, kind, message", BAD_HH_ROWS, ids=[k for _, k, _ in BAD_HH_ROWS])
def test_each_malformed_row_names_file_and_row_and_skip_counts_it(tmp_path, bad, kind, message):
    path = write_jsonl(tmp_path / "hh.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError, match=message) as err:
        data.from_hh(path)
    text = str(err.value)
    assert text.startswith(f"{path}: row 3: ") and "\n" not in text
    result = data.from_hh(path, on_bad_row="skip")
    assert len(result) == 3 and result.report.rows == 4
    assert result.report.skipped == {kind: 1}
    assert "row 3" in result.report.examples[0] and f"{kind} 1" in result.report.summary()


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl.gz", [{"text": "x"}] * 3)
    with pytest.raises(DataError, match="no preference pairs.*missing column 3"):
        data.from_hh(path, on_bad_row="skip")
    with pytest.raises(DataError, match="on_bad_row"):
        data.from_hh(path, on_bad_row="ignore")


# ----------------------------------------------------------------------------- explicit columns and file types
ROWS = [
    {"q": "Q: List 2 fruits.\nA:", "good": " apple, pear.", "bad": " dog.", "id": 1},
    {"q": "Q: List 1 colors.\nA:", "good": " red.", "bad": " red, blue, cat.", "id": 2},
]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv"])
def test_columns_with_custom_names_from_every_file_type(tmp_path, suffix):
    path = _write(tmp_path / f"pairs{suffix}", ROWS)
    result = data.from_columns(path, prompt_col="q", chosen_col="good", rejected_col="bad")
    assert result.pairs == [{"prompt": r["q"], "chosen": r["good"], "rejected": r["bad"]} for r in ROWS]


def test_tabular_missing_column_lists_columns_present(tmp_path):
    path = _write(tmp_path / "pairs.parquet", ROWS)
    message = f"{path}: missing column 'prompt' (columns present: q, good, bad, id); name the column with prompt_col"
    with pytest.raises(DataError, match=re.escape(message)):
        data.from_columns(path, on_bad_row="skip")  # a whole-file problem: skipping cannot help


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_columns_keep_a_soft_label_column_as_p(tmp_path, suffix):
    rows = [r | {"probability": p} for r, p in zip(ROWS, [0.8, None])]
    path = _write(tmp_path / f"pairs{suffix}", rows)
    pairs = data.from_columns(path, prompt_col="q", chosen_col="good", rejected_col="bad").pairs
    assert [pair["p"] for pair in pairs] == [0.8, None]  # an empty value is no soft label
    named = data.from_columns([r | {"judge_p": 1} for r in ROWS], "q", "good", "bad", p_col="judge_p").pairs
    assert [pair["p"] for pair in named] == [1.0, 1.0]
    plain = data.from_columns(ROWS, "q", "good", "bad").pairs
    assert "p" not in plain[0]


def test_soft_labels_missing_from_some_rows_are_none_and_bad_ones_name_the_row():
    rows = [ROWS[0], ROWS[1] | {"p": 0.3}]  # the first row has none: every pair still gets the column
    assert [pair["p"] for pair in data.from_columns(rows, "q", "good", "bad").pairs] == [None, 0.3]
    assert data.from_columns(rows, "q", "good", "bad").to_dataset()["p"] == [None, 0.3]
    message = r"row 2: column 'p' must be the probability in \[0, 1\] that chosen is better, got '1.5'; fix the value"
    with pytest.raises(DataError, match=message):
        data.from_columns([ROWS[0], ROWS[1] | {"p": 1.5}], "q", "good", "bad")
    with pytest.raises(DataError, match="missing column 'judge_p'"):
        data.from_columns(ROWS, "q", "good", "bad", p_col="judge_p")


def test_conversational_columns_and_format_mixing(tmp_path):
    msg = [{"role": "user", "content": "Hi"}]
    conv = {
        "prompt": msg,
        "chosen": [{"role": "assistant", "content": "Hello"}],
        "rejected": [{"role": "assistant", "content": "No"}],
    }
    plain = {"prompt": "Hi", "chosen": "Hello", "rejected": "No"}
    assert data.from_columns([conv]).pairs == [conv]
    path = _write(tmp_path / "conv.csv", [conv])  # messages as JSON strings in CSV cells
    assert data.from_columns(path).pairs == [conv]
    with pytest.raises(DataError, match="row 2: holds strings but earlier rows hold messages"):
        data.from_columns([conv, plain])
    with pytest.raises(DataError, match="row 1: mixes strings and chat messages"):
        data.from_columns([conv | {"chosen": "Hello"}])
    with pytest.raises(DataError, match=r"row 1: column 'prompt' is a list but not of"):
        data.from_columns([plain | {"prompt": [{"role": "user"}]}])
    with pytest.raises(DataError, match="DatasetDict"):
        from datasets import Dataset, DatasetDict

        data.from_columns(DatasetDict({"train": Dataset.from_list([plain])}))


def test_write_pairs_round_trip_and_atomic(tmp_path):
    result = data.from_columns([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    for name in ("out.jsonl.gz", "out.parquet", "out.json"):
        result.write(tmp_path / name)
        assert data.from_columns(tmp_path / name).pairs == result.pairs
    with pytest.raises(TypeError):
        data.write_pairs([{"prompt": "p", "chosen": {1, 2}}], tmp_path / "broken.jsonl")
    assert not (tmp_path / "broken.jsonl").exists() and not list(tmp_path.glob(".broken*"))
    assert len(result.to_dataset()) == 1


# ----------------------------------------------------------------------------- rankings and scores
def test_rankings_with_ties_give_all_untied_ordered_pairs():
    rows = [
        {"prompt": "p1", "responses": ["a", "b", "c", "d"], "ranking": [0, 1, 1, 2]},  # b, c tied
        {"prompt": "p2", "responses": ["e", "f", "g"], "ranking": [2, 0, 1]},
        {"prompt": "p1", "responses": ["a", "z"], "ranking": [1, 1]},  # all tied, same prompt as row 1
    ]
    result = data.from_rankings(rows, on_bad_row="skip")
    assert len(result) == (comb(4, 2) - 1) + comb(3, 2) + 0 == 8
    assert result.report.dropped_pairs == {"tie": 2}
    got = {(p["group"], p["chosen"], p["rejected"]) for p in result.pairs}
    assert got == {
        (0, "a", "b"), (0, "a", "c"), (0, "a", "d"), (0, "b", "d"), (0, "c", "d"),
        (1, "f", "e"), (1, "g", "e"), (1, "f", "g"),
    }  # fmt: skip
    scored = data.from_rankings(
        [{"prompt": "p", "responses": ["a", "b", "c"], "score": [1.0, 3.0, 3.0]}], scores_col="score"
    )
    assert {(p["chosen"], p["rejected"]) for p in scored.pairs} == {("b", "a"), ("c", "a")}


def test_rankings_bad_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "p", "responses": ["a", "b"], "ranking": [0]},
            {"prompt": "p", "responses": ["a"], "ranking": [0]},
            {"prompt": "p", "responses": ["a", ""], "ranking": [0, 1]},
            {"prompt": "p", "responses": ["a", "b"], "ranking": ["first", "second"]},
            {"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0]},
        ],
    )
    with pytest.raises(DataError, match=r"r.jsonl: row 1: column 'ranking' must be a list of 2 numbers"):
        data.from_rankings(path)
    result = data.from_rankings(path, on_bad_row="skip")
    assert result.pairs == [  # an empty response is an answer (a model that said nothing), ranked like any other
        {"prompt": "p", "chosen": "a", "rejected": "", "group": 0},
        {"prompt": "p", "chosen": "b", "rejected": "a", "group": 1},  # another ranking of the same prompt
    ]
    assert result.report.skipped == {"wrong type": 3} and result.report.notes == {"empty response": 1}


def test_lab_rankings_expand_to_k_choose_2_minus_ties():
    rows = lab.ranking_dataset(40, 5, lab.LabelerPool(seed=0), seed=0)
    result = data.from_rankings(rows)
    ties = sum(r["ranking"][i] == r["ranking"][j] for r in rows for i in range(5) for j in range(i + 1, 5))
    assert len(result) == 40 * comb(5, 2) - ties and result.report.dropped_pairs["tie"] == ties
    assert max(p["group"] for p in result.pairs) == 39  # one group per ranking, even for a prompt ranked twice


ULTRA = {
    "instruction": "Say hi",
    "completions": [
        {"response": "hi", "overall_score": 7.0},
        {"response": "hello there", "overall_score": 9.0},
        {"response": "go away", "overall_score": 2.0},
        {"response": "meh", "overall_score": 8.5},
    ],
}


@pytest.mark.parametrize(
    "rule, min_gap, rejected",
    [
        ("best_vs_rest", 0.0, {"hi", "go away", "meh"}),
        ("best_vs_rest", 1.0, {"hi", "go away"}),
        ("best_vs_worst", 0.0, {"go away"}),
    ],
)
def test_scores_rules(rule, min_gap, rejected):
    result = data.from_scores([ULTRA], prompt_col="instruction", score_key="overall_score", rule=rule, min_gap=min_gap)
    assert {p["chosen"] for p in result.pairs} == {"hello there"}
    assert {p["rejected"] for p in result.pairs} == rejected
    assert all(p["score_chosen"] - p["score_rejected"] >= min_gap for p in result.pairs)


def test_scores_best_vs_random_is_seeded_and_parallel_lists_work():
    rows = [{"prompt": f"p{i}", "responses": ["a", "b", "c", "d"], "scores": [4, 1, 2, 3]} for i in range(30)]
    one = data.from_scores(rows, responses_col="responses", scores_col="scores", seed=1)
    assert one.pairs == data.from_scores(rows, responses_col="responses", scores_col="scores", seed=1).pairs
    assert {p["chosen"] for p in one.pairs} == {"a"} and len({p["rejected"] for p in one.pairs}) == 3
    assert [p["group"] for p in one.pairs] == list(range(30))
    tied = [{"prompt": "p", "responses": ["a", "b"], "scores": [2, 2]}] + rows[:1]
    result = data.from_scores(tied, responses_col="responses", scores_col="scores")
    assert len(result) == 1 and result.report.dropped_rows == {"no response min_gap below the best": 1}
    with pytest.raises(DataError, match="rule='best'"):
        data.from_scores(rows, rule="best")
    with pytest.raises(DataError, match="row 1: completion 0 of column 'completions' is not a dict"):
        data.from_scores([{"prompt": "p", "completions": ["a", "b"]}])


# ----------------------------------------------------------------------------- votes
def test_votes_to_majority_pairs_with_agreement():
    rows = [
        {"prompt": "p", "response_a": "A", "response_b": "B", "votes": [1, 1, 0]},
        {"prompt": "q", "response_a": "C", "response_b": "D", "votes": [0, 0, 0]},
        {"prompt": "r", "response_a": "E", "response_b": "F", "votes": [1, 0, -1]},  # tie
    ]
    result = data.from_votes(rows)
    assert result.pairs == [
        {"prompt": "p", "chosen": "A", "rejected": "B", "agreement": pytest.approx(2 / 3), "n_votes": 3},
        {"prompt": "q", "chosen": "D", "rejected": "C", "agreement": 1.0, "n_votes": 3},
    ]
    assert result.report.dropped_rows == {"tie": 1}
    assert len(data.from_votes(rows, min_agreement=0.7)) == 1
    with pytest.raises(DataError, match="row 2: column 'votes' has 2 votes but earlier rows have 3"):
        data.from_votes([rows[0], rows[1] | {"votes": [1, 1]}])
    with pytest.raises(DataError, match=r"row 1: column 'votes' must be a list"):
        data.from_votes([rows[0] | {"votes": 1}])
    with pytest.raises(DataError, match=r"row 1: column 'votes' vote 2 has label '2', not one of the labels 1=a, "):
        data.from_votes([rows[0] | {"votes": [1, 2, 0]}])
    # identical responses count for the statistics; they just never become a pair
    same = data.from_votes([rows[0], rows[1] | {"response_b": "C"}])
    assert len(same) == 1 and same.report.dropped_rows == {"identical responses": 1}
    assert same.agreement.report.n_rated_items == 2


def test_lab_comparisons_through_load_preferences():
    rows = lab.comparison_dataset(200, lab.LabelerPool(5, noise=0.2, seed=0), seed=0)
    result = data.load_preferences(rows, "votes", min_agreement=0.8)
    assert 0 < len(result) < 200 and all(p["agreement"] >= 0.8 for p in result.pairs)
    assert result.agreement.report.n_items == 200
    with pytest.raises(DataError, match="format='csv'"):
        data.load_preferences(rows, "csv")


# ----------------------------------------------------------------------------- CLI
def test_cli_convert_hh_and_errors_leave_no_output(tmp_path, capsys):
    src = write_jsonl(
        tmp_path / "hh.jsonl", [GOOD, GOOD | {"chosen": hh("Hi", "Hey")}, {"chosen": 1, "rejected": "x"}]
    )
    out = tmp_path / "out" / "pairs.jsonl"
    assert main(["data", "convert", str(src), "--format", "hh", "--out", str(out)]) == 2
    assert f"error: {src}: row 3: column 'chosen' is int" in capsys.readouterr().err
    assert not out.exists()
    assert main(["data", "convert", str(src), "--format", "hh", "--on-bad-row", "skip", "--out", str(out)]) == 0
    assert "wrong type 1" in capsys.readouterr().out
    assert [json.loads(line)["chosen"][0]["content"] for line in out.open()] == ["Hello!", "Hey"]
    assert (
        main(["data", "convert", str(src), "--format", "hh", "--ranking-col", "r", "--out", str(tmp_path / "x.jsonl")])
        == 2
    )
    assert "--ranking-col does not apply to --format hh" in capsys.readouterr().err


def test_cli_convert_columns_to_parquet(tmp_path):
    src = _write(tmp_path / "in.csv", ROWS)
    out = tmp_path / "pairs.parquet"
    argv = ["data", "convert", str(src), "--format", "columns", "--prompt-col", "q", "--chosen-col", "good"]
    assert main(argv + ["--rejected-col", "bad", "--out", str(out)]) == 0
    assert data.from_columns(out).pairs[1] == {"prompt": ROWS[1]["q"], "chosen": " red.", "rejected": ROWS[1]["bad"]}


def test_cli_convert_keeps_the_soft_label_column_it_is_told(tmp_path):
    src = _write(tmp_path / "in.jsonl", [r | {"judge": 0.9} for r in ROWS])
    out = tmp_path / "pairs.jsonl"
    argv = ["data", "convert", str(src), "--format", "columns", "--prompt-col", "q", "--chosen-col", "good"]
    assert main(argv + ["--rejected-col", "bad", "--p-col", "judge", "--out", str(out)]) == 0
    assert [pair["p"] for pair in data.from_columns(out).pairs] == [0.9, 0.9]


def test_cli_agreement_report_and_filtered_output(tmp_path, capsys):
    pool = lab.LabelerPool(5, noise=[0.15, 0.15, 0.15, 0.15, 0.5], seed=0)
    src = write_jsonl(tmp_path / "votes.jsonl", lab.comparison_dataset(300, pool, seed=0))
    out = tmp_path / "kept.jsonl"
    argv = ["data", "agreement", str(src), "--min-agreement", "0.6", "--drop-unreliable", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Krippendorff" in printed and "Fleiss" in printed and "yes" in printed  # labeler 4 flagged
    kept = [json.loads(line) for line in out.open()]
    assert 150 < len(kept) < 300 and set(kept[0]) == {"prompt", "chosen", "rejected", "agreement", "n_votes"}
    assert max(p["n_votes"] for p in kept) == 4  # labeler 4's votes were removed
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}])
    assert main(["data", "agreement", str(bad), "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "missing column 'votes'" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()


def test_null_cells_from_a_dataset_are_empty_text():
    from datasets import Dataset

    ds = Dataset.from_list(
        [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": None, "rejected": "b"}]
    )
    with pytest.raises(DataError, match="dataset: row 2: column 'chosen' is null"):
        data.from_columns(ds)
    assert data.from_columns(ds, on_bad_row="skip").report.skipped == {"empty text": 1}


def test_soft_labels_pass_the_door_only_with_a_probability_column(tmp_path):
    from rlhfkit.data.checks import soft_label_problems

    path = str(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "p": 0.7}]))
    assert soft_label_problems(path, "data.preferences", "auto") == []
    named = str(write_jsonl(tmp_path / "n.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "judge": 0.7}]))
    assert soft_label_problems(named, "data.preferences", "columns", options={"p_col": "judge"}) == []
    assert "has no 'p' or 'probability' column" in soft_label_problems(named, "data.preferences", "columns")[0]
    votes = str(
        write_jsonl(tmp_path / "v.jsonl", [{"prompt": "q", "response_a": "a", "response_b": "b", "votes": [1]}])
    )
    assert "is read as format 'votes', which has no 'p'" in soft_label_problems(votes, "data.preferences", "auto")[0]
