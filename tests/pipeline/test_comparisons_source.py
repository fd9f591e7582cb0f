"""``preferences.source: comparisons``: the run's own SFT model answers K times per prompt, the lab's labelers (or
people's votes file) label the answers, agreement filtering makes pairs or K-wise rankings, the reward model trains on
them. The keys are checked at the door; a slow test runs sample -> lab labels -> agreement -> reward model."""

import json
from importlib.resources import files

import pytest
import yaml

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import read_jsonl
from rlhfkit.data.comparisons import AppendLog, read_comparisons
from rlhfkit.data.votelog import read_vote_log
from rlhfkit.feedback.judge import DEFAULT_CONSTITUTION
from rlhfkit.feedback.lab_judge import build_judge
from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.runner import run_pipeline
from rlhfkit.pipeline.validate import check_pipeline
from tests.pipeline.test_pipeline import small

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def config(out, preferences=None, **sections) -> dict:
    raw = json.loads(json.dumps(DEMO)) | {"output_dir": str(out)}
    raw["preferences"] = {"source": "comparisons", **(preferences or {})}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize(
    "preferences, sections, message",
    [
        ({"kk": 4}, {}, r"unknown key\(s\) \['preferences.kk'\]"),
        ({"k": 1}, {}, r"preferences.k=1: must be >= 2 \(e.g. k: 4\)"),
        ({"temperature": 0}, {}, r"preferences.temperature=0: must be > 0"),
        ({"labels": "crowd"}, {}, r"preferences.labels='crowd' must be one of lab, people"),
        ({"labels": "people"}, {}, r"preferences.labels=people reads the votes people gave; set votes:"),
        ({"votes": "v.jsonl"}, {}, r"preferences.votes='v.jsonl' is read only with source: comparisons and labels: p"),
        ({"source": "judge"}, {}, r"preferences.source=judge needs judge: the judge model"),
        ({"judge": "j"}, {}, r"preferences.judge='j' is read only with source: judge"),
        ({"principles_per_pair": 2}, {}, r"preferences.principles_per_pair=2 is read only with source: judge"),
        (
            {"source": "judge", "judge": "j", "tie_margin": 0.5},
            {},
            r"preferences.tie_margin=0.5: must be in \[0, 0.5\)",
        ),
        ({"source": "judge", "judge": "j", "labels": "people"}, {}, r"labels=people is read only with source: comp"),
        ({}, {"reward": {"soft_labels": True}}, r"reward.soft_labels=true needs a judge's probabilities p"),
        ({"source": "crowd"}, {}, r"preferences.source='crowd' must be one of data, comparisons, judge"),
        ({}, {"data": {"preferences": "pairs.jsonl"}}, r"data.preferences is not read with preferences.source: comp"),
        ({}, {"data": {"eval_fraction": 0}}, r"data.eval_fraction=0 holds out no labelled comparisons"),
    ],
)
def test_every_key_is_checked_at_the_door(tmp_path, preferences, sections, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(config(tmp_path / "run", preferences, **sections))
    assert len(caught.value.problems) == 1  # one line, naming the key
    assert not (tmp_path / "run").exists()


def test_the_judge_and_its_constitution_are_checked_at_the_door(tmp_path):
    bad = tmp_path / "constitution.yaml"
    bad.write_text("- name: two words\n  text: be brief\n")
    raw = config(tmp_path / "run", {"source": "judge", "judge": str(tmp_path / "no-judge"), "constitution": str(bad)})
    with pytest.raises(ConfigError) as caught:
        check_pipeline(raw)
    judge, constitution = caught.value.problems
    assert judge.startswith("preferences.judge=") and "no-judge" in judge
    assert constitution.startswith(f"preferences.constitution {bad}: entry 1: name='two words' must be one word")
    bad.write_text("- name: brief\n  text: be brief\n")
    raw["preferences"]["principles_per_pair"] = 2
    with pytest.raises(ConfigError) as caught:
        check_pipeline(raw)
    assert caught.value.problems[1] == (
        "preferences.principles_per_pair=2 is more than the constitution's 1 principles; lower it to at most 1 or add "
        "principles"
    )


def test_the_people_votes_file_is_checked_and_kept_out_of_the_stage_folder(tmp_path):
    out = tmp_path / "run"
    inside = {"labels": "people", "votes": str(out / "preferences" / "votes.jsonl")}
    with pytest.raises(ConfigError, match=r"is inside .*preferences', which the stage removes when it starts over"):
        load_config(config(out, inside))
    votes = tmp_path / "votes.jsonl"
    cfg = check_pipeline(config(out, {"labels": "people", "votes": str(votes)}))  # not labelled yet: fine
    assert cfg.preferences.votes == str(votes) and cfg.preferences.labels == "people"
    votes.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ConfigError, match=r"preferences.votes=.* has columns \['chosen', 'prompt', 'rejected'\]"):
        check_pipeline(config(out, {"labels": "people", "votes": str(votes)}))


def _lab_loop(out, **preferences) -> dict:
    """The demo shrunk: SFT learns the task roughly (200 steps), the lab's 72 prompts get 4 answers each."""
    raw = small(out)
    raw["sft"].update(max_steps=200, save_steps=100)
    raw["reward"].update(max_steps=200, save_steps=100)
    raw["preferences"] = {"source": "comparisons", "prompts": 72, "k": 4, "max_new_tokens": 24, **preferences}
    raw["data"] = {"eval_fraction": 0.2}
    return raw


@pytest.mark.slow
def test_sample_lab_labels_agreement_reward_model_then_people_then_a_judge(tmp_path):
    """~1.5 minutes: the lab's loop end to end, then the same comparisons labelled by "people" (a votes file), then by
    a lab judge."""
    out = tmp_path / "run"
    manifest = run_pipeline(load_config(_lab_loop(out)), until="rm_eval", say=lambda _: None)
    stage = out / "preferences"
    rows = read_comparisons(stage / "comparisons.jsonl")
    assert len(rows) == 72 and all(2 <= len(r["responses"]) <= 4 for r in rows)
    votes = read_vote_log(stage / "votes.jsonl")
    pairs_per_item = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)
    assert len(votes) == 5 * pairs_per_item and {v["labeler"] for v in votes} == {f"lab:{j}" for j in range(5)}
    metrics = manifest.stage("preferences")["metrics"]
    assert metrics["n_votes"] == len(votes) and metrics["n_prompts"] == 72
    # measured 0.99 over ~110 pairs of unequal gold (majorities of 4 labelers of noise <= 0.25, 3:1 or better)
    assert metrics["gold_agreement_filtered"] > 0.8
    train = read_jsonl(stage / "train.jsonl")
    assert {p["group"] for p in train} <= {r["item_id"] for r in rows}  # K-wise rankings, one per item
    assert json.loads((stage / "agreement.json").read_text())["n_labelers"] == 5
    assert manifest.stage("reward")["status"] == "done" and "accuracy" in manifest.stage("rm_eval")["metrics"]

    people = tmp_path / "votes.jsonl"  # outside the run folder
    cfg = load_config(_lab_loop(out, labels="people", votes=str(people)))
    waiting = run_pipeline(cfg, from_stage="preferences", until="preferences", say=lambda _: None).waiting()
    assert waiting[0] == "preferences" and waiting[1]["waiting"]["command"].startswith("rlhfkit label ")
    resampled = read_comparisons(stage / "comparisons.jsonl")
    assert [r["item_id"] for r in resampled] == [r["item_id"] for r in rows]  # seeded: the same answers
    names = {f"lab:{j}": name for j, name in enumerate(("alice", "bob", "carol"))}
    labelled = lab.LabelerPool(3, noise=0.1, seed=1).answer(resampled, seed=2)
    with AppendLog(people) as log:
        log.append(*[{**v, "labeler": names[v["labeler"]]} for v in labelled])
    manifest = run_pipeline(cfg, until="preferences", say=lambda _: None)  # resumes: the comparisons are kept
    metrics = manifest.stage("preferences")["metrics"]
    assert metrics["n_votes"] == len(labelled) and metrics["n_pairs"] > 0
    assert read_vote_log(stage / "votes.jsonl") == read_vote_log(people)

    judge = build_judge(tmp_path / "judge", n_train=1600, steps=200)  # weak: ~0.6 vs gold, ~70% ties
    raw = _lab_loop(out, source="judge", judge=str(judge))
    raw["agreement"]["drop_unreliable"] = False  # a tie rate over 0.5 flags every principle of this weak judge
    cfg = load_config(raw)
    manifest = run_pipeline(cfg, from_stage="preferences", until="preferences", say=lambda _: None)
    judged = read_vote_log(stage / "votes.jsonl")
    principles = {v["labeler"] for v in judged}
    assert len(principles) == len(DEFAULT_CONSTITUTION) and all(n.startswith("judge:judge:") for n in principles)
    assert len(judged) == len(principles) * pairs_per_item and all("p_orders" in v for v in judged)
    metrics = manifest.stage("preferences")["metrics"]
    assert metrics["n_votes"] == len(judged) and metrics["n_pairs"] > 0
    assert all(0 <= p["p"] <= 1 for p in read_jsonl(stage / "train.jsonl"))  # the judge's soft labels ride along
