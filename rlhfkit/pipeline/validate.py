"""Every bad input stopped at the door: a whole run is checked before anything runs, and every problem is reported.

* :func:`check_pipeline` -- what ``rlhfkit run`` (and ``--check``, and ``recipes/instructgpt.py``) calls: every value
  (:func:`rlhfkit.pipeline.config.load_config`), every data source, the model and the output folder; returns the
  config or raises one :class:`~rlhfkit.core.errors.ConfigError` listing all problems, before any folder is created.
* :func:`check_recipe` -- the same for a recipe's parsed arguments (values are checked by
  :func:`rlhfkit.core.arguments.parse_recipe`); :func:`run_recipe` parses, checks and runs a recipe's ``main`` through
  the one error path (:mod:`rlhfkit.core.entry`).
* :func:`check_preference_file`, :func:`check_plan_config` -- the same for ``data convert`` / ``agreement`` and
  ``plan --config`` (``eval-rm`` combines the ``*_problems`` functions below with its own pair loading).
* :func:`data_problems` (exists, readable, decodes, non-empty, has the columns a stage needs: only the first rows are
  read), :func:`model_problems` (config and tokenizer load; a reward model has a trained score head: no weights are
  loaded), :func:`output_dir_problems` and :func:`output_file_problems` (creatable, writable, not a file / a folder,
  and a run folder holds only what rlhfkit writes there).

Each ``*_problems`` function returns a list of one-line problems naming the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.core.arguments import DataArguments, ModelArguments, parse_recipe, read_yaml
from rlhfkit.core.checks import folder_problems, output_file_problems
from rlhfkit.core.entry import pop_debug, run_guarded
from rlhfkit.core.errors import ConfigError, raise_problems
from rlhfkit.core.rules import check_values
from rlhfkit.data.checks import PROMPT_COLUMNS, SFT_COLUMNS, data_problems, preference_problems, soft_label_problems
from rlhfkit.feedback.judge import load_constitution
from rlhfkit.models.checks import model_problems
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.config import (
    RL_ALGORITHMS,
    STAGES,
    TRAINER_CONFIGS,
    DataSources,
    PipelineConfig,
    PreferencesArguments,
    load_config,
    read_config,
)
from rlhfkit.pipeline.lock import LOCK_FILE
from rlhfkit.pipeline.manifest import MANIFEST

# What rlhfkit writes at the top of a run folder (besides the stage folders and temporary .NAME.*.tmp files).
RUN_FOLDER_FILES = (MANIFEST, LOCK_FILE, "report.md", "report.json", "plots", "base_model")
# What `rlhfkit compare` adds (rlhfkit.pipeline.compare): a folder per algorithm, the best-of-N curve and the
# comparison; bench/alternatives_sweep.py keeps its runs in sweep/.
COMPARE_FILES = (*RL_ALGORITHMS, "best_of_n_curve.json", "compare.json", "compare.md", "compare.png", "sweep")


def is_run_entry(name: str) -> bool:
    """Whether a name at the top of a run folder is one rlhfkit writes there."""
    rounds = name.startswith("round-") and name[len("round-") :].isdigit()  # iterative RLHF's round-<r>/ folders
    return (
        name in (*STAGES, *RUN_FOLDER_FILES, *COMPARE_FILES)
        or rounds
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def output_dir_problems(path: str | os.PathLike, key: str = "output_dir") -> list[str]:
    """Problems of a run folder: :func:`~rlhfkit.core.checks.folder_problems`, and it must be empty or hold only what
    rlhfkit writes in a run folder (:func:`is_run_entry`)."""
    return folder_problems(path, key, owned=is_run_entry)


# ----------------------------------------------------------------------------------------------- whole runs
def _defaults(cls: type, given: Any) -> dict[str, Any]:
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**values, **(given if isinstance(given, dict) else {})}


def pipeline_source_problems(raw: dict[str, Any]) -> list[str]:
    """The data sources, model and output folder of a raw pipeline config (values of the wrong type are left to
    :func:`~rlhfkit.pipeline.config.load_config`'s own messages)."""
    data = _defaults(DataSources, raw.get("data"))
    split = data["split"] if isinstance(data["split"], str) else "train"
    problems = []
    for name, columns, stage in (("sft", SFT_COLUMNS, "the SFT stage"), ("prompts", PROMPT_COLUMNS, "the RL stage")):
        if isinstance(data[name], str):
            problems += data_problems(data[name], f"data.{name}", columns, stage, split)
    options = data["preference_options"] if isinstance(data["preference_options"], dict) else None
    prefs = _defaults(PreferencesArguments, raw.get("preferences"))
    if prefs["source"] in ("comparisons", "judge"):  # the SFT model's answers, labelled: data.preferences not read
        problems += _votes_problems(prefs, split) + _judge_problems(prefs)
    elif isinstance(data["preferences"], str) and isinstance(data["preference_format"], str):
        problems += preference_problems(
            data["preferences"],
            "data.preferences",
            data["preference_format"],
            split,
            options,
            "data.preference_options",
        )
        if isinstance(raw.get("reward"), dict) and raw["reward"].get("soft_labels") is True:
            problems += soft_label_problems(
                data["preferences"], "data.preferences", data["preference_format"], split, options
            )
    model = _defaults(ModelArguments, raw.get("model"))
    if isinstance(model["model_name_or_path"], str):
        revision = model["model_revision"] if isinstance(model["model_revision"], str) else None
        problems += model_problems(model["model_name_or_path"], "model.model_name_or_path", revision=revision)
    if isinstance(raw.get("output_dir"), str) and raw["output_dir"].strip():
        problems += output_dir_problems(raw["output_dir"], "output_dir")
    return problems


def _votes_problems(prefs: dict[str, Any], split: str) -> list[str]:
    """``labels: people``: the votes file, when it exists, is a votes file (it may not exist yet: the stage then
    samples the comparisons to label and stops)."""
    votes = prefs["votes"]
    if prefs["labels"] != "people" or not isinstance(votes, str) or not Path(votes).expanduser().exists():
        return []
    columns = (("item_id", "labeler", "mode", "responses"),)  # rlhfkit.data.votelog.is_vote_log
    return data_problems(
        votes, "preferences.votes", columns, "labels: people (a votes file from `rlhfkit label`)", split
    )


def _judge_problems(prefs: dict[str, Any]) -> list[str]:
    """``source: judge``: the judge model's folder or hub id, and the constitution file."""
    if prefs["source"] != "judge" or not isinstance(prefs["judge"], str):
        return []
    problems = model_problems(prefs["judge"], "preferences.judge")
    if prefs["constitution"] is None or isinstance(prefs["constitution"], str):
        try:
            principles = load_constitution(prefs["constitution"])
        except ConfigError as e:
            return problems + [f"preferences.{p}" for p in e.problems]
        per_pair = prefs.get("principles_per_pair")
        if isinstance(per_pair, int) and per_pair > len(principles):
            problems.append(
                f"preferences.principles_per_pair={per_pair} is more than the constitution's {len(principles)} "
                f"principles; lower it to at most {len(principles)} or add principles"
            )
    return problems


def check_pipeline(
    source: str | os.PathLike | dict[str, Any], overrides: dict[str, Any] | None = None, *, sources: bool = True
) -> PipelineConfig:
    """Check a whole pipeline run before it starts: every value (:func:`~rlhfkit.pipeline.config.load_config`) and,
    with ``sources``, every data source, the model and the output folder. Returns the config; raises one
    :class:`ConfigError` listing every problem (one line each). Creates nothing."""
    raw = read_config(source, overrides)
    problems: list[str] = []
    cfg = None
    try:
        cfg = load_config(raw)
    except ConfigError as e:
        problems += e.problems
    if sources:
        problems += pipeline_source_problems(raw)
    raise_problems(problems)
    return cfg


def check_preference_file(source: str, out: str | None = None) -> None:
    """``rlhfkit data convert`` / ``data agreement``: the input exists and decodes (its first rows), and ``--out``
    is a file that can be written (never an existing folder). Raises one ConfigError listing every problem."""
    problems = data_problems(source, "INPUT", (), "the conversion")
    if out is not None:
        problems += output_file_problems(out, "--out")
    raise_problems(problems)


def check_plan_config(path: str | os.PathLike, model: str | None = None) -> None:
    """``rlhfkit plan --config``: the config's values, checked as ``rlhfkit run`` (a pipeline config: one with a
    ``model:`` section) or the recipes (a ``configs/<model>/<stage>.yaml``) check them; data, model folders and the
    output folder are not needed to plan memory and are not checked."""
    raw = read_yaml(path)
    if isinstance(raw.get("model"), dict):
        check_pipeline(raw, {"model.model_name_or_path": model} if model else None, sources=False)
        return
    trainer = raw.get("stage", Path(path).stem)
    if trainer not in TRAINER_CONFIGS:
        return  # the planner names the stage it needs
    problems = []
    for cls in (ModelArguments, DataArguments, TRAINER_CONFIGS[trainer], MonitorConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        problems += check_values(cls, {k: v for k, v in raw.items() if k in names})[1]
    raise_problems(problems)


def _find(parsed: Sequence[Any], cls: type) -> Any:
    return next((p for p in parsed if isinstance(p, cls)), None)


def check_recipe(trainer: str, parsed: Sequence[Any]) -> None:
    """Check a recipe's data, models and output folder before it starts (its values were checked by
    :func:`rlhfkit.core.arguments.parse_recipe`); raises one :class:`ConfigError` listing every problem."""
    model, data, training = _find(parsed, ModelArguments), _find(parsed, DataArguments), parsed[-1]
    remote = bool(getattr(training, "trust_remote_code", False))
    problems = []
    if model is not None:
        problems += model_problems(
            model.model_name_or_path, "model_name_or_path", revision=model.model_revision, trust_remote_code=remote
        )
    if data is not None:
        if trainer == "sft":
            problems += data_problems(data.dataset, "dataset", SFT_COLUMNS, "SFT", data.dataset_split)
        elif trainer in ("reward", "dpo"):  # DPO trains on the preference pairs
            problems += preference_problems(data.dataset, "dataset", data.dataset_format, data.dataset_split)
        else:
            problems += data_problems(data.dataset, "dataset", PROMPT_COLUMNS, trainer.upper(), data.dataset_split)
    for args in parsed:
        if isinstance(getattr(args, "reward_model_path", None), str):
            problems += model_problems(
                args.reward_model_path, "reward_model_path", reward=True, trust_remote_code=remote
            )
    problems += folder_problems(training.output_dir, "output_dir")
    raise_problems(problems)


def run_recipe(main: Callable[..., Any], trainer: str, dataclass_types: tuple, argv: list[str] | None = None) -> int:
    """A recipe's entry point: parse (:func:`rlhfkit.core.arguments.parse_recipe`), check (:func:`check_recipe`) and
    run
    ``main(*parsed)`` through the one error path: a user error prints ``error:`` lines and returns 2 (``--debug``:
    the traceback). Returns the exit code."""
    argv, debug = pop_debug(list(sys.argv[1:] if argv is None else argv))

    def go() -> None:
        parsed = parse_recipe(trainer, dataclass_types, argv)
        check_recipe(trainer, parsed)
        main(*parsed)

    return run_guarded(go, debug)


__all__ = [
    "check_pipeline",
    "check_plan_config",
    "check_preference_file",
    "check_recipe",
    "data_problems",
    "model_problems",
    "output_dir_problems",
    "output_file_problems",
    "preference_problems",
    "run_recipe",
]
