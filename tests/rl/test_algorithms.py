"""The algorithm registry: every record names a config class and a run function that exist, its length field is a
field of its config, and every place that lists the algorithms reads the registry (or agrees with it)."""

import dataclasses
import inspect

import pytest

from rlhfkit.core.presets import TRAINERS
from rlhfkit.pipeline.config import TRAINER_CONFIGS, TRL_SECTIONS
from rlhfkit.planner.plans import GROUP_TRAINERS, SAMPLING_TRAINERS, SEQ_LEN_FIELD
from rlhfkit.rl.algorithms import ALGORITHMS, RL_ALGORITHMS, USES_REWARD_MODEL, Algorithm, load


@pytest.mark.parametrize("name", RL_ALGORITHMS)
def test_each_record_names_a_config_and_a_run_that_exist(name):
    algorithm = ALGORITHMS[name]
    config = algorithm.config_class()
    fields = {f.name for f in dataclasses.fields(config)}
    assert algorithm.length_field in fields and algorithm.planner_seq_field in fields
    run = algorithm.runner()
    assert run.__name__ == f"run_{name}"
    params = inspect.signature(run).parameters
    assert list(params)[:3] == ["model_name_or_path", "train_dataset", "config"]
    assert all(p.kind is not p.VAR_KEYWORD for p in params.values()), f"run_{name} hides its keywords in **kwargs"


def test_every_list_of_algorithms_is_the_registry():
    assert TRAINERS == ("sft", "reward", *RL_ALGORITHMS)
    assert set(TRAINER_CONFIGS) == set(TRAINERS)
    assert {n: TRAINER_CONFIGS[n] for n in RL_ALGORITHMS} == {n: a.config_class() for n, a in ALGORITHMS.items()}
    assert set(USES_REWARD_MODEL) == set(RL_ALGORITHMS) - {"dpo"}  # DPO fits the pairs, not the reward model
    assert set(SAMPLING_TRAINERS) == {"ppo", "grpo", "rloo", "best_of_n"} and set(GROUP_TRAINERS) == {"grpo", "rloo"}
    assert {n: SEQ_LEN_FIELD[n] for n in RL_ALGORITHMS} == {n: a.planner_seq_field for n, a in ALGORITHMS.items()}
    assert TRL_SECTIONS == ("sft", "reward", *RL_ALGORITHMS, "monitor")  # a config section per algorithm


def test_a_record_is_read_lazily():
    record = Algorithm("toy", "collections:OrderedDict", "json:dumps", uses_reward_model=False, length_field="x")
    assert record.config_class().__name__ == "OrderedDict" and record.runner()([1]) == "[1]"
    assert load("math:pi") == pytest.approx(3.14159, abs=1e-5)
