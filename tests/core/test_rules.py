"""rlhfkit.core.rules: every config field checked by its type and range, generically (a field added later is
covered)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest
from trl import RewardConfig, SFTConfig

from rlhfkit.core.arguments import PREFERENCE_FORMATS, DataArguments, ModelArguments
from rlhfkit.core.rules import AT_LEAST_ONE, FRACTION, Range, check_values, config_problems, unknown_keys
from rlhfkit.data import FORMATS
from rlhfkit.monitors import MonitorConfig
from rlhfkit.rl.configs import GRPOConfig
from rlhfkit.rl.ppo.config import PPOConfig


@dataclass
class Section:
    """A config class as a new section might add it: checked by its annotations, field names and RANGES."""

    learning_rate: float = 1e-4
    rollout_batch_size: int = 8  # "*batch_size": >= 1, by name
    mode: Literal["fast", "slow"] = "fast"
    steps: int | None = None
    flag: bool = False
    name: str = "x"
    share: float = 0.1
    anything: list = field(default_factory=list)

    RANGES: ClassVar[dict[str, Range]] = {"share": FRACTION, "steps": AT_LEAST_ONE}


def test_ranges_describe_themselves():
    assert Range(0, low_open=True).describe() == "> 0"
    assert Range(1, special=(-1,)).describe() == ">= 1 (or -1)"
    assert FRACTION.describe() == "in [0, 1)" and not FRACTION.allows(1.0) and FRACTION.allows(0.0)
    assert not Range(0).allows(float("nan"))


def test_values_are_converted_then_checked_by_type_and_range():
    values, problems = check_values(Section, {"learning_rate": "1e-4", "steps": "1e3", "share": "5e-2"})
    assert values == {"learning_rate": 1e-4, "steps": 1000, "share": 0.05} and problems == []
    assert check_values(Section, {"steps": 3.0})[0] == {"steps": 3}  # a whole float for an int field
    assert check_values(Section, {"flag": "false", "steps": "None"})[0] == {"flag": False, "steps": None}  # CLI text
    bad = {
        "learning_rate": [0.1, 0.2],
        "rollout_batch_size": 0,
        "mode": "medium",
        "steps": 2.5,
        "flag": 1,
        "name": ["a"],
        "share": 1.0,
        "anything": 3,
    }
    _, problems = check_values(Section, bad, prefix="sec.")
    assert problems == [
        "sec.learning_rate=[0.1, 0.2] is not a number; write one, e.g. learning_rate: 1.0e-4",
        "sec.rollout_batch_size=0: must be >= 1 (e.g. rollout_batch_size: 8)",
        "sec.mode='medium' must be one of 'fast', 'slow'",
        "sec.steps=2.5 is not a whole number; write one, e.g. steps: 8",
        "sec.flag=1 is not true or false; write one, e.g. flag: true",
        "sec.name=['a'] is not text; write one, e.g. name: text",
        "sec.share=1.0: must be in [0, 1) (e.g. share: 0.05)",
    ]  # `anything` (a list) has no simple type: left to the class
    assert check_values(Section, {"learning_rate": None})[1] == [
        "learning_rate=null is not a number; write one, e.g. learning_rate: 1.0e-4"
    ]
    assert check_values(Section, {"steps": None, "name": 3})[1] == []  # optional; TRL turns scalars into text


def test_every_trainer_configs_defaults_pass_the_rules(tmp_path):
    for cls in (SFTConfig, RewardConfig, GRPOConfig, PPOConfig):
        assert config_problems(cls(output_dir=str(tmp_path), use_cpu=True, bf16=False)) == [], cls.__name__
    for obj in (MonitorConfig(), DataArguments(), ModelArguments()):
        assert config_problems(obj) == []


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (SFTConfig, {"learning_rate": 0}, "learning_rate=0: must be > 0"),
        (RewardConfig, {"per_device_train_batch_size": 0}, "per_device_train_batch_size=0: must be >= 1"),
        (RewardConfig, {"max_steps": -5}, r"max_steps=-5: must be >= 1 \(or -1\)"),
        (GRPOConfig, {"beta": -0.1}, "beta=-0.1: must be >= 0"),
        (GRPOConfig, {"num_generations": 1}, "num_generations=1: must be >= 2"),
        (PPOConfig, {"kl_coef": -1}, "kl_coef=-1: must be >= 0"),
        (PPOConfig, {"gamma": 1.5}, r"gamma=1.5: must be in \[0, 1\]"),
        (MonitorConfig, {"entropy_collapse_fraction": 2}, r"entropy_collapse_fraction=2: must be in \[0, 1\]"),
    ],
)
def test_trl_fields_are_ranged_by_name(cls, values, message):
    _, problems = check_values(cls, values)
    assert len(problems) == 1
    assert re.search(message, problems[0])


def test_unknown_keys_name_the_closest_valid_one():
    assert unknown_keys({"kl_limt": 1, "kl_limit": 2}, ["kl_limit", "kl_caution"], "monitor.") == [
        "unknown key(s) ['monitor.kl_limt'] (did you mean monitor.kl_limit?); valid keys: ['kl_caution', 'kl_limit']"
    ]
    assert unknown_keys({"a": 1}, ["a"]) == []


def test_the_config_knows_every_preference_format():
    assert PREFERENCE_FORMATS == ("auto", *FORMATS)
