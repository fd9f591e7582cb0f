"""Which config keys feed which pipeline stage: derived from the config classes, complete, and a changed key of any
section changes the hash of the stage that used it (and of every later stage), never of an earlier one."""

from __future__ import annotations

import dataclasses
import json
from importlib.resources import files

import pytest
import yaml

from rlhfkit.pipeline.config import (
    FIELD_SECTIONS,
    SECTIONS,
    STAGE_KEYS,
    STAGES,
    TRL_SECTIONS,
    WHOLE_SECTIONS,
    load_config,
    stage_digests,
)

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def digests(raw: dict) -> dict[str, str]:
    """Each stage's hash as the runner computes it (its inputs plus the hash of the stage before it)."""
    return {stage: digest for stage, (_, digest) in stage_digests(load_config(raw)).items()}


def test_every_config_key_feeds_a_stage():
    # rounds feeds only the rounds' stages, as a whole (tests/pipeline/test_rounds.py)
    assert set(WHOLE_SECTIONS) | set(FIELD_SECTIONS) == {"seed", *SECTIONS, *TRL_SECTIONS} - {"rounds"}
    when = {"preferences.min_votes"}  # when a stage goes on (people's votes), not what it makes: no stage redone
    for section, cls in FIELD_SECTIONS.items():
        for f in dataclasses.fields(cls):
            stages = f.metadata.get("stages")
            if f"{section}.{f.name}" in when:
                assert stages == (), f"{section}.{f.name} feeds {stages}"
                continue
            assert stages and set(stages) <= set(STAGES), f"{section}.{f.name} names no pipeline stage"
    listed = {key for keys in STAGE_KEYS.values() for key in keys}
    expected = {*WHOLE_SECTIONS, *(f"{s}.{f.name}" for s, c in FIELD_SECTIONS.items() for f in dataclasses.fields(c))}
    assert listed == expected - when


# One key of every section -> (a new value, the first stage that must be redone).
CHANGES = [
    ("seed", None, 1, "sft"),
    ("model", "preset", "lora", "sft"),
    ("lab", "demonstrations", 700, "sft"),
    ("lab", "noise", 0.2, "preferences"),
    ("lab", "rl_prompts", 100, "rl"),
    ("data", "eval_fraction", 0.1, "sft"),
    ("data", "preference_format", "votes", "preferences"),
    ("data", "preference_options", {"labeler_cols": "a1,a2", "labels": "1=a,2=b,0=tie"}, "preferences"),
    ("data", "max_prompts", 10, "rl"),
    ("agreement", "min_agreement", 0.8, "preferences"),
    ("agreement", "ties", "margin", "preferences"),
    ("sft", "learning_rate", 1e-3, "sft"),
    ("reward", "max_steps", 7, "reward"),
    ("reward", "group_rankings", False, "reward"),
    ("reward", "ensemble_size", 3, "reward"),
    ("gate", "min_accuracy", 0.7, "rm_eval"),
    ("gate", "override", True, "rl"),
    ("rl", "layout", "separate", "rl"),
    ("rl", "reward_aggregation", "mean_minus_std", "rl"),
    ("rl", "eval_prompts", 50, "final_eval"),
    ("rl", "eval_temperature", 0.7, "final_eval"),
    ("rl", "algorithm", "dpo", "rl"),
    ("ppo", "kl_coef", 0.3, "rl"),
    ("monitor", "kl_limit", 0.3, "rl"),
]


@pytest.mark.parametrize("section, key, value, first", CHANGES, ids=[f"{s}.{k}" if k else s for s, k, *_ in CHANGES])
def test_a_changed_key_redoes_its_stage_and_the_later_ones(tmp_path, section, key, value, first):
    raw = json.loads(json.dumps(DEMO))
    raw["output_dir"] = str(tmp_path / "run")
    before = digests(raw)
    if key is None:
        raw[section] = value
    else:
        raw.setdefault(section, {})[key] = value
    after = digests(raw)
    changed = [stage for stage in STAGES if before[stage] != after[stage]]
    assert changed == list(STAGES[STAGES.index(first) :])


@pytest.mark.parametrize("section, key, value", [("grpo", "beta", 0.5), ("rloo", "beta", 0.5), ("dpo", "beta", 0.5),
                                                ("best_of_n", "rounds", 5)])  # fmt: skip
def test_the_other_rl_algorithms_sections_do_not_count(tmp_path, section, key, value):
    raw = json.loads(json.dumps(DEMO))
    raw["output_dir"] = str(tmp_path / "run")
    assert DEMO["rl"]["algorithm"] == "ppo"
    before = digests(raw)
    raw.setdefault(section, {})[key] = value
    assert digests(raw) == before
    raw["rl"]["algorithm"] = section
    after = digests(raw)
    assert [s for s in STAGES if after[s] != before[s]] == ["rl", "final_eval"]
