"""Sampling K responses per prompt into a comparisons file: distinct responses, seeded rows, resuming after a kill."""

import json

import pytest

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.data.comparisons import comparison_row, read_comparisons
from rlhfkit.data.tables import load_prompts
from rlhfkit.feedback import sample as sample_module
from rlhfkit.feedback.sample import resume_rows, sample_comparisons, sample_prompts, sampling_problems
from rlhfkit.models.sampling import Samples, load_for_sampling

SETTINGS = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 3, "k": 3}


@pytest.fixture(scope="module")
def policy(nano_model):
    return load_for_sampling(nano_model)


def _sample(policy, prompts, out, **kw):
    model, tokenizer = policy
    return sample_comparisons(model, tokenizer, prompts, out=out, model_name="nano", **{**SETTINGS, **kw})


def test_one_row_per_prompt_with_k_distinct_responses_and_the_settings(policy, tmp_path):
    prompts = lab.make_prompts(20, seed=1)
    prompts = list(dict.fromkeys(prompts))[:5] + [[{"role": "user", "content": "List 2 fruits."}]]
    text_rows = _sample(policy, prompts[:5], tmp_path / "c.jsonl", batch_size=7)  # 2 prompts a batch
    chat_rows = _sample(policy, prompts[5:], tmp_path / "chat.jsonl")
    assert (text_rows.written, text_rows.responses, text_rows.resumed, chat_rows.written) == (5, 15, 0, 1)
    rows = read_comparisons(tmp_path / "c.jsonl") + read_comparisons(tmp_path / "chat.jsonl")
    assert [r["prompt"] for r in rows] == prompts
    for row in rows:
        assert len(set(row["responses"])) == len(row["responses"]) == 3 and row["model"] == "nano"
        assert row["sampling"] == {**SETTINGS, "duplicates": 0}
        assert row == comparison_row(row["prompt"], row["responses"], model="nano", sampling=row["sampling"])


class _Killed(Exception):
    pass


def _kill_after(batches):
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == batches:
            raise _Killed

    return progress


def test_a_killed_run_resumed_writes_the_rows_of_an_unkilled_one_and_none_twice(policy, tmp_path):
    prompts = list(dict.fromkeys(lab.make_prompts(40, seed=2)))[:7]
    whole = tmp_path / "whole.jsonl"
    _sample(policy, prompts, whole, batch_size=6)  # 2 prompts a batch: 4 batches
    killed = tmp_path / "killed.jsonl"
    with pytest.raises(_Killed):
        _sample(policy, prompts, killed, batch_size=6, progress=_kill_after(2))
    assert len(read_comparisons(killed)) == 4
    with open(killed, "a") as f:  # and killed again, mid-way through writing its third batch
        f.write(whole.read_text().splitlines(keepends=True)[4] + whole.read_text()[:30])
    report = _sample(policy, prompts, killed, batch_size=6)
    assert (report.resumed, report.written) == (5, 2)
    assert killed.read_text() == whole.read_text()
    again = _sample(policy, prompts, killed, batch_size=6)
    assert (again.resumed, again.written) == (7, 0) and killed.read_text() == whole.read_text()
    more = _sample(policy, prompts + lab.make_prompts(1, seed=99), killed, batch_size=6)  # more prompts: appended
    assert more.written == 1 and killed.read_text().startswith(whole.read_text())


def _scripted(monkeypatch, script):
    """generate_ids answers each round from ``script`` (a list of the texts it samples, in order)."""
    rounds = iter(script)

    def fake_generate_ids(model, prompt_ids, **kwargs):
        texts = next(rounds)
        assert len(texts) == len(prompt_ids)
        return Samples(prompts=[], texts=[], prompt_ids=[], response_ids=[[t] for t in texts], finished=[])

    monkeypatch.setattr(sample_module, "generate_ids", fake_generate_ids)
    monkeypatch.setattr(sample_module, "encode_prompts", lambda tokenizer, prompts: [[0]] * len(prompts))


class _Decoder:
    pad_token_id, eos_token_id = 0, 1

    def batch_decode(self, ids, skip_special_tokens):
        return [t for (t,) in ids]


def test_duplicates_are_dropped_counted_and_resampled_for_two_more_rounds(monkeypatch, tmp_path):
    _scripted(
        monkeypatch,
        [
            ["a", "a", "b", "c", "x", "x", "x", "x", "s", "s", "s", "s"],  # k = 4 for each of 3 prompts
            ["a", "y", "x", "x", "s", "s", "s"],  # the missing ones: 1 for p, 3 for q, 3 for r
            ["d", "x", "x", "s", "s", "s"],
        ],
    )
    out = tmp_path / "c.jsonl"
    report = sample_comparisons(
        None, _Decoder(), ["p", "q", "r"], k=4, out=out, model_name="m", max_new_tokens=4, batch_size=12
    )
    rows = read_comparisons(out)
    assert [r["responses"] for r in rows] == [["a", "b", "c", "d"], ["x", "y"]]
    assert [r["sampling"]["duplicates"] for r in rows] == [2, 3 + 2 + 2]
    assert (report.written, report.short, report.skipped, report.duplicates) == (2, 1, 1, 2 + 7 + 9)
    assert "1 prompts skipped (fewer than 2 distinct responses)" in report.summary()


def test_a_policy_that_always_repeats_itself_writes_nothing(policy, tmp_path):
    report = _sample(policy, lab.make_prompts(2, seed=5)[:1], tmp_path / "c.jsonl", top_p=1e-6)  # the argmax
    assert (report.written, report.skipped, report.duplicates) == (0, 1, 2 + 2 + 2)
    assert (tmp_path / "c.jsonl").read_text() == ""


def test_prompts_are_read_as_the_pipeline_reads_them_each_once(tmp_path):
    prompts, repeated = sample_prompts("lab", 30, seed=0)
    assert len(set(prompts)) == 30 and repeated > 0
    assert sample_prompts("lab", 10, seed=0)[0] == prompts[:10]  # more prompts extend the list
    assert len(sample_prompts("lab")[0]) == 72  # the lab's task has 72 distinct prompts
    table = tmp_path / "prompts.jsonl"
    table.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["a", "b", "a", "c"]))
    got, repeated = sample_prompts(str(table), seed=1)
    assert sorted(got) == ["a", "b", "c"] and repeated == 1
    table.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": " "}) + "\n")
    with pytest.raises(DataError, match=r"prompt \d is empty; remove the row or fill in the text"):
        sample_prompts(str(table))


def test_a_file_that_cannot_be_resumed_is_refused_with_one_line(tmp_path):
    out, prompts = tmp_path / "c.jsonl", ["p", "q"]
    row = comparison_row("p", ["x", "y"], model="nano", sampling={**SETTINGS, "duplicates": 0})
    out.write_text(json.dumps(row) + "\n")
    assert resume_rows(out, "nano", SETTINGS, prompts) == {'"p"'}
    cases = [
        ("other", SETTINGS, prompts, r"sampled with other settings: model 'nano' \(now 'other'\)"),
        ("nano", {**SETTINGS, "k": 4, "seed": 0}, prompts, r"seed 3 \(now 0\), k 3 \(now 4\); give another --out"),
        ("nano", SETTINGS, ["q"], r"row 1's prompt 'p' is not among the 1 prompts asked for"),
    ]
    for name, settings, asked, message in cases:
        with pytest.raises(DataError, match=message):
            resume_rows(out, name, settings, asked)
    out.write_text(json.dumps({k: v for k, v in row.items() if k != "sampling"}) + "\n")
    with pytest.raises(DataError, match="row 1 has no sampling settings: not written by `rlhfkit sample`"):
        resume_rows(out, "nano", SETTINGS, prompts)
    for text in ('{"prompt": "p"}\n', "my notes, no newline"):
        out.write_text(text)
        with pytest.raises(DataError, match="not a comparisons file.*give another --out"):
            resume_rows(out, "nano", SETTINGS, prompts)
    out.write_text('{"item_id": "ab')  # our first row, cut: resumed from nothing
    assert resume_rows(out, "nano", SETTINGS, prompts) == set()


def test_bad_settings_are_refused_together():
    problems = sampling_problems(k=1, temperature=0, top_p=0, max_new_tokens=0, seed=-1, batch_size=0, flags=True)
    flags = ["--k", "--temperature", "--top-p", "--max-new-tokens", "--seed", "--batch-size"]
    assert [p.split(" ")[0] for p in problems] == flags
    with pytest.raises(ConfigError, match="k=1 must be >= 2"):
        sample_comparisons(None, None, ["p"], k=1, out="unused.jsonl", model_name="m")


def test_prompts_held_out_for_the_final_evaluation_are_not_sampled(tmp_path):
    table = tmp_path / "prompts.jsonl"
    table.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(10)))
    held = load_prompts(str(table), seed=3, held_out=4)[1]
    got, _ = sample_prompts(str(table), seed=3, held_out=4)
    assert len(got) == 6 and not set(got) & set(held)
