"""The AI judge: constitution files, answer tokens, both-order probabilities (batched == one at a time), vote rows,
resuming, and its statistics."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.judge_votes import gold_accuracy, judge_stats
from rlhfkit.data.votelog import read_vote_log
from rlhfkit.feedback.judge import (
    DEFAULT_CONSTITUTION,
    Principle,
    answer_token_ids,
    encode_orders,
    first_answer_probs,
    judge_file,
    load_constitution,
    load_judge,
    order_probs,
    vote_label,
)

REPO = Path(__file__).resolve().parents[2]
SHORT = "- {name: short, text: Pick the better one.}\n- {name: brief, text: Be good.}\n"  # fits nano's 128 tokens


@pytest.fixture
def comparisons(tmp_path) -> Path:
    """8 lab items of 3 distinct responses each (3 pairs per item)."""
    rng = random.Random(0)
    rows = []
    for prompt in lab.make_prompts(40, seed=3):
        responses = list(dict.fromkeys(lab.candidates(prompt, 3, rng)))
        if len(responses) == 3 and len(rows) < 8:
            rows.append(comparison_row(prompt, responses, model="lab"))
    path = tmp_path / "comparisons.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def short_constitution(tmp_path) -> Path:
    path = tmp_path / "constitution.yaml"
    path.write_text(SHORT)
    return path


def test_default_constitution_is_the_shipped_file():
    shipped = yaml.safe_load((REPO / "configs" / "constitution.yaml").read_text())
    assert [Principle(**p) for p in shipped] == list(DEFAULT_CONSTITUTION)
    assert load_constitution(REPO / "configs" / "constitution.yaml") == DEFAULT_CONSTITUTION
    assert load_constitution(None) == DEFAULT_CONSTITUTION


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\ntext: y\n", r"expected a non-empty YAML list"),
        ("- {name: a, text: ok}\n- {name: b}\n", r"entry 2 is .*each entry is \{name"),
        ("- {name: 'two words', text: ok}\n", r"entry 1: name='two words' must be one word"),
        ("- {name: a, text: '  '}\n", r"entry 1 \(a\): text='  ' must be"),
        ("- {name: a, text: x}\n- {name: a, text: y}\n", r"entry 2: name 'a' is given twice"),
        ("- [unclosed\n", r"not valid YAML"),
    ],
)
def test_a_bad_constitution_names_the_entry(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_constitution(path)


def test_answers_must_be_single_tokens(nano_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(nano_model)
    one, two = answer_token_ids(tokenizer)
    assert tokenizer.decode([one]) == "1" and tokenizer.decode([two]) == "2"
    with pytest.raises(ConfigError, match=r"the answer 'zebra crossing' is \d+ tokens .* --answer-tokens A,B"):
        answer_token_ids(tokenizer, ("zebra crossing", "2"), "nano")
    with pytest.raises(ConfigError, match="are the same token"):
        answer_token_ids(tokenizer, ("1", "1"))


def test_vote_label_ties_within_the_margin():
    assert [vote_label(p, 0.05) for p in (0.56, 0.54, 0.46, 0.44)] == ["a", "tie", "tie", "b"]
    assert vote_label(0.5, 0.0) == "b"  # no margin: no tie, and exactly 0.5 is not a preference for a


def test_both_orders_batched_equal_one_at_a_time(nano_model):
    """Left padding with counted positions gives each sequence the probabilities of its unpadded pass, and p_orders[1]
    is the swapped order read back in the file's order."""
    judge = load_judge(nano_model)
    rng = random.Random(1)
    jobs = [("Be good.", p, *lab.candidates(p, 2, rng)) for p in lab.make_prompts(12, seed=5)]
    encoded = encode_orders(judge, jobs)
    assert len({len(s) for pair in encoded for s in pair}) > 1  # lengths differ: batches are padded
    batched = order_probs(judge, encoded, batch_size=4)
    pad = judge.tokenizer.pad_token_id
    for (first, swapped), p_orders in zip(encoded, batched, strict=True):
        alone = [
            first_answer_probs(judge.model, [s], judge.answer_ids, pad_token_id=pad, batch_size=1)[0]
            for s in (first, swapped)
        ]
        np.testing.assert_allclose(p_orders, [alone[0], 1 - alone[1]], atol=1e-5)


def test_judge_file_writes_both_order_votes_and_resumes(nano_model, comparisons, short_constitution, tmp_path):
    out = tmp_path / "votes.jsonl"
    report = judge_file(comparisons, out, model=nano_model, constitution=short_constitution, tie_margin=0.02)
    votes = read_vote_log(out)
    assert report.n_written == len(votes) == 8 * 3 * 2 and report.n_skipped == 0  # items x C(3, 2) x principles
    assert report.labelers == ("judge:nano:brief", "judge:nano:short")
    assert {tuple(v["pair"]) for v in votes} == {(0, 1), (0, 2), (1, 2)}
    for v in votes:
        assert v["shown_order"] == v["pair"] and v["p"] == pytest.approx(np.mean(v["p_orders"]))
        assert v["label"] == vote_label(v["p"], 0.02)
    assert report.n_pairs == 48 and report.to_dict() == {**report.to_dict(), **judge_stats(votes)}

    again = judge_file(comparisons, out, model=nano_model, constitution=short_constitution)
    assert again.n_written == 0 and again.n_skipped == 48 and len(read_vote_log(out)) == 48

    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:20]))  # as if killed after 20 votes
    resumed = judge_file(
        comparisons, out, model=nano_model, constitution=short_constitution, tie_margin=0.02, preset=None
    )  # preset None: full
    rerun = read_vote_log(out)
    assert resumed.n_written == 28 and len(rerun) == 48
    assert len({(v["item_id"], tuple(v["pair"]), v["labeler"]) for v in rerun}) == 48  # nothing twice
    by_key = {(v["item_id"], tuple(v["pair"]), v["labeler"]): v["p_orders"] for v in votes}
    for v in rerun:
        np.testing.assert_allclose(v["p_orders"], by_key[v["item_id"], tuple(v["pair"]), v["labeler"]], atol=1e-5)


def test_principles_per_pair_is_a_seeded_sample(nano_model, comparisons, short_constitution, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        judge_file(comparisons, out, model=nano_model, constitution=short_constitution, principles_per_pair=1)
        runs.append(sorted((v["item_id"], tuple(v["pair"]), v["labeler"]) for v in read_vote_log(out)))
    assert runs[0] == runs[1] and len(runs[0]) == 8 * 3  # one principle per pair, the same one on every run
    assert len({labeler for _, _, labeler in runs[0]}) == 2  # both principles are drawn


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tie_margin": 0.5}, r"tie_margin=0.5 must be in \[0, 0.5\)"),
        ({"principles_per_pair": 3}, r"principles_per_pair=3 must be 1..2"),
        ({"batch_size": 0}, r"batch_size=0 must be a whole number >= 1 \(pairs per forward pass\)"),
    ],
)
def test_bad_options_fail_before_loading_the_model(comparisons, short_constitution, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        judge_file(
            comparisons, tmp_path / "v.jsonl", model="/no/such/model", constitution=short_constitution, **options
        )
    assert not (tmp_path / "v.jsonl").exists()


def test_the_votes_file_must_be_a_file(comparisons, short_constitution, tmp_path):
    with pytest.raises(ConfigError, match=r"out '.*' is a folder; give a file name"):
        judge_file(comparisons, tmp_path, model="/no/such/model", constitution=short_constitution)


def test_a_prompt_longer_than_the_judge_reads_names_the_item(nano_model, comparisons, tmp_path):
    message = (
        r"item \w+: the judging prompt of pair \[0, 1\] under principle 'helpful' is \d+ tokens, over the judge's 128"
    )
    with pytest.raises(DataError, match=message):
        judge_file(comparisons, tmp_path / "v.jsonl", model=nano_model)  # the default constitution: too long for nano


def test_judge_stats_and_gold_accuracy_by_hand():
    prompt = lab.make_prompt("fruits", 2)
    good, bad = " apple, pear.", " apple, dog."
    item = {"item_id": "x", "prompt": prompt, "responses": [good, bad]}

    def row(p_orders, label):
        return {**item, "mode": "pairwise", "pair": [0, 1], "label": label, "p_orders": p_orders}

    rows = [row([0.9, 0.8], "a"), row([0.9, 0.2], "tie"), row([0.3, 0.2], "b"), {**item, "mode": "pairwise"}]
    stats = judge_stats(rows)  # the last row has no p_orders: not a judge vote
    assert stats["n_pairs"] == 3 and stats["position_consistency"] == pytest.approx(2 / 3)
    # one-order verdicts choosing the response shown first: 0.9 (yes), 0.8 (no: j shown first, i chosen), 0.9, 0.2
    # (yes: j chosen), 0.3 (no), 0.2 (yes)
    assert stats["left_choice_rate"] == pytest.approx(4 / 6) and stats["tie_rate"] == pytest.approx(1 / 3)
    assert gold_accuracy(rows[:3]) == (pytest.approx(0.5), 3)  # right, tie (one half), wrong
    assert gold_accuracy(rows[:3], order=0) == (pytest.approx(2 / 3), 3)
    assert gold_accuracy(rows[:3], order=1) == (pytest.approx(1 / 3), 3)
    assert judge_stats([])["position_consistency"] is None


def test_cli_label_with_a_judge_writes_votes_agreement_reads(
    nano_model, comparisons, short_constitution, tmp_path, capsys
):
    from rlhfkit.cli import main

    out = tmp_path / "votes.jsonl"
    argv = ["label", str(comparisons), "--out", str(out), "--judge", str(nano_model)]
    assert (
        main([*argv, "--constitution", str(short_constitution), "--principles-per-pair", "1", "--tie-margin", "0"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "judged 24 pairs x principles" in printed and "position consistency" in printed
    votes = read_vote_log(out)
    assert len(votes) == 8 * 3 and all(v["labeler"].startswith("judge:nano:") for v in votes)
    assert main(["label", str(comparisons), "--out", str(out), "--judge", "m", "--answer-tokens", "1"]) == 2
    assert "--answer-tokens '1' must be two different answers" in capsys.readouterr().err
    summary = tmp_path / "agreement.json"
    assert main(["data", "agreement", str(out), "--min-agreement", "0", "--json", str(summary)]) == 0
    assert json.loads(summary.read_text())["judge"]["n_pairs"] == 24
